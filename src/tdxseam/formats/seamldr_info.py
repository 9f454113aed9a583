"""`struct seamldr_info`: what SEAMLDR.INFO writes, 256 bytes, 256-aligned (spec-linux.md §4.1).

Field order is the kernel's: minor_version comes *before* major_version in memory. The u16 at
offset 22 is `reserved_0` to the P-SEAMLDR 1.5 source (always 0) and `update_version` to Linux.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from tdxseam.formats.errors import FormatError

SEAMLDR_INFO_SIZE = 256
SEAMLDR_INFO_ALIGN = 256

# version, attributes, vendor_id, build_date, build_num, minor, major, update, acm_x2apicid,
# num_remaining_updates, seam_info[128] (the SEAMEXTEND copy as Linux sees it), seam_ready,
# seam_debug, p_seam_ready, reserved[93]
_LAYOUT = struct.Struct("<IIIIHHHHII128sBBB93s")
assert _LAYOUT.size == SEAMLDR_INFO_SIZE

SEAMLDR_INFO_ATTR_DEBUG = 1 << 31


@dataclass
class SeamldrInfo:
    version: int = 0
    attributes: int = 0
    vendor_id: int = 0x8086
    build_date: int = 0
    build_num: int = 0
    minor_version: int = 0
    major_version: int = 0
    update_version: int = 0
    acm_x2apicid: int = 0
    num_remaining_updates: int = 0
    seam_info: bytes = field(default=bytes(128))
    seam_ready: int = 0
    seam_debug: int = 0
    p_seam_ready: int = 0
    reserved: bytes = field(default=bytes(93))

    def to_bytes(self) -> bytes:
        return _LAYOUT.pack(
            self.version, self.attributes, self.vendor_id, self.build_date, self.build_num,
            self.minor_version, self.major_version, self.update_version, self.acm_x2apicid,
            self.num_remaining_updates, self.seam_info, self.seam_ready, self.seam_debug,
            self.p_seam_ready, self.reserved,
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> SeamldrInfo:
        if len(data) != SEAMLDR_INFO_SIZE:
            raise FormatError("seamldr_info", f"is {len(data)} bytes, expected {SEAMLDR_INFO_SIZE}", code="size")
        return cls(*_LAYOUT.unpack(data))

    @property
    def version_str(self) -> str:
        """The kernel's `seamldr_version` text, TDX_VERSION_FMT "%u.%u.%02u"."""
        return f"{self.major_version}.{self.minor_version}.{self.update_version:02d}"
