"""The 4 KiB page every SEAM structure is counted in (module pages, sigstruct page, params)."""

from __future__ import annotations

PAGE_SIZE = 4096


def pad_to_pages(data: bytes) -> bytes:
    """Zero-pad to a whole number of pages (Intel modules already are)."""
    rem = len(data) % PAGE_SIZE
    return bytes(data) + bytes(PAGE_SIZE - rem) if rem else bytes(data)


def nr_pages(size: int) -> int:
    return -(-size // PAGE_SIZE)
