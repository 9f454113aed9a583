"""Where things sit inside SEAMRR: the regions INSTALL computes, SYS_INFO_TABLE, the handoff header.

After spec-firmware.md §7.7 (`initialize_memory_constants`), §9.5 and §9.6. The layout depends on
the platform (SEAMRR, number of addressable LPs) and on the sigstruct's page counts. The data
region, and so the handoff header at its start, is placed right after SYS_INFO_TABLE and the per-LP
SEAM VMCS array: its physical address depends only on platform constants, which is why an old
module's handoff data is where the new module looks for it.

Only what the model uses is computed exactly; the size of the SEAM page tables (which only feeds the
ENOMEM check) is an estimate (inferred: one 4 KiB page table per 2 MiB, one directory per 1 GiB,
one pointer table per 512 GiB of each region).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from tdxseam.formats.page import PAGE_SIZE
from tdxseam.formats.sigstruct import Sigstruct

CODE_REGION_SIZE = 2 << 20  # the module's code always goes in the last 2 MiB below the P-SEAMLDR
ASLR_BIT_MASK = 0x7FFC  # RDRAND bits used for the linear-address randomisation (<< 32)

# Linear bases of the module's regions, each ORed with the ASLR value (spec-firmware §7.7).
LINEAR_BASE_CODE = 0xFFFF_8000_0000_0000
LINEAR_BASE_STACK = 0xFFFF_8001_0000_0000
LINEAR_BASE_KEYHOLE = 0xFFFF_8002_0000_0000
LINEAR_BASE_DATA = 0xFFFF_8003_0000_0000
LINEAR_BASE_SYSINFO = 0xFFFF_8003_FFFF_0000
LINEAR_BASE_KEYEDIT = 0x0000_0001_0000_0000

# SYS_INFO_TABLE (first 4 KiB of SEAMRR) offsets (spec-firmware §9.6).
SYSINFO_SIZE = PAGE_SIZE
SYSINFO_MCHECK_SIZE = 2048
SYSINFO_TOT_NUM_LPS = 8  # u32, inside the MCHECK part
SYSINFO_TOT_NUM_SOCKETS = 12  # u32
SYSINFO_CMR_ARRAY = 128  # 32 x {u64 base, u64 size}: the convertible memory ranges MCHECK checked
SYSINFO_MAX_CMRS = 32
_SYSINFO_REGIONS = struct.Struct("<12Q")  # code, data, stack, keyhole, keyhole-edit base/size; stack/tls pages
SYSINFO_REGIONS_OFFSET = 2056
SYSINFO_MODULE_HV = 2152  # u16
SYSINFO_MIN_UPDATE_HV = 2154  # u16
SYSINFO_NO_DOWNGRADE = 2156  # u8
SYSINFO_NUM_HANDOFF_PAGES = 2158  # u16
_SYSINFO_HANDOFF = struct.Struct("<HHBxH")
assert SYSINFO_MODULE_HV + _SYSINFO_HANDOFF.size == 2160

# Handoff header: 8 bytes at the start of the data region (spec-firmware §9.6).
HANDOFF_HEADER = struct.Struct("<BBHI")  # valid, reserved, hv, size (payload bytes after the header)
HANDOFF_HEADER_SIZE = HANDOFF_HEADER.size


def _pow2_ceil(n: int) -> int:
    return 1 << max(n - 1, 0).bit_length()


def num_addressable_lps(ncpus: int, sockets: int) -> int:
    """C_NUM_ADDR_LP: LPs per socket rounded up to a power of two, times the sockets."""
    per_socket = -(-ncpus // max(sockets, 1))
    return _pow2_ceil(per_socket) * max(sockets, 1)


def page_tables_needed(size: int) -> int:
    """Paging-structure pages to map `size` bytes with 4 KiB pages (an estimate, see module doc)."""
    if size <= 0:
        return 0
    return -(-size // (2 << 20)) + -(-size // (1 << 30)) + -(-size // (512 << 30))


@dataclass(frozen=True)
class HandoffHeader:
    valid: int = 0
    hv: int = 0
    size: int = 0

    def to_bytes(self) -> bytes:
        return HANDOFF_HEADER.pack(self.valid, 0, self.hv, self.size)

    @classmethod
    def from_bytes(cls, data: bytes) -> HandoffHeader:
        valid, _res, hv, size = HANDOFF_HEADER.unpack(bytes(data[:HANDOFF_HEADER_SIZE]))
        return cls(valid, hv, size)


@dataclass(frozen=True)
class SysInfoHandoff:
    """The four sigstruct values the P-SEAMLDR copies into SYS_INFO_TABLE on success."""

    module_hv: int = 0
    min_update_hv: int = 0
    no_downgrade: int = 0
    num_handoff_pages: int = 0

    def to_bytes(self) -> bytes:
        return _SYSINFO_HANDOFF.pack(self.module_hv, self.min_update_hv, self.no_downgrade,
                                     self.num_handoff_pages)

    @classmethod
    def from_bytes(cls, data: bytes) -> SysInfoHandoff:
        return cls(*_SYSINFO_HANDOFF.unpack(bytes(data[:_SYSINFO_HANDOFF.size])))

    @classmethod
    def from_sigstruct(cls, sig: Sigstruct) -> SysInfoHandoff:
        return cls(sig.module_hv, sig.min_update_hv, sig.no_downgrade, sig.num_handoff_pages)


@dataclass(frozen=True)
class SeamLayout:
    """The memory constants of one install (physical addresses; linear bases for SYS_INFO_TABLE)."""

    seamrr_base: int
    module_physlimit: int  # = P-SEAMLDR range base
    num_addr_lps: int
    aslr: int
    td_preserving: bool
    vmcs_size: int
    data_pa: int
    local_data_size: int
    global_data_size: int
    handoff_size: int  # (num_handoff_pages + 1) pages, 0 if not TD-preserving
    data_size: int
    code_pa: int
    code_size: int  # num_module_pages x 4 KiB
    stack_pa: int
    data_stack_size: int
    stack_size: int
    keyhole_size: int
    keyedit_size: int
    paging_size: int
    min_required: int

    @property
    def sysinfo_pa(self) -> int:
        return self.seamrr_base

    @property
    def handoff_pa(self) -> int:
        """The handoff header; the payload follows it."""
        return self.data_pa

    @property
    def available(self) -> int:
        return self.module_physlimit - self.seamrr_base

    @property
    def fits(self) -> bool:
        return self.min_required <= self.available

    def sysinfo_regions(self, num_stack_pages: int, num_tls_pages: int) -> bytes:
        """SYS_INFO_TABLE bytes 2056..2151: region linear bases and sizes, stack and TLS pages."""
        a = self.aslr
        return _SYSINFO_REGIONS.pack(
            LINEAR_BASE_CODE | a, self.code_size,
            LINEAR_BASE_DATA | a, self.data_size,
            LINEAR_BASE_STACK | a, self.stack_size,
            LINEAR_BASE_KEYHOLE | a, self.keyhole_size,
            LINEAR_BASE_KEYEDIT | a, self.keyedit_size,
            num_stack_pages, num_tls_pages,
        )


def compute_layout(*, seamrr_base: int, module_physlimit: int, ncpus: int, sockets: int,
                   sig: Sigstruct, num_module_pages: int, aslr_rand: int) -> SeamLayout:
    """`initialize_memory_constants` without the entropy step (the caller draws `aslr_rand`)."""
    c = num_addressable_lps(ncpus, sockets)
    td_preserving = sig.major_svn != 0
    vmcs_size = PAGE_SIZE * c
    code_size = num_module_pages * PAGE_SIZE
    local = (sig.num_tls_pages + 1) * PAGE_SIZE
    global_ = (sig.num_global_data_pages + 1) * PAGE_SIZE
    handoff = (sig.num_handoff_pages + 1) * PAGE_SIZE if td_preserving else 0
    data_size = local * c + global_ + handoff
    data_pa = seamrr_base + PAGE_SIZE + vmcs_size
    data_stack = (sig.num_stack_pages + 1) * PAGE_SIZE
    stack_size = (data_stack + PAGE_SIZE) * c
    code_pa = module_physlimit - CODE_REGION_SIZE
    keyhole = (sig.num_keyhole_pages + 1) * PAGE_SIZE * c
    keyedit = -(-((keyhole // PAGE_SIZE) * 8) // PAGE_SIZE) * PAGE_SIZE
    paging = PAGE_SIZE * (
        page_tables_needed(PAGE_SIZE) + page_tables_needed(stack_size) + page_tables_needed(data_size)
        + page_tables_needed(keyhole) + page_tables_needed(keyedit) + page_tables_needed(code_size) + 1
    )
    min_required = PAGE_SIZE + vmcs_size + stack_size + data_size + paging + CODE_REGION_SIZE
    return SeamLayout(
        seamrr_base=seamrr_base, module_physlimit=module_physlimit, num_addr_lps=c,
        aslr=(aslr_rand & ASLR_BIT_MASK) << 32, td_preserving=td_preserving, vmcs_size=vmcs_size,
        data_pa=data_pa, local_data_size=local, global_data_size=global_, handoff_size=handoff,
        data_size=data_size, code_pa=code_pa, code_size=code_size, stack_pa=code_pa - stack_size,
        data_stack_size=data_stack, stack_size=stack_size, keyhole_size=keyhole,
        keyedit_size=keyedit, paging_size=paging, min_required=min_required,
    )


def handoff_capacity(num_handoff_pages: int) -> int:
    """Payload bytes the handoff area holds: (pages + 1) x 4 KiB minus the 8-byte header."""
    return (num_handoff_pages + 1) * PAGE_SIZE - HANDOFF_HEADER_SIZE
