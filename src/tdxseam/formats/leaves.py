"""SEAMCALL leaf numbers (RAX on entry) and the bit that routes a call to the P-SEAMLDR."""

from __future__ import annotations

from enum import IntEnum

SEAMLDR_LEAF_BIT = 1 << 63
TDH_MR_EXTEND_CHUNK = 256  # TDH.MR.EXTEND measures 256 bytes of an added page per call  # RAX bit 63 selects the P-SEAMLDR instead of the TDX module
TDX_VERSION_SHIFT = 16  # TDX module leaves carry a version in RAX bits 23:16


class TdxLeaf(IntEnum):
    # TD management leaves tdxseam models (TDX ABI numbers, tdx_api_defs.h)
    TDH_VP_ENTER = 0
    TDH_MEM_PAGE_ADD = 2
    TDH_MNG_CREATE = 9
    TDH_VP_CREATE = 10
    TDH_MR_EXTEND = 16
    TDH_MR_FINALIZE = 17
    TDH_MNG_INIT = 21
    TDH_VP_INIT = 22
    # platform leaves
    TDH_SYS_KEY_CONFIG = 31
    TDH_SYS_INFO = 32
    TDH_SYS_INIT = 33
    TDH_SYS_RD = 34
    TDH_SYS_LP_INIT = 35
    TDH_SYS_TDMR_INIT = 36
    TDH_SYS_RDALL = 37
    TDH_SYS_LP_SHUTDOWN = 44
    TDH_SYS_CONFIG = 45
    TDH_SYS_SHUTDOWN = 52
    TDH_SYS_UPDATE = 53
    TDH_SYS_DISABLE = 69


class SeamldrLeaf(IntEnum):
    P_SEAMLDR_INFO = SEAMLDR_LEAF_BIT | 0
    P_SEAMLDR_INSTALL = SEAMLDR_LEAF_BIT | 1
    P_SEAMLDR_SHUTDOWN = SEAMLDR_LEAF_BIT | 2
    P_SEAMLDR_SEAMINFO = SEAMLDR_LEAF_BIT | 3
    P_SEAMLDR_CLEANUP = SEAMLDR_LEAF_BIT | 4
    P_SEAMLDR_TDDEBUGCONFIG = SEAMLDR_LEAF_BIT | 0xFE


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
