"""Exit codes of the `tdxseam` command, one per outcome (documented in README.md; the operator
tool's codes, 10 and up, in docs/operator-tool.md)."""

from __future__ import annotations

OK = 0
FAILED = 1  # the command ran and found a failure (a rejected file, a failed check, a violation)
USAGE = 2  # bad arguments (typer/click also uses 2)
BAD_INPUT = 3  # an input file or directory is unreadable or malformed
DEADLOCK = 4  # an emulated run ended in a deadlock

# operator tool: plan and update outcomes
UP_TO_DATE = 10  # nothing to install: the running module is the newest acceptable release
REFUSED = 11  # the requested release (or every newer one) fails a check; nothing written
BLOCKED = 12  # the host cannot take an update now (no runtime update, 0 updates left, CPUs offline, busy)
UPLOAD_FAILED = 13  # the kernel reported an error or a write failed; the old module still runs
MODULE_LOST = 14  # after the update `version` reads ENXIO: no TDX module, TDs lost, reboot needed
TIMEOUT = 15  # `status` did not return to idle in time; the update may still be running
VERSION_MISMATCH = 16  # the upload succeeded but `version` is not the release installed
HOST_UNREADABLE = 17  # not a TDX host, or its sysfs files cannot be read (permissions: run as root)
DECLINED = 18  # the operator did not confirm; nothing written

INTERNAL = 70  # a bug in tdxseam (EX_SOFTWARE); set TDXSEAM_DEBUG=1 for the traceback
INTERRUPTED = 130


def check_range(option: str, value: int, lo: int, hi: int, why: str = "") -> None:
    """A count outside [lo, hi] is a usage error naming the option and its bounds."""
    if not lo <= value <= hi:
        raise CliError(f"{option} must be between {lo} and {hi}{why}, not {value}", USAGE)


def check_seconds(option: str, value: float, *, zero_ok: bool = False, hi: float = 86400.0) -> None:
    """A duration must be a finite number of seconds (NaN compares false with everything, so
    `value <= 0` alone lets it through and a wait on it never ends)."""
    import math

    if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok) or value > hi:
        raise CliError(f"{option} must be a number of seconds {'from 0' if zero_ok else 'above 0'} up to "
                       f"{hi:g}, not {value}", USAGE)


class CliError(Exception):
    """One clear line for the user, and the exit code that goes with it."""

    def __init__(self, message: str, code: int = FAILED) -> None:
        super().__init__(message)
        self.code = code
