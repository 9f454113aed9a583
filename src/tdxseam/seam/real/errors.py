"""How a run of a real TDX module binary can end other than with SEAMRET.

Importable without the emulator packages, so callers can catch these without pulling them in.
"""

from __future__ import annotations

from tdxseam.seam.stopped import ModuleStopped

__all__ = ["BudgetExceeded", "EngineUnavailable", "MissingPlatformValue", "ModuleStopped",
           "RealFirmwareError", "PIP_HINT"]

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


class EngineUnavailable(ImportError):
    """unicorn or capstone is not installed."""

    def __init__(self, missing: str) -> None:
        super().__init__(f"the real-firmware engine needs {missing}: {PIP_HINT}")
        self.missing = missing
