"""What reaches the terminal: escaped text, and one JSON document per `--json` run.

Strings from files and hosts (mapping keys, file names, sysfs text, kernel errors) may hold escape
sequences: a mapping key can paint `FAKE: all checks passed` in red, move the cursor, or retitle
the terminal. `escape` makes every control character visible (`\\x1b`), keeping newlines and
tabs; `install` puts it between every command and stdout/stderr, so no print anywhere can let one
through. Progress lines that need `\\r` write to `raw(stream)`, with text they build themselves.
"""

from __future__ import annotations

import json
import re
import sys

TYPE_CHECKING = False  # typing costs start-up; annotations are strings (PEP 563)
if TYPE_CHECKING:
    from typing import Any, TextIO

# C0 controls but \t and \n, DEL, C1 controls, bidirectional overrides, lone surrogates
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]")


def _hex(m: re.Match[str]) -> str:
    o = ord(m.group())
    return f"\\x{o:02x}" if o < 0x100 else f"\\u{o:04x}"


def escape(text: str) -> str:
    """`text` with every character a terminal would act on shown as an escape instead."""
    return _UNSAFE.sub(_hex, text)


class EscapingStream:
    """A text stream that escapes everything written to it; counts what it passed on."""

    def __init__(self, stream: TextIO) -> None:
        self.raw = stream
        self.written = 0

    def write(self, text: str) -> int:
        self.written += len(text)
        return self.raw.write(escape(text))

    def writelines(self, lines) -> None:  # noqa: ANN001
        for line in lines:
            self.write(line)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.raw, name)


def raw(stream: TextIO) -> TextIO:
    """The terminal under an EscapingStream, for control sequences tdxseam writes itself."""
    return getattr(stream, "raw", stream)


def install() -> tuple[TextIO, TextIO]:
    """Escape stdout and stderr from here on; returns the streams to put back."""
    saved = (sys.stdout, sys.stderr)
    if not isinstance(sys.stdout, EscapingStream):
        sys.stdout = EscapingStream(sys.stdout)  # type: ignore[assignment]
    if not isinstance(sys.stderr, EscapingStream):
        sys.stderr = EscapingStream(sys.stderr)  # type: ignore[assignment]
    return saved


def stdout_used() -> bool:
    return getattr(sys.stdout, "written", 0) > 0


def json_error(message: str, code: int, **extra: Any) -> None:
    """The one JSON document of a `--json` run that ended in an error (unless one was printed)."""
    if stdout_used():
        return
    print(json.dumps({"ok": False, "error": message, "exit": code, **extra}, sort_keys=True), flush=True)


def wants_json(argv: list[str]) -> bool:
    """`--json` among the options (not after `--`, where it would be an argument)."""
    for a in argv:
        if a == "--":
            return False
        if a == "--json":
            return True
    return False
