"""How a run of a real TDX module binary can end other than with SEAMRET.

Importable without the emulator packages, so callers can catch these without pulling them in.
"""

from __future__ import annotations

PIP_HINT = "pip install 'tdxseam[real]'"


class RealFirmwareError(RuntimeError):
    """The emulated CPU could not carry a SEAMCALL into Intel's code and back."""


class MissingPlatformValue(RealFirmwareError):
    """The module asked the CPU something the platform model has no answer for."""

    def __init__(self, offset: int, instruction: str, what: str) -> None:
        super().__init__(f"platform model has no {what} (module code +{offset:#x}: {instruction})")
        self.offset, self.instruction, self.what = offset, instruction, what


class BudgetExceeded(RealFirmwareError):
    """The module ran past the instruction budget of one SEAMCALL (a runaway, or a loop we feed)."""

    def __init__(self, leaf: str, budget: int, offset: int) -> None:
        super().__init__(f"{leaf} ran past its budget of {budget:,} instructions "
                         f"(still running at module code +{offset:#x})")
        self.leaf, self.budget, self.offset = leaf, budget, offset


class ModuleStopped(RealFirmwareError):
    """The module stopped inside a SEAMCALL (ud2, hlt, a fault into its fatal path).

    On hardware that SEAMCALL never returns: the LP stays in SEAM mode. `release` is what the
    binary is, `leaf` the SEAMCALL, `offset` where in its code it stopped, `how` the instruction
    or exception.
    """

    def __init__(self, release: str, leaf: str, offset: int, how: str) -> None:
        super().__init__(f"TDX module {release} stopped in {leaf} at code offset {offset:#x} ({how}); "
                         "the CPU stays in SEAM mode")
        self.release, self.leaf, self.offset, self.how = release, leaf, offset, how


class EngineUnavailable(ImportError):
    """unicorn or capstone is not installed."""

    def __init__(self, missing: str) -> None:
        super().__init__(f"the real-firmware engine needs {missing}: {PIP_HINT}")
        self.missing = missing
