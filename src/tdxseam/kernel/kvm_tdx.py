"""Just enough of KVM's TDX support to build and run TDs through SEAMCALLs (arch/x86/kvm/vmx/tdx.c).

A TD build spans many SEAMCALLs (MNG.CREATE, MNG.INIT, VP.CREATE/INIT, MEM.PAGE.ADD, MR.EXTEND,
MR.FINALIZE). A TD-preserving update that lands between them can corrupt the TD's measurement on
modules without Update Compatibility (spec-linux.md §9). Builds hold the read side of
`td_build_lock` for the whole build; with the v4 profile's kernel gate (`td_build_guard`
"kernel", tdxseam's seed design) the update takes it for write with a trylock (-EBUSY,
"device-busy"), so it never runs mid-build. v10 asks the module instead (TDH.SYS.SHUTDOWN with
AVOID_COMPAT_SENSITIVE); merged has no guard. The KeyIDs of live TDs are tracked for
`tdx_offline_cpu`.
"""

from __future__ import annotations

import errno
import random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tdxseam.formats.leaves import TDH_MR_EXTEND_CHUNK, TdxLeaf
from tdxseam.formats.status import TDX_SEAMCALL_STATUS_MASK
from tdxseam.kernel.seamcall import (
    seamcall,
    seamcall_err,
    seamcall_errno,
    seamcall_prerr,
    seamcall_prerr_ret,
)
from tdxseam.platform.cpu import Regs
from tdxseam.platform.memory import PAGE_SIZE

if TYPE_CHECKING:
    from tdxseam.kernel.kernel import Kernel

PR_FMT = "kvm/tdx: "
# bound once: a TD build makes one such SEAMCALL per 256 bytes of each page, and on Python 3.11 a
# member looked up on its enum class costs a Python-level hook (EnumType.__getattr__)
_MR_EXTEND = TdxLeaf.TDH_MR_EXTEND


class TdBuildLock:
    """A reader/writer gate: builds are readers, the update is a writer that never waits."""

    def __init__(self) -> None:
        self.builders = 0
        self.updating = False

    def build_begin(self) -> bool:
        if self.updating:
            return False
        self.builders += 1
        return True

    def build_end(self) -> None:
        self.builders -= 1

    def update_trylock(self) -> bool:
        if self.builders:
            return False
        self.updating = True
        return True

    def update_unlock(self) -> None:
        self.updating = False


@dataclass
class KvmTd:
    tdr_pa: int
    hkid: int
    vcpus: list[int] = field(default_factory=list)  # TDVPR PAs
    pages: dict[int, int] = field(default_factory=dict)  # GPA -> HPA
    finalized: bool = False
    runs: int = 0


@dataclass
class KvmTdx:
    build_lock: TdBuildLock = field(default_factory=TdBuildLock)
    tds: list[KvmTd] = field(default_factory=list)
    next_hkid: int = 1
    # TDX private KeyIDs allocated to TDs (tdx_guest_keyid_pool): a failed build frees its own
    keyids: set[int] = field(default_factory=set)


def kvm_tdx(k: Kernel) -> KvmTdx:
    st = getattr(k, "_kvm_tdx", None)
    if st is None:
        st = k._kvm_tdx = KvmTdx()
    return st


def _call(k: Kernel, leaf: int, **regs: int) -> int:
    return seamcall_prerr(k, PR_FMT, leaf, Regs(**regs))


def tdx_td_create(k: Kernel, *, nr_vcpus: int = 1, nr_pages: int = 2, seed: int = 0,
                  measure: bool = True) -> tuple[int, KvmTd | None]:
    """Build a TD from start to MR.FINALIZE; returns (errno, TD). -EBUSY while an update runs."""
    st = kvm_tdx(k)
    if not st.build_lock.build_begin():
        return -errno.EBUSY, None
    hkid = st.next_hkid
    ok = False
    try:
        ret, td = _build(k, st, nr_vcpus, nr_pages, seed, measure)
        ok = ret == 0
        return ret, td
    finally:
        if not ok:
            st.keyids.discard(hkid)
        st.build_lock.build_end()


