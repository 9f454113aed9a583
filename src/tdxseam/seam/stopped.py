"""A TDX module that stops inside a SEAMCALL: the call never returns.

Intel's module has fatal paths (`ud2`, `hlt`, an exception into its fault handler) that end in no
SEAMRET: on hardware the LP stays in SEAM mode and the host's caller waits forever. Both the
Python model (seam.module) and the real-firmware engine (seam.real) raise this where the binary
would stop, so a run can say so plainly instead of inventing a status.
"""

from __future__ import annotations


class ModuleStopped(RuntimeError):
    """`release` stopped in `leaf` (at code `offset` when known) because of `how`."""

    def __init__(self, release: str, leaf: str, offset: int | None, how: str) -> None:
        where = f" at code offset {offset:#x}" if offset is not None else ""
        super().__init__(f"TDX module {release} stopped in {leaf}{where} ({how}); "
                         "the CPU stays in SEAM mode")
        self.release, self.leaf, self.offset, self.how = release, leaf, offset, how
