"""Every status a SEAMCALL can return, with its name, and a decoder for any 64-bit value.

Two families share RAX:
- TDX module statuses (`api_error_code_t`): class in bits 47:40, details L1 in 39:32, operand id
  or details L2 in 31:0, non_recoverable in bit 62, error in bit 63 (spec-firmware.md §13).
- P-SEAMLDR statuses: bit 63 set, bits 62:32 zero, the code in the low bits (spec-firmware.md §3).
- Software values the kernel makes up for SEAMCALL faults: class 0xFF ("TDX_SW_ERROR"), never
  returned by firmware (spec-linux.md §1.3).

The enums name the codes tdxseam's own code uses; `status_table` holds every published code, and
`decode_status` names any value from it. `seamcall_errno` is the kernel's status-to-errno rule.
"""

from __future__ import annotations

import errno as _errno
from enum import IntEnum

from tdxseam.formats.record import record
from tdxseam.formats.status_table import (
    KERNEL_NAMES,
    KERNEL_SW_STATUSES,
    OPERAND_IDS,
    STATUS_CLASSES,
    TDX_MODULE_STATUSES,
)

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
    TDX_INCORRECT_CPUID_VALUE = 0xC000_0900_0000_0000  # RCX = the leaf (and subleaf << 32)
    TDX_INCORRECT_MSR_VALUE = 0xC000_0921_0000_0000  # low 32 bits: the MSR
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

# Class and detail L1 (bits 47:32) identify a module status; the top bits only qualify it.
_CODE_MASK = 0x0000_FFFF_0000_0000
_BY_CODE: dict[int, list[tuple[str, str]]] = {}
for _name, _value, _sources in TDX_MODULE_STATUSES:
    _BY_CODE.setdefault(_value & _CODE_MASK, []).append((_name, _sources))
_SW_BY_VALUE = {v: n for n, v, _ in KERNEL_SW_STATUSES}
_KERNEL_BY_CODE = {v & _CODE_MASK: n for v, n in KERNEL_NAMES.items()}


@record(frozen=True)
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
    known: bool = True  # the name comes from a published table, not made up from the bits
    aliases: tuple[str, ...] = ()  # other published names of the same code
    sources: str = ""  # which tables define it ("1.5.01 1.5 2.0", "kernel", "P-SEAMLDR")

    @property
    def class_name(self) -> str:
        if self.family == "seamldr":
            return "P-SEAMLDR"
        return STATUS_CLASSES.get(self.status_class, "unknown class")

    @property
    def operand(self) -> str | None:
        """The operand a module status blames, when its low bits hold an operand id."""
        if self.family != "tdx" or not self.error or self.detail_l2 > 0xFFFF:
            return None
        if self.detail_l2 == 0 and self.status_class != 0x01:
            return None
        return OPERAND_IDS.get(self.detail_l2)

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
        return DecodedStatus(0, "SUCCESS", "success", False, False, False, 0, 0, 0,
                             aliases=("TDX_SUCCESS", "PSEAMLDR_SUCCESS"), sources="1.5.01 1.5 2.0")
    if is_seamldr_status(value):
        try:
            name, known = SeamldrStatus(value).name, True
        except ValueError:
            name, known = f"PSEAMLDR_UNKNOWN_0x{value & 0xFFFF_FFFF:x}", False
        return DecodedStatus(value, name, "seamldr", True, False, False, 0, 0, l2, known=known,
                             sources="P-SEAMLDR" if known else "")
    if cls == 0xFF:
        name = _SW_BY_VALUE.get(value)
        return DecodedStatus(value, name or f"TDX_SW_ERROR_0x{l2:x}", "software", err, nonrec, fatal,
                             cls, l1, l2, known=name is not None, sources="kernel" if name else "")
    rows = _BY_CODE.get(value & _CODE_MASK)
    if rows:
        names = [n for n, _ in rows]
        kernel = _KERNEL_BY_CODE.get(value & _CODE_MASK)
        if kernel:
            names.insert(0, kernel)
        sources = " ".join(dict.fromkeys(" ".join(src for _, src in rows).split()))
        return DecodedStatus(value, names[0], "tdx", err, nonrec, fatal, cls, l1, l2,
                             aliases=tuple(names[1:]), sources=sources)
    family = "tdx" if err else "unknown"
    name = f"TDX_UNKNOWN_CLASS_0x{cls:02x}_0x{l1:02x}" if err else f"WARNING_0x{value:016x}"
    return DecodedStatus(value, name, family, err, nonrec, fatal, cls, l1, l2, known=False)


def seamcall_errno(sret: int) -> int:
    """The errno the kernel makes of a SEAMCALL's final status (`sc_retry_prerr`, spec-linux §2):
    0 for success, -ENODEV / -EOPNOTSUPP / -EACCES for the three ways the instruction itself can
    fail, -EIO for every status the firmware returned (the only ones it prints)."""
    if sret == 0:
        return 0
    if sret == TdxStatus.TDX_SEAMCALL_VMFAILINVALID:
        return -_errno.ENODEV
    if sret == TdxStatus.TDX_SEAMCALL_GP:
        return -_errno.EOPNOTSUPP
    if sret == TdxStatus.TDX_SEAMCALL_UD:
        return -_errno.EACCES
    return -_errno.EIO