def _cond_resched(k: Kernel) -> None:
    """cond_resched() between build steps: KVM builds a TD over several ioctls (KVM_TDX_INIT_VM,
    KVM_TDX_INIT_VCPU, KVM_TDX_INIT_MEM_REGION with cond_resched() per page, KVM_TDX_FINALIZE_VM),
    so a higher-priority task, such as an update's stopper, takes the CPU there and finds the TD
    half built. Like the kernel's, it yields only when rescheduling is needed (no scheduler draw
    otherwise, so builds that nothing preempts interleave exactly as before)."""
    cpu = k.this_cpu()
    if cpu.preempt_count == 0 and cpu.irq_enabled and k.machine.sched.need_resched():
        cpu.preempt_point()


def _build(k: Kernel, st: KvmTdx, nr_vcpus: int, nr_pages: int, seed: int,
           measure: bool) -> tuple[int, KvmTd | None]:
    mem = k.machine.mem
    if st.next_hkid > k.machine.num_private_hkids:
        return -errno.ENOSPC, None
    td = KvmTd(tdr_pa=mem.alloc_page(), hkid=st.next_hkid)
    st.keyids.add(td.hkid)
    st.next_hkid += 1
    ret = _call(k, TdxLeaf.TDH_MNG_CREATE, rcx=td.tdr_pa, rdx=td.hkid)
    if ret:
        return ret, None
    params = mem.alloc_page()
    mem.write(params + 16, nr_vcpus.to_bytes(2, "little"))  # TD_PARAMS.max_vcpus
    ret = _call(k, TdxLeaf.TDH_MNG_INIT, rcx=td.tdr_pa, rdx=params)
    mem.free_page(params)
    if ret:
        return ret, None
    _cond_resched(k)
    for i in range(nr_vcpus):
        tdvpr = mem.alloc_page()
        ret = _call(k, TdxLeaf.TDH_VP_CREATE, rcx=tdvpr, rdx=td.tdr_pa) or \
            _call(k, TdxLeaf.TDH_VP_INIT, rcx=tdvpr, rdx=i)
        if ret:
            return ret, None
        td.vcpus.append(tdvpr)
        _cond_resched(k)
    rng = random.Random(seed)
    src = mem.alloc_page()
    try:
        for p in range(nr_pages):
            gpa = p * PAGE_SIZE
            mem.write(src, rng.randbytes(PAGE_SIZE))
            hpa = mem.alloc_page()
            ret = seamcall_prerr_ret(k, PR_FMT, TdxLeaf.TDH_MEM_PAGE_ADD,
                                     Regs(rcx=gpa, rdx=td.tdr_pa, r8=hpa, r9=src))
            if ret:
                return ret, None
            td.pages[gpa] = hpa
            if measure:
                for off in range(0, PAGE_SIZE, TDH_MR_EXTEND_CHUNK):
                    ret = _call(k, _MR_EXTEND, rcx=gpa + off, rdx=td.tdr_pa)
                    if ret:
                        return ret, None
            _cond_resched(k)
    finally:
        mem.free_page(src)
    ret = _call(k, TdxLeaf.TDH_MR_FINALIZE, rcx=td.tdr_pa)
    if ret:
        return ret, None
    td.finalized = True
    st.tds.append(td)
    return 0, td


def tdx_vcpu_run(k: Kernel, td: KvmTd, index: int = 0) -> int:
    """One TDH.VP.ENTER of a vCPU; the guest does its bit of work and exits.

    A TD exit is a success whose low 32 bits carry the exit reason, so the status class alone
    (the top 32 bits) says whether the entry worked.
    """
    leaf = TdxLeaf.TDH_VP_ENTER
    sret = seamcall(k, leaf, Regs(rcx=td.vcpus[index]))
    if sret & TDX_SEAMCALL_STATUS_MASK:
        ret = seamcall_errno(sret)
        if ret == -errno.EIO:
            seamcall_err(k, PR_FMT, leaf, sret)
        return ret
    td.runs += 1
    return 0
