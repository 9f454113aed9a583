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


# Global metadata fields the Linux kernel reads with TDH.SYS.RD, by the struct member it fills
# (arch/x86/virt/vmx/tdx/tdx_global_metadata.c, and the runtime-update series for the handoff
# version). Arrays: the id of element 0; element i is id + i (cpuid_config_values: + 2i + j).
KERNEL_READ_FIELDS: tuple[tuple[int, str], ...] = (
    (0x0A00000300000008, "features.tdx_features0"),
    (0x0800000100000003, "version.minor_version"),
    (0x0800000100000004, "version.major_version"),
    (0x0800000100000005, "version.update_version"),
    (0x9000000100000000, "cmr.num_cmrs"),
    (0x9000000300000080, "cmr.cmr_base[]"),
    (0x9000000300000100, "cmr.cmr_size[]"),
    (0x9100000100000008, "tdmr.max_tdmrs"),
    (0x9100000100000009, "tdmr.max_reserved_per_tdmr"),
    (0x9100000100000010, "tdmr.pamt_4k_entry_size"),
    (0x9100000100000011, "tdmr.pamt_2m_entry_size"),
    (0x9100000100000012, "tdmr.pamt_1g_entry_size"),
    (0x9800000100000000, "td_ctrl.tdr_base_size"),
    (0x9800000100000100, "td_ctrl.tdcs_base_size"),
    (0x9800000100000200, "td_ctrl.tdvps_base_size"),
    (0x1900000300000000, "td_conf.attributes_fixed0"),
    (0x1900000300000001, "td_conf.attributes_fixed1"),
    (0x1900000300000002, "td_conf.xfam_fixed0"),
    (0x1900000300000003, "td_conf.xfam_fixed1"),
    (0x9900000100000004, "td_conf.num_cpuid_config"),
    (0x9900000100000008, "td_conf.max_vcpus_per_td"),
    (0x9900000300000400, "td_conf.cpuid_config_leaves[]"),
    (0x9900000300000500, "td_conf.cpuid_config_values[][]"),
    (0x8900000100000000, "handoff.module_hv"),
)

ELEMENT_SIZES = {0: 1, 1: 2, 2: 4, 3: 8}  # element size code (bits 33:32) -> bytes


def decode_field_id(field_id: int) -> dict[str, object]:
    """The parts of an `md_field_id_t` and the field's name where tdxseam knows it."""
    field_id &= (1 << 64) - 1
    code = field_id & 0xFF_FFFF
    size_code = (field_id >> 32) & 3
    name = None
    for fid, member in KERNEL_READ_FIELDS:
        i = field_id - fid
        if member.endswith("[][]") and 0 <= i < 0x100:
            name = f"{member[:-4]}[{i // 2}][{i % 2}]"
        elif member.endswith("[]") and 0 <= i < 0x80:
            name = f"{member[:-2]}[{i}]"
        elif i == 0:
            name = member
    if name is None:
        try:
            name = MdField(field_id).name
        except ValueError:
            name = None
    return {
        "field_id": f"0x{field_id:016x}",
        "name": name,
        "class": (field_id >> 56) & 0x3F,
        "context": (field_id >> 52) & 0x7,
        "element_size": ELEMENT_SIZES[size_code],
        "field_code": code,
        "last_element_in_field": (field_id >> 34) & 0xF,
        "last_field_in_sequence": (field_id >> 38) & 0x1FF,
        "write_mask_valid": bool((field_id >> 51) & 1),
        "non_arch": bool(field_id >> 63),
    }
