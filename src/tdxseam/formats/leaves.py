"""SEAMCALL leaf numbers (RAX on entry) and the bit that routes a call to the P-SEAMLDR."""

from __future__ import annotations

from enum import IntEnum

SEAMLDR_LEAF_BIT = 1 << 63  # RAX bit 63 selects the P-SEAMLDR instead of the TDX module
TDH_MR_EXTEND_CHUNK = 256  # TDH.MR.EXTEND measures 256 bytes of an added page per call
TDX_VERSION_SHIFT = 16  # TDX module leaves carry a version in RAX bits 23:16


class TdxLeaf(IntEnum):
    """Every TDX module SEAMCALL leaf (RAX bits 15:0), as `LEAF_SOURCES` lists them."""

    TDH_VP_ENTER = 0
    TDH_MNG_ADDCX = 1
    TDH_MEM_PAGE_ADD = 2
    TDH_MEM_SEPT_ADD = 3
    TDH_VP_ADDCX = 4
    TDH_MEM_PAGE_RELOCATE = 5
    TDH_MEM_PAGE_AUG = 6
    TDH_MEM_RANGE_BLOCK = 7
    TDH_MNG_KEY_CONFIG = 8
    TDH_MNG_CREATE = 9
    TDH_VP_CREATE = 10
    TDH_MNG_RD = 11
    TDH_MEM_RD = 12
    TDH_MNG_WR = 13
    TDH_MEM_WR = 14
    TDH_MEM_PAGE_DEMOTE = 15
    TDH_MR_EXTEND = 16
    TDH_MR_FINALIZE = 17
    TDH_VP_FLUSH = 18
    TDH_MNG_VPFLUSHDONE = 19
    TDH_MNG_KEY_FREEID = 20
    TDH_MNG_INIT = 21
    TDH_VP_INIT = 22
    TDH_MEM_PAGE_PROMOTE = 23
    TDH_PHYMEM_PAGE_RDMD = 24
    TDH_MEM_SEPT_RD = 25
    TDH_VP_RD = 26
    TDH_MNG_KEY_RECLAIMID = 27
    TDH_PHYMEM_PAGE_RECLAIM = 28
    TDH_MEM_PAGE_REMOVE = 29
    TDH_MEM_SEPT_REMOVE = 30
    TDH_SYS_KEY_CONFIG = 31
    TDH_SYS_INFO = 32
    TDH_SYS_INIT = 33
    TDH_SYS_RD = 34
    TDH_SYS_LP_INIT = 35
    TDH_SYS_TDMR_INIT = 36
    TDH_SYS_RDALL = 37
    TDH_MEM_TRACK = 38
    TDH_MEM_RANGE_UNBLOCK = 39
    TDH_PHYMEM_CACHE_WB = 40
    TDH_PHYMEM_PAGE_WBINVD = 41
    TDH_MEM_SEPT_WR = 42
    TDH_VP_WR = 43
    TDH_SYS_LP_SHUTDOWN = 44
    TDH_SYS_CONFIG = 45
    TDH_SERVTD_BIND = 48
    TDH_SERVTD_PREBIND = 49
    TDH_SYS_SHUTDOWN = 52
    TDH_SYS_UPDATE = 53
    TDH_PHYMEM_PAMT_ADD = 58
    TDH_PHYMEM_PAMT_REMOVE = 59
    TDH_EXPORT_ABORT = 64
    TDH_EXPORT_BLOCKW = 65
    TDH_EXPORT_RESTORE = 66
    TDH_EXPORT_MEM = 68
    TDH_SYS_DISABLE = 69
    TDH_EXPORT_PAUSE = 70
    TDH_EXPORT_TRACK = 71
    TDH_EXPORT_STATE_IMMUTABLE = 72
    TDH_EXPORT_STATE_TD = 73
    TDH_EXPORT_STATE_VP = 74
    TDH_EXPORT_UNBLOCKW = 75
    TDH_IMPORT_ABORT = 80
    TDH_IMPORT_END = 81
    TDH_IMPORT_COMMIT = 82
    TDH_IMPORT_MEM = 83
    TDH_IMPORT_TRACK = 84
    TDH_IMPORT_STATE_IMMUTABLE = 85
    TDH_IMPORT_STATE_TD = 86
    TDH_IMPORT_STATE_VP = 87
    TDH_MIG_STREAM_CREATE = 96
    TDH_IOMMU_SETREG = 128
    TDH_IOMMU_GETREG = 129
    TDH_SPDM_CREATE = 130
    TDH_SPDM_DELETE = 131
    TDH_IDE_STREAM_CREATE = 132
    TDH_IDE_STREAM_BLOCK = 133
    TDH_IDE_STREAM_DELETE = 134
    TDH_IDE_STREAM_IDEKMREQ = 135
    TDH_IDE_STREAM_IDEKMRSP = 136
    TDH_DEVIF_CREATE = 137
    TDH_DEVIF_REMOVE = 138
    TDH_DEVIF_REQUEST = 139
    TDH_DEVIF_RESPONSE = 140
    TDH_DMAR_ADD = 150
    TDH_DMAR_BLOCK = 151
    TDH_DMAR_READ = 152
    TDH_DMAR_REMOVE = 153
    TDH_MMIO_MT_ADD = 154
    TDH_MMIO_MT_SET = 155
    TDH_MMIO_MT_RD = 156
    TDH_MMIO_MT_REMOVE = 157
    TDH_MMIO_MAP = 158
    TDH_MMIO_BLOCK = 159
    TDH_MMIO_UNMAP = 160
    TDH_IQ_INV_REQUEST = 161
    TDH_IQ_INV_PROCESS = 162
    TDH_MEM_SHARED_SEPT_WR = 163
    TDH_DEVIF_MT_ADD = 164
    TDH_DEVIF_MT_REMOVE = 165
    TDH_DEVIF_MT_RD = 166


