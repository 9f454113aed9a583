"""Exit codes of the `tdxseam` command, one per outcome (documented in README.md)."""

from __future__ import annotations

OK = 0
FAILED = 1  # the command ran and found a failure (a rejected file, a failed update, a violation)
USAGE = 2  # bad arguments (typer/click also uses 2)
BAD_INPUT = 3  # an input file or directory is unreadable or malformed
DEADLOCK = 4  # an emulated run ended in a deadlock
INTERRUPTED = 130


class CliError(Exception):
    """One clear line for the user, and the exit code that goes with it."""

    def __init__(self, message: str, code: int = FAILED) -> None:
        super().__init__(message)
        self.code = code
