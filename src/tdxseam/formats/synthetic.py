"""The identity header at the start of a synthetic test module.

Real modules are ELF files whose version, build and features live in code and data; the
emulated TDX module and the operator tool need the same facts from a synthetic module without
an ELF parser. So `testsign.make_module` starts its module bytes with this fixed 64-byte header
(all little-endian), followed by seeded filler:

| Off | Size | Field |
|---|---|---|
| 0 | 16 | magic `TDXSEAM-SYNTHMOD` |
| 16 | 2 | header_version (1) |
| 18 | 2 | major |
| 20 | 2 | minor |
| 22 | 2 | update |
| 24 | 2 | build_num |
| 26 | 4 | build_date (decimal yyyymmdd, as TDH.SYS.RD reports it) |
| 30 | 8 | tdx_features0 |
| 38 | 2 | module_hv |
| 40 | 2 | min_update_hv |
| 42 | 1 | no_downgrade |
| 43 | 1 | style (15 = 1.5-style sigstruct, 20 = 2.0-style) |
| 44 | 2 | num_handoff_pages (pages - 1, as in the sigstruct) |
| 46 | 18 | reserved, zero |
"""

from __future__ import annotations

import struct

from tdxseam.formats.record import record
from tdxseam.formats.version import ModuleVersion

SYNTH_MAGIC = b"TDXSEAM-SYNTHMOD"
SYNTH_HEADER_VERSION = 1
SYNTH_HEADER_SIZE = 64
_HEADER = struct.Struct("<16sHHHHHIQHHBBH18s")
assert _HEADER.size == SYNTH_HEADER_SIZE


@record(frozen=True)
class SyntheticHeader:
    version: ModuleVersion
    build_num: int
    build_date: int
    tdx_features0: int
    module_hv: int
    min_update_hv: int
    no_downgrade: int
    style: int
    num_handoff_pages: int

    def to_bytes(self) -> bytes:
        v = self.version
        return _HEADER.pack(
            SYNTH_MAGIC, SYNTH_HEADER_VERSION, v.major, v.minor, v.update, self.build_num,
            self.build_date, self.tdx_features0, self.module_hv, self.min_update_hv,
            self.no_downgrade, self.style, self.num_handoff_pages, bytes(18),
        )

    @classmethod
    def find(cls, module: bytes) -> SyntheticHeader | None:
        """The header if `module` starts with one (any other bytes: None, never an error)."""
        if len(module) < SYNTH_HEADER_SIZE or bytes(module[:16]) != SYNTH_MAGIC:
            return None
        (_m, hver, major, minor, update, build, date, feat, hv, min_hv, nodg, style, handoff,
         _r) = _HEADER.unpack_from(bytes(module[:SYNTH_HEADER_SIZE]))
        if hver != SYNTH_HEADER_VERSION:
            return None
        return cls(ModuleVersion(major, minor, update), build, date, feat, hv, min_hv, nodg,
                   style, handoff)
