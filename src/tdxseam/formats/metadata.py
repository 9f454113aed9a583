"""TDX module metadata: TDH.SYS.RD field ids and TDX_FEATURES0 bits (spec-firmware.md §11-§12).

Field id layout (`md_field_id_t`): bits 23:0 field code; 33:32 element size; 61:56 class;
63 non-architectural. The module answers these; the kernel reads them.
"""

from __future__ import annotations

from enum import IntEnum


class MdField(IntEnum):
    """TDH.SYS.RD field ids."""

    VENDOR_ID = 0x0800000200000000
    BUILD_DATE = 0x8800000200000001
    BUILD_NUM = 0x8800000100000002
    MINOR_VERSION = 0x0800000100000003
    MAJOR_VERSION = 0x0800000100000004
    UPDATE_VERSION = 0x0800000100000005
    INTERNAL_VERSION = 0x0800000100000006
    MODULE_HV = 0x8900000100000000
    MIN_UPDATE_HV = 0x8900000100000001
    NO_DOWNGRADE = 0x8900000000000002
    NUM_HANDOFF_PAGES = 0x8900000100000003
    HANDOFF_DATA_VALID = 0x8900000000000004
    HANDOFF_DATA_HV = 0x8900000100000005
    HANDOFF_DATA_SIZE = 0x8900000200000006
    SYS_ATTRIBUTES = 0x0A00000200000000
    NUM_TDX_FEATURES = 0x0A00000000000001
    TDX_FEATURES0 = 0x0A00000300000008


# TDX_FEATURES0 bits the update path looks at.
TDX_FEATURES0_TD_PRESERVING = 1 << 1  # Linux offers runtime update only when set
TDX_FEATURES0_UPDATE_COMPAT = 1 << 47  # newer modules: SYS.SHUTDOWN knows AVOID_COMPAT_SENSITIVE
# TDH.SYS.SHUTDOWN RCX bit 16 (newer modules only): refuse while a TD is update-sensitive.
TDX_SYS_SHUTDOWN_AVOID_COMPAT_SENSITIVE = 1 << 16
