"""Physical memory: sparse pages, bounds, zeroing, and the scattered host page allocator."""

from __future__ import annotations

import pytest

from tdxseam.platform.memory import PAGE_SIZE, MemoryError_, PhysMem


def test_untouched_memory_reads_zero_and_costs_nothing():
    mem = PhysMem()
    assert mem.read(0x1234_5000, 64) == bytes(64)
    assert mem.pages == {}


def test_write_read_roundtrip_across_a_page_boundary():
    mem = PhysMem()
    pa = 0x2000_0000 + PAGE_SIZE - 5
    data = bytes(range(1, 21))
    mem.write(pa, data)
    assert mem.read(pa, 20) == data
    assert len(mem.pages) == 2
    assert mem.read(pa - 3, 26) == bytes(3) + data + bytes(3)
    # the two halves really sit in two consecutive pages
    assert mem.read(0x2000_0000 + PAGE_SIZE - 5, 5) == data[:5]
    assert mem.read(0x2000_0000 + PAGE_SIZE, 15) == data[5:]


def test_write_spanning_many_pages():
    mem = PhysMem()
    data = bytes((i * 7) & 0xFF for i in range(3 * PAGE_SIZE + 100))
    mem.write(0x10_0000 + 50, data)
    assert mem.read(0x10_0000 + 50, len(data)) == data
    assert len(mem.pages) == 4


@pytest.mark.parametrize("pa,n", [(-1, 1), (1 << 46, 1), ((1 << 46) - 4, 8)])
def test_access_outside_physical_memory_raises(pa, n):
    mem = PhysMem(max_pa_bits=46)
    with pytest.raises(MemoryError_, match="outside physical memory"):
        mem.read(pa, n)
    with pytest.raises(MemoryError_, match="outside physical memory"):
        mem.write(pa, bytes(n))


def test_last_bytes_below_max_pa_are_usable():
    mem = PhysMem(max_pa_bits=40)
    assert mem.max_pa == 1 << 40
    mem.write((1 << 40) - 8, b"ABCDEFGH")
    assert mem.read((1 << 40) - 8, 8) == b"ABCDEFGH"


def test_zero_partial_and_whole_pages():
    mem = PhysMem()
    base = 0x3000_0000
    mem.write(base, b"\xff" * (3 * PAGE_SIZE))
    mem.zero(base + 100, 2 * PAGE_SIZE)  # from inside page 0 to inside page 2
    got = mem.read(base, 3 * PAGE_SIZE)
    assert got[:100] == b"\xff" * 100
    assert got[100:100 + 2 * PAGE_SIZE] == bytes(2 * PAGE_SIZE)
    assert got[100 + 2 * PAGE_SIZE:] == b"\xff" * (PAGE_SIZE - 100)
    mem.zero(base + PAGE_SIZE * 2, PAGE_SIZE)  # a whole page is dropped, not kept as zeros
    assert (base >> 12) + 2 not in mem.pages
    assert mem.read(base + 2 * PAGE_SIZE, PAGE_SIZE) == bytes(PAGE_SIZE)


def test_alloc_pages_are_aligned_distinct_and_scattered():
    mem = PhysMem(seed=5, host_pages=4096)
    pas = [mem.alloc_page() for _ in range(64)]
    assert len(set(pas)) == 64
    assert all(pa % PAGE_SIZE == 0 for pa in pas)
    assert all(0x1_0000_0000 <= pa < 0x1_0000_0000 + 4096 * PAGE_SIZE for pa in pas)
    steps = [b - a for a, b in zip(pas, pas[1:])]
    # vmalloc-like: consecutive allocations are (almost) never physically adjacent
    assert sum(1 for s in steps if s == PAGE_SIZE) <= 2
    assert mem.allocated_pages == 64


def test_alloc_order_is_seeded():
    m1, m2, m3 = PhysMem(seed=1), PhysMem(seed=1), PhysMem(seed=2)
    s1 = [m1.alloc_page() for _ in range(20)]
    s2 = [m2.alloc_page() for _ in range(20)]
    s3 = [m3.alloc_page() for _ in range(20)]
    assert s1 == s2
    assert s1 != s3


def test_alloc_gives_zeroed_page_and_free_returns_it():
    mem = PhysMem(seed=3, host_pages=8)
    pa = mem.alloc_page()
    mem.write(pa, b"secret" * 100)
    mem.free_page(pa)
    assert mem.allocated_pages == 0
    assert mem.read(pa, 600) == bytes(600)
    again = [mem.alloc_page() for _ in range(8)]
    assert pa in again
    for p in again:
        assert mem.read(p, PAGE_SIZE) == bytes(PAGE_SIZE)


def test_exhaustion_and_bad_free():
    mem = PhysMem(seed=0, host_pages=3)
    pas = [mem.alloc_page() for _ in range(3)]
    with pytest.raises(MemoryError_, match="exhausted"):
        mem.alloc_page()
    mem.free_page(pas[0])
    with pytest.raises(MemoryError_, match="unallocated"):
        mem.free_page(pas[0])  # double free
    with pytest.raises(MemoryError_, match="unallocated"):
        mem.free_page(0x5000)  # never allocated
    assert mem.alloc_page() == pas[0]
