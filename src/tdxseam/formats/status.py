"""Every status a SEAMCALL can return, with its name, and a decoder for any 64-bit value.

Two families share RAX:
- TDX module statuses (`api_error_code_t`): class in bits 47:40, details L1 in 39:32, operand id
  or details L2 in 31:0, non_recoverable in bit 62, error in bit 63 (spec-firmware.md §13).
- P-SEAMLDR statuses: bit 63 set, bits 62:32 zero, the code in the low bits (spec-firmware.md §3).
- Software values the kernel makes up for SEAMCALL faults: class 0xFF ("TDX_SW_ERROR"), never
  returned by firmware (spec-linux.md §1.3).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

TDX_ERROR = 1 << 63
TDX_NON_RECOVERABLE = 1 << 62
TDX_FATAL = 1 << 61
TDX_HOST_RECOVERABILITY_HINT = 1 << 60
TDX_SEAMCALL_STATUS_MASK = 0xFFFF_FFFF_0000_0000
TDX_SW_ERROR = TDX_ERROR | (0xFF << 40)


class TdxStatus(IntEnum):
    """TDX module completion statuses (operand/detail bits zero)."""

    TDX_SUCCESS = 0
    TDX_OPERAND_INVALID = 0xC000_0100_0000_0000
    TDX_OPERAND_BUSY = 0x8000_0200_0000_0000
    TDX_PREVIOUS_TLB_EPOCH_BUSY = 0x8000_0201_0000_0000
    TDX_SYS_BUSY = 0x8000_0202_0000_0000
    TDX_RND_NO_ENTROPY = 0x8000_0203_0000_0000
    TDX_SYS_INIT_NOT_PENDING = 0xC000_0500_0000_0000
    TDX_SYS_LP_INIT_NOT_DONE = 0xC000_0502_0000_0000
    TDX_SYS_LP_INIT_DONE = 0xC000_0503_0000_0000
    TDX_SYS_NOT_READY = 0xC000_0505_0000_0000
    TDX_SYS_SHUTDOWN = 0xC000_0506_0000_0000
    TDX_SYS_STATE_INCORRECT = 0xC000_0508_0000_0000
    TDX_SYS_INVALID_HANDOFF = 0xC000_0509_0000_0000
    TDX_SYS_INCOMPATIBLE_SIGSTRUCT = 0xC000_050A_0000_0000
    TDX_SYS_LP_INIT_NOT_PENDING = 0xC000_050B_0000_0000
    TDX_SYS_CONFIG_NOT_PENDING = 0xC000_050C_0000_0000
    TDX_INCOMPATIBLE_SEAM_CAPABILITIES = 0xC000_050D_0000_0000
    TDX_UPDATE_COMPAT_SENSITIVE = 0x8000_0512_0000_0000
    TDX_METADATA_FIELD_ID_INCORRECT = 0xC000_0C00_0000_0000
    # TD management leaves (tdx_error_codes_defs.h)
    TDX_PAGE_METADATA_INCORRECT = 0xC000_0300_0000_0000
    TDX_OP_STATE_INCORRECT = 0xC000_0608_0000_0000
    TDX_VCPU_STATE_INCORRECT = 0xC000_0700_0000_0000
    TDX_MAX_VCPUS_EXCEEDED = 0xC000_0705_0000_0000
    TDX_HKID_NOT_FREE = 0xC000_0820_0000_0000
    TDX_EPT_WALK_FAILED = 0xC000_0B00_0000_0000
    TDX_EPT_ENTRY_NOT_FREE = 0xC000_0B02_0000_0000
    # Kernel-made values for SEAMCALL faults (class 0xFF), never returned by firmware.
    TDX_SEAMCALL_VMFAILINVALID = 0x8000_FF00_FFFF_0000
    TDX_SEAMCALL_GP = 0x8000_FF00_0000_000D
    TDX_SEAMCALL_UD = 0x8000_FF00_0000_0006


class SeamldrStatus(IntEnum):
    """P-SEAMLDR statuses (`inc/pseamldr_api_defs.h`)."""

    PSEAMLDR_SUCCESS = 0
    EBADPARAM = 0x8000_0000_0000_0000
    EBADCALL = 0x8000_0000_0000_0003
    EBADHANDOFF = 0x8000_0000_0000_0004
    ECLEANUPREQ = 0x8000_0000_0000_0005
    EUNSUPPORTED = 0x8000_0000_0000_0006
    ENOMEM = 0x8000_0000_0001_0002
    EUNSPECERR = 0x8000_0000_0001_0003
    EUNSUPCPU = 0x8000_0000_0001_0004
    EBADSIG = 0x8000_0000_0002_0000
    EBADHASH = 0x8000_0000_0002_0001
    EINTERRUPT = 0x8000_0000_0003_0000
    ENOENTROPY = 0x8000_0000_0003_0001


# INSTALL's RDX on failure: can the old module be used again? (spec-firmware.md §1)
PSEAMLDR_RECOVERABLE_ERROR = 0
PSEAMLDR_UNRECOVERABLE_ERROR = 1

# Operand ids added to a TDX status's low 32 bits (spec-firmware.md §13).
OPERAND_RAX, OPERAND_RCX, OPERAND_RDX = 0, 1, 2
OPERAND_R8 = 8

_TDX_BY_CLASS: dict[int, TdxStatus] = {s.value & TDX_SEAMCALL_STATUS_MASK: s for s in TdxStatus if s}


@dataclass(frozen=True)
class DecodedStatus:
    """What a 64-bit status means, in the words a log reader needs."""

    value: int
    name: str
    family: str  # "success", "tdx", "seamldr", "software", "unknown"
    error: bool
    non_recoverable: bool
    fatal: bool
    status_class: int
    detail_l1: int
    detail_l2: int

    def __str__(self) -> str:
        if not self.error:
            return f"0x{self.value:016x} {self.name}"
        bits = [self.family]
        if self.non_recoverable:
            bits.append("non-recoverable")
        if self.fatal:
            bits.append("fatal")
        if self.family == "tdx" and self.detail_l2:
            bits.append(f"operand/detail 0x{self.detail_l2:x}")
        return f"0x{self.value:016x} {self.name} ({', '.join(bits)})"


def is_seamldr_status(value: int) -> bool:
    """P-SEAMLDR errors keep bits 62:32 clear; TDX module errors never do."""
    return bool(value & TDX_ERROR) and (value & 0x7FFF_FFFF_0000_0000) == 0


def status_name(value: int) -> str:
    return decode_status(value).name


def status_text(value: int) -> str:
    """`TDX_SYS_BUSY (0x8000020200000000)`: how a status is shown, the name first, the hex beside."""
    return f"{status_name(value)} (0x{value & ((1 << 64) - 1):016x})"


def decode_status(value: int) -> DecodedStatus:
    """Name any RAX value a SEAMCALL can return; unknown codes are named by their class."""
    value &= (1 << 64) - 1
    cls = (value >> 40) & 0xFF
    l1 = (value >> 32) & 0xFF
    l2 = value & 0xFFFF_FFFF
    err = bool(value & TDX_ERROR)
    nonrec = bool(value & TDX_NON_RECOVERABLE)
    fatal = bool(value & TDX_FATAL)
    if value == 0:
        return DecodedStatus(0, "SUCCESS", "success", False, False, False, 0, 0, 0)
    if is_seamldr_status(value):
        try:
            name = SeamldrStatus(value).name
        except ValueError:
            name = f"PSEAMLDR_UNKNOWN_0x{value & 0xFFFF_FFFF:x}"
        return DecodedStatus(value, name, "seamldr", True, False, False, 0, 0, l2)
    if (value & TDX_SEAMCALL_STATUS_MASK) == (TDX_SW_ERROR & TDX_SEAMCALL_STATUS_MASK) or cls == 0xFF:
        try:
            name = TdxStatus(value).name
        except ValueError:
            name = f"TDX_SW_ERROR_0x{l2:x}"
        return DecodedStatus(value, name, "software", err, nonrec, fatal, cls, l1, l2)
    known = _TDX_BY_CLASS.get(value & TDX_SEAMCALL_STATUS_MASK)
    if known is not None:
        return DecodedStatus(value, known.name, "tdx", err, nonrec, fatal, cls, l1, l2)
    family = "tdx" if err else "unknown"
    name = f"TDX_UNKNOWN_CLASS_0x{cls:02x}_0x{l1:02x}" if err else f"WARNING_0x{value:016x}"
    return DecodedStatus(value, name, family, err, nonrec, fatal, cls, l1, l2)
