"""The P-SEAMLDR driver: every call goes through `seamldr_call` (seamldr.c, spec-linux.md §3).

Only one logical CPU may be inside the P-SEAMLDR at a time; hardware fails a second one with
VMfailInvalid. So every call, sysfs reads included, takes one global raw spinlock. The lock is taken
with interrupts saved and disabled (the v4 design tdxseam follows): calls may come from interrupt
context, and an interrupt whose handler called the P-SEAMLDR on a CPU already holding the lock would
spin on it forever.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from tdxseam.formats.leaves import SeamldrLeaf
from tdxseam.formats.seamldr_info import SEAMLDR_INFO_ALIGN, SEAMLDR_INFO_SIZE, SeamldrInfo
from tdxseam.kernel.locks import (
    raw_spin_lock,
    raw_spin_lock_irqsave,
    raw_spin_unlock,
    raw_spin_unlock_irqrestore,
)
from tdxseam.kernel.seamcall import seamcall_prerr
from tdxseam.platform.cpu import Regs
from tdxseam.platform.sched import call_site

if TYPE_CHECKING:
    from tdxseam.kernel.kernel import Kernel

PR_FMT = "seamldr: "


def seamldr_call(k: Kernel, fn: int, args: Regs) -> int:
    """Call the P-SEAMLDR, serialized and irq-safe; returns 0 or a negative errno."""
    cpu = k.this_cpu()
    # SEAMRET from the P-SEAMLDR clears the current VMCS on CPUs with this erratum; the
    # interface is hidden there (tdx_host), so reaching this is a kernel bug.
    if cpu.has_seamret_invd_vmcs:
        k.warn(f"P-SEAMLDR call on cpu{cpu.id}, which has the seamret_invd_vmcs erratum")
        return -errno.EINVAL
    site = call_site()
    if "no-lock" in k.mutations:
        return seamcall_prerr(k, PR_FMT, fn, args)
    if "no-irqsave" in k.mutations:
        raw_spin_lock(k.seamldr_lock, site)
        try:
            return seamcall_prerr(k, PR_FMT, fn, args)
        finally:
            raw_spin_unlock(k.seamldr_lock)
    flags = raw_spin_lock_irqsave(k.seamldr_lock, site)
    try:
        return seamcall_prerr(k, PR_FMT, fn, args)
    finally:
        raw_spin_unlock_irqrestore(k.seamldr_lock, flags)


def seamldr_get_info(k: Kernel) -> tuple[int, SeamldrInfo | None]:
    """SEAMLDR.INFO into a 256-aligned buffer on this CPU's stack."""
    cpu = k.this_cpu()
    # Nested interrupt handlers use deeper stack slots, so buffers never overlap.
    buf_pa = k.this_percpu().stack_pa + SEAMLDR_INFO_ALIGN * (cpu.irq_depth % 16)
    ret = seamldr_call(k, SeamldrLeaf.P_SEAMLDR_INFO, Regs(rcx=buf_pa))
    if ret:
        return ret, None
    return 0, SeamldrInfo.from_bytes(k.machine.mem.read(buf_pa, SEAMLDR_INFO_SIZE))


def seamldr_install(k: Kernel, params_pa: int) -> int:
    return seamldr_call(k, SeamldrLeaf.P_SEAMLDR_INSTALL, Regs(rcx=params_pa))
