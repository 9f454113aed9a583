"""The model-specific registers a TDX host check reads, and their fields (Intel SDM vol. 4; the
SEAMRR bits as the TDX host kernels define them). Read through /dev/cpu/N/msr: the file offset is
the MSR number, each read is 8 bytes."""

from __future__ import annotations

MSR_IA32_MKTME_KEYID_PARTITIONING = 0x87  # bits 31:0 MKTME KeyIDs, 63:32 TDX private KeyIDs
MSR_IA32_SEAMRR_PHYS_BASE = 0x1400
MSR_IA32_SEAMRR_PHYS_MASK = 0x1401
SEAMRR_MASK_LOCKED = 1 << 10
SEAMRR_MASK_ENABLED = 1 << 11
SEAMRR_ADDR_BITS = 0x000F_FFFF_FE00_0000  # bits 51:25: SEAMRR is 32 MiB aligned


def keyid_partitioning(mktme_keyids: int, tdx_keyids: int) -> int:
    return (tdx_keyids << 32) | mktme_keyids


def split_keyids(value: int) -> tuple[int, int]:
    """(MKTME KeyIDs, TDX KeyIDs); TDX KeyIDs start right after the MKTME ones (KeyID 0 is TME)."""
    return value & 0xFFFF_FFFF, value >> 32


def seamrr_mask(size: int, *, enabled: bool = True, locked: bool = True) -> int:
    return ((~(size - 1)) & SEAMRR_ADDR_BITS) | (SEAMRR_MASK_ENABLED if enabled else 0) | \
        (SEAMRR_MASK_LOCKED if locked else 0)


def seamrr_size(mask: int) -> int:
    """The range size a SEAMRR_PHYS_MASK value describes (0 when it is not enabled)."""
    if not mask & SEAMRR_MASK_ENABLED:
        return 0
    return ((~mask & SEAMRR_ADDR_BITS) + (1 << 25)) & ((1 << 52) - 1)
