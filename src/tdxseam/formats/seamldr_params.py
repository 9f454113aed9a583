"""`seamldr_params`: the 4 KiB page whose PA goes in RCX of SEAMLDR.INSTALL (spec-linux.md §4.2)."""

from __future__ import annotations

import struct

from tdxseam.formats.errors import FormatError
from tdxseam.formats.record import field, record

SEAMLDR_PARAMS_SIZE = 4096
SEAMLDR_MAX_NR_MODULE_PAGES = 496
SEAMLDR_MAX_NR_SIG_PAGES = 1
SEAMLDR_SCENARIO_LOAD = 0
SEAMLDR_SCENARIO_UPDATE = 1

_HEAD = struct.Struct("<IIQ104sQ")  # version, scenario, sigstruct_pa, reserved, module_nr_pages
assert _HEAD.size == 128
_PAGES = struct.Struct(f"<{SEAMLDR_MAX_NR_MODULE_PAGES}Q")
assert _HEAD.size + _PAGES.size == SEAMLDR_PARAMS_SIZE


@record
class SeamldrParams:
    version: int = 0
    scenario: int = SEAMLDR_SCENARIO_UPDATE
    sigstruct_pa: int = 0
    reserved: bytes = field(default=bytes(104))
    module_nr_pages: int = 0
    module_pages_pa: list[int] = field(default_factory=list)

    def to_bytes(self) -> bytes:
        pages = list(self.module_pages_pa) + [0] * (SEAMLDR_MAX_NR_MODULE_PAGES - len(self.module_pages_pa))
        return _HEAD.pack(self.version, self.scenario, self.sigstruct_pa, self.reserved,
                          self.module_nr_pages) + _PAGES.pack(*pages)

    @classmethod
    def from_bytes(cls, data: bytes) -> SeamldrParams:
        if len(data) != SEAMLDR_PARAMS_SIZE:
            raise FormatError("seamldr_params", f"is {len(data)} bytes, expected {SEAMLDR_PARAMS_SIZE}", code="size")
        version, scenario, sig_pa, reserved, nr = _HEAD.unpack_from(data)
        pages = list(_PAGES.unpack_from(data, _HEAD.size))
        return cls(version, scenario, sig_pa, reserved, nr, pages)