# Which published list defines each leaf: "1.5.01" intel/tdx-module tag TDX_1.5.01
# include/tdx_api_defs.h; "2.0" the 2.0 line's include/tdx_api_defs.h; "kernel" Linux
# arch/x86/virt/vmx/tdx/tdx.h (TDH.SYS.DISABLE, in later 1.5 and 2.0 modules).
LEAF_SOURCES: dict[int, str] = {
    0: '1.5.01 2.0', 1: '1.5.01 2.0', 2: '1.5.01 2.0', 3: '1.5.01 2.0', 4: '1.5.01 2.0', 5: '2.0',
    6: '1.5.01 2.0', 7: '1.5.01 2.0', 8: '1.5.01 2.0', 9: '1.5.01 2.0', 10: '1.5.01 2.0',
    11: '1.5.01 2.0', 12: '1.5.01 2.0', 13: '1.5.01 2.0', 14: '1.5.01 2.0', 15: '1.5.01 2.0',
    16: '1.5.01 2.0', 17: '1.5.01 2.0', 18: '1.5.01 2.0', 19: '1.5.01 2.0', 20: '1.5.01 2.0',
    21: '1.5.01 2.0', 22: '1.5.01 2.0', 23: '1.5.01 2.0', 24: '1.5.01 2.0', 25: '1.5.01 2.0',
    26: '1.5.01 2.0', 27: '1.5.01 2.0', 28: '1.5.01 2.0', 29: '1.5.01 2.0', 30: '1.5.01 2.0',
    31: '1.5.01 2.0', 32: '1.5.01 2.0', 33: '1.5.01 2.0', 34: '1.5.01 2.0', 35: '1.5.01 2.0',
    36: '1.5.01 2.0', 37: '1.5.01 2.0', 38: '1.5.01 2.0', 39: '1.5.01 2.0', 40: '1.5.01 2.0',
    41: '1.5.01 2.0', 42: '1.5.01 2.0', 43: '1.5.01 2.0', 44: '1.5.01 2.0', 45: '1.5.01 2.0',
    48: '1.5.01 2.0', 49: '1.5.01 2.0', 52: '1.5.01 2.0', 53: '1.5.01 2.0', 58: '2.0', 59: '2.0',
    64: '1.5.01 2.0', 65: '1.5.01 2.0', 66: '1.5.01 2.0', 68: '1.5.01 2.0', 69: 'kernel',
    70: '1.5.01 2.0', 71: '1.5.01 2.0', 72: '1.5.01 2.0', 73: '1.5.01 2.0', 74: '1.5.01 2.0',
    75: '1.5.01 2.0', 80: '1.5.01 2.0', 81: '1.5.01 2.0', 82: '1.5.01 2.0', 83: '1.5.01 2.0',
    84: '1.5.01 2.0', 85: '1.5.01 2.0', 86: '1.5.01 2.0', 87: '1.5.01 2.0', 96: '1.5.01 2.0',
    128: '2.0', 129: '2.0', 130: '2.0', 131: '2.0', 132: '2.0', 133: '2.0', 134: '2.0', 135: '2.0',
    136: '2.0', 137: '2.0', 138: '2.0', 139: '2.0', 140: '2.0', 150: '2.0', 151: '2.0', 152: '2.0',
    153: '2.0', 154: '2.0', 155: '2.0', 156: '2.0', 157: '2.0', 158: '2.0', 159: '2.0', 160: '2.0',
    161: '2.0', 162: '2.0', 163: '2.0', 164: '2.0', 165: '2.0', 166: '2.0',
}


class SeamldrLeaf(IntEnum):
    """P-SEAMLDR leaves (spec-firmware.md §2, intel/tdx-loader inc/pseamldr_api_defs.h); the
    P-SEAMLDR answers a SEAMCALL whose RAX has bit 63 set."""

    P_SEAMLDR_INFO = SEAMLDR_LEAF_BIT | 0
    P_SEAMLDR_INSTALL = SEAMLDR_LEAF_BIT | 1
    P_SEAMLDR_SHUTDOWN = SEAMLDR_LEAF_BIT | 2
    P_SEAMLDR_SEAMINFO = SEAMLDR_LEAF_BIT | 3
    P_SEAMLDR_CLEANUP = SEAMLDR_LEAF_BIT | 4
    P_SEAMLDR_TDDEBUGCONFIG = SEAMLDR_LEAF_BIT | 0xFE


def leaf_firmware(rax: int) -> str:
    """Which SEAM software answers a SEAMCALL with this RAX (bit 63)."""
    return "P-SEAMLDR" if rax & SEAMLDR_LEAF_BIT else "TDX module"


def leaf_name(rax: int) -> str:
    """Name a SEAMCALL leaf for traces and logs."""
    if rax & SEAMLDR_LEAF_BIT:
        try:
            return SeamldrLeaf(rax).name
        except ValueError:
            return f"P_SEAMLDR_0x{rax & ~SEAMLDR_LEAF_BIT:x}"
    try:
        return TdxLeaf(rax & 0xFFFF).name
    except ValueError:
        return f"TDH_0x{rax & 0xFFFF:x}"
