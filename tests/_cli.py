"""Running the command line in-process, as the tests of its output and exit codes do."""

from __future__ import annotations

import pytest

from tdxseam.cli import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    """`tdxseam ARGV...` in this process: (exit code, stdout, stderr)."""
    with pytest.raises(SystemExit) as ei:
        main(list(argv))
    out, err = capsys.readouterr()
    code = ei.value.code
    return (code if isinstance(code, int) else 1), out, err
