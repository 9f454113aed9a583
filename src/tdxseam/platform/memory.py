"""Physical memory addressed by page, with a page allocator for the host.

Pages come to life when first written (reads of untouched memory give zeros), so a machine with
a large address space costs only what it uses. The allocator hands out pages in a seeded,
scattered order: like vmalloc'd buffers, consecutive allocations are not physically contiguous,
which is what the kernel's per-page PA lookup and the P-SEAMLDR's page list are there for.
"""

from __future__ import annotations

import random

from tdxseam.formats.page import PAGE_SIZE

PAGE_SHIFT = 12
# Physically contiguous memory above the shuffled window, for the few allocations that need it
# (the PAMTs a kernel hands the TDX module), as Linux takes them with alloc_contig_pages.
CONTIG_PAGES = 1 << 14


class MemoryError_(RuntimeError):
    """A physical access outside the machine's memory (a model bug, or a bad PA on purpose)."""


class PhysMem:
    def __init__(self, max_pa_bits: int = 46, host_pages: int = 1 << 16, seed: int = 0,
                 host_base: int = 0x1_0000_0000) -> None:
        self.max_pa_bits = max_pa_bits
        self.max_pa = 1 << max_pa_bits  # every access is checked against it
        self.pages: dict[int, bytearray] = {}
        # Host allocations come from a window above 4 GiB, shuffled so they are non-contiguous.
        # The shuffle is random.shuffle's Fisher-Yates run lazily: a page's place is drawn only when
        # the allocator reaches it (same RNG, same draws, same order), so a machine costs nothing
        # for the tens of thousands of pages it never allocates.
        self._first = host_base >> PAGE_SHIFT
        self._rng = random.Random(seed ^ 0x5EA4)
        self._unshuffled = host_pages  # positions 0 .. n-1 of the conceptual list not yet final
        self._moved: dict[int, int] = {}  # position -> pfn, where a swap put another page
        self._free: list[int] = []  # freed pages (and nothing else), above the unshuffled part
        self._allocated: set[int] = set()
        self._contig_next = self._first + host_pages
        self._contig_end = self._contig_next + CONTIG_PAGES
        self.host_pages = host_pages

    def reseed(self, seed: int) -> None:
        """Scatter the pages not yet allocated as a machine seeded with `seed` would (a host loaded
        from a boot image): the lazy shuffle draws its next places from the new RNG, and the pages
        freed so far (the boot's staging pages, handed out first) are shuffled by it."""
        self._rng = random.Random(seed ^ 0x5EA4)
        self._rng.shuffle(self._free)

    def _page(self, pfn: int, create: bool) -> bytearray | None:
        p = self.pages.get(pfn)
        if p is None and create:
            p = self.pages[pfn] = bytearray(PAGE_SIZE)
        return p

    def read(self, pa: int, n: int) -> bytes:
        if pa < 0 or pa + n > self.max_pa:
            raise MemoryError_(f"read of {n} bytes at PA 0x{pa:x} outside physical memory")
        off = pa & (PAGE_SIZE - 1)
        if off + n <= PAGE_SIZE:  # within one page: most reads
            p = self.pages.get(pa >> PAGE_SHIFT)
            return bytes(p[off:off + n]) if p is not None else bytes(n)
        out = bytearray()
        while n:
            off = pa & (PAGE_SIZE - 1)
            take = min(n, PAGE_SIZE - off)
            p = self._page(pa >> PAGE_SHIFT, False)
            out += p[off:off + take] if p is not None else bytes(take)
            pa += take
            n -= take
        return bytes(out)

    def write(self, pa: int, data: bytes) -> None:
        if pa < 0 or pa + len(data) > self.max_pa:
            raise MemoryError_(f"write of {len(data)} bytes at PA 0x{pa:x} outside physical memory")
        n = len(data)
        off = pa & (PAGE_SIZE - 1)
        if 0 < n and off + n <= PAGE_SIZE:  # within one page: most writes
            self._page(pa >> PAGE_SHIFT, True)[off:off + n] = data
            return
        mv = memoryview(data)
        while mv:
            off = pa & (PAGE_SIZE - 1)
            take = min(len(mv), PAGE_SIZE - off)
            self._page(pa >> PAGE_SHIFT, True)[off:off + take] = mv[:take]
            pa += take
            mv = mv[take:]

    def zero(self, pa: int, n: int) -> None:
        """Zero a range; whole pages are simply dropped."""
        end = pa + n
        while pa < end:
            off = pa & (PAGE_SIZE - 1)
            take = min(end - pa, PAGE_SIZE - off)
            if take == PAGE_SIZE:
                self.pages.pop(pa >> PAGE_SHIFT, None)
            else:
                p = self._page(pa >> PAGE_SHIFT, False)
                if p is not None:
                    p[off:off + take] = bytes(take)
            pa += take

    def _next_shuffled(self) -> int:
        """Finalise the top unshuffled position, as the next step of random.shuffle would."""
        i = self._unshuffled - 1
        moved, first = self._moved, self._first
        if i > 0:
            j = self._rng._randbelow(i + 1)
            moved[i], moved[j] = moved.get(j, first + j), moved.get(i, first + i)
        self._unshuffled = i
        return moved.pop(i, first + i)

    def alloc_page(self) -> int:
        """A zeroed host page; returns its physical address."""
        if self._free:
            pfn = self._free.pop()
        elif self._unshuffled:
            pfn = self._next_shuffled()
        else:
            raise MemoryError_("host memory exhausted")
        self._allocated.add(pfn)
        self.pages.pop(pfn, None)
        return pfn << PAGE_SHIFT

    def alloc_contig(self, npages: int) -> int:
        """`npages` zeroed, physically contiguous pages (never freed); returns the first PA."""
        if npages < 1 or self._contig_next + npages > self._contig_end:
            raise MemoryError_(f"no {npages} contiguous pages left")
        pfn = self._contig_next
        end = self._contig_next = pfn + npages
        pages = self.pages
        # drop what was written there before (zeroed pages): look at the fewer of range and dict
        stale = [p for p in pages if pfn <= p < end] if len(pages) < npages else range(pfn, end)
        for p in stale:
            pages.pop(p, None)
        return pfn << PAGE_SHIFT

    def cmrs(self) -> tuple[tuple[int, int], ...]:
        """Convertible memory ranges (base, size): all host memory, as MCHECK would report it."""
        return ((self._first << PAGE_SHIFT, (self._contig_end - self._first) << PAGE_SHIFT),)

    def free_page(self, pa: int) -> None:
        pfn = pa >> PAGE_SHIFT
        if pfn not in self._allocated:
            raise MemoryError_(f"free of unallocated page 0x{pa:x}")
        self._allocated.remove(pfn)
        self.pages.pop(pfn, None)
        self._free.append(pfn)

    @property
    def allocated_pages(self) -> int:
        return len(self._allocated)
