"""SEAMCALL wrappers: the asm stub's fault fix-ups, the entropy retry, and error printing.

Mirrors `seamcall_internal.h` (spec-linux.md §2). The retry loop retries an exact
TDX_RND_NO_ENTROPY on any leaf, P-SEAMLDR leaves included (there is no special casing upstream);
the P-SEAMLDR's own no-entropy code (SEAMLDR_RND_NO_ENTROPY) is a different value and is a plain
failure.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from tdxseam.formats.status import TdxStatus, seamcall_errno  # noqa: F401 (re-exported)
from tdxseam.kernel.locks import preempt_enable
from tdxseam.platform.cpu import SEAMRET, Regs, SeamcallEnd

if TYPE_CHECKING:
    from tdxseam.kernel.kernel import Kernel

RDRAND_RETRY_LOOPS = 10
TDX_RND_NO_ENTROPY = TdxStatus.TDX_RND_NO_ENTROPY  # bound once (see platform.cpu.SEAMRET)

_FAULT_STATUS = {
    SeamcallEnd.VMFAILINVALID: TdxStatus.TDX_SEAMCALL_VMFAILINVALID,
    SeamcallEnd.UD: TdxStatus.TDX_SEAMCALL_UD,
    SeamcallEnd.GP: TdxStatus.TDX_SEAMCALL_GP,
}


def __seamcall(k: Kernel, fn: int, args: Regs) -> int:
    """The asm stub: load RAX, execute SEAMCALL, turn VMfailInvalid and faults into statuses."""
    args.rax = fn
    end = k.this_cpu().seamcall(args)
    if end is SEAMRET:
        return args.rax
    return int(_FAULT_STATUS[end])


def sc_retry(k: Kernel, fn: int, args: Regs) -> int:
    """Issue the call, retrying TDX_RND_NO_ENTROPY (whatever the leaf) up to RDRAND_RETRY_LOOPS times."""
    retry = RDRAND_RETRY_LOOPS
    while True:
        cpu = k.this_cpu()
        cpu.preempt_count += 1  # preempt_disable(), written out: the CPU is needed just below
        # kexec must flush caches of any CPU that has run SEAM code
        k.percpu[cpu.id].cache_state_incoherent = True
        ret = __seamcall(k, fn, args)
        preempt_enable(k)
        if ret != TDX_RND_NO_ENTROPY:
            return ret
        retry -= 1
        if retry == 0:
            return ret


def seamcall(k: Kernel, fn: int, args: Regs) -> int:
    """Output registers are not copied back (only RAX, returned)."""
    return sc_retry(k, fn, args.copy())


def seamcall_ret(k: Kernel, fn: int, args: Regs) -> int:
    """Output registers are written back to `args`."""
    return sc_retry(k, fn, args)


def seamcall_err(k: Kernel, pr_fmt: str, fn: int, err: int) -> None:
    k.pr_err(pr_fmt, f"SEAMCALL (0x{fn:016x}) failed: 0x{err:016x}")


def seamcall_err_ret(k: Kernel, pr_fmt: str, fn: int, err: int, args: Regs) -> None:
    seamcall_err(k, pr_fmt, fn, err)
    k.pr_err(pr_fmt, f"RCX 0x{args.rcx:016x} RDX 0x{args.rdx:016x} R08 0x{args.r8:016x}")
    k.pr_err(pr_fmt, f"R09 0x{args.r9:016x} R10 0x{args.r10:016x} R11 0x{args.r11:016x}")


def _note_failure(k: Kernel, fn: int, sret: int) -> None:
    """Keep the last failing statuses for reports (the kernel only prints some of them)."""
    if sret:
        k.seamcall_failures.append((fn, sret))
        del k.seamcall_failures[:-64]


def seamcall_prerr(k: Kernel, pr_fmt: str, fn: int, args: Regs) -> int:
    """seamcall() with errno mapping; prints only for statuses that become -EIO."""
    sret = seamcall(k, fn, args)
    _note_failure(k, fn, sret)
    ret = seamcall_errno(sret)
    if ret == -errno.EIO:
        seamcall_err(k, pr_fmt, fn, sret)
    return ret


def seamcall_prerr_ret(k: Kernel, pr_fmt: str, fn: int, args: Regs) -> int:
    sret = seamcall_ret(k, fn, args)
    _note_failure(k, fn, sret)
    ret = seamcall_errno(sret)
    if ret == -errno.EIO:
        seamcall_err_ret(k, pr_fmt, fn, sret, args)
    return ret
