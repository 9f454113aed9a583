"""SEAMEXTEND: the CPU register that records the loaded SEAM module's identity (136 bytes).

The P-SEAMLDR copies it in and out through MSR IA32_SEAMEXTEND; SEAMLDR.INFO returns a copy, and
TD quotes carry its first 128 bytes as TEE_TCB_INFO (spec-firmware.md §9.2, §14).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from tdxseam.formats.errors import FormatError

SEAMEXTEND_SIZE = 136
SEAMEXTEND_VALID_ALL = 0x1FF  # what a successful install writes to `valid`

_LAYOUT = struct.Struct("<Q16s48s48sQBBB5s")
assert _LAYOUT.size == SEAMEXTEND_SIZE


@dataclass
class SeamExtend:
    valid: int = 0
    tee_tcb_svn: bytes = field(default=bytes(16))
    mrseam: bytes = field(default=bytes(48))
    mrsigner: bytes = field(default=bytes(48))
    attributes: int = 0
    seam_ready: int = 0
    system_under_debug: int = 0
    p_seamldr_ready: int = 0
    reserved: bytes = field(default=bytes(5))

    def to_bytes(self) -> bytes:
        return _LAYOUT.pack(self.valid, self.tee_tcb_svn, self.mrseam, self.mrsigner,
                            self.attributes, self.seam_ready, self.system_under_debug,
                            self.p_seamldr_ready, self.reserved)

    @classmethod
    def from_bytes(cls, data: bytes) -> SeamExtend:
        if len(data) != SEAMEXTEND_SIZE:
            raise FormatError("SEAMEXTEND", f"is {len(data)} bytes, expected {SEAMEXTEND_SIZE}", code="size")
        return cls(*_LAYOUT.unpack(data))

    def copy(self) -> SeamExtend:
        return SeamExtend.from_bytes(self.to_bytes())

    @property
    def major_svn(self) -> int:
        return self.tee_tcb_svn[1]

    @property
    def minor_svn(self) -> int:
        return self.tee_tcb_svn[0]
