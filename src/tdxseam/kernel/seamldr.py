"""The P-SEAMLDR driver: every call goes through `seamldr_call` (seamldr.c, spec-linux.md §3).

Only one logical CPU may be inside the P-SEAMLDR at a time; hardware fails a second one with
VMfailInvalid. So every call, sysfs reads included, takes one global raw spinlock. Its flavour is a
profile switch (`kernel/profile.py`): v4 took it with interrupts saved and disabled, because calls
might come from interrupt context and an interrupt whose handler called the P-SEAMLDR on a CPU
already holding the lock would spin on it forever; from v5 on (and merged) it is a plain raw
spinlock, since no interrupt path calls the P-SEAMLDR (it is raw because stop_machine takes it
with interrupts off).
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING

from tdxseam.formats.image import TDX_IMAGE_HEADER_SIZE, V2Header, kernel_check_v2
from tdxseam.formats.page import PAGE_SIZE
from tdxseam.formats.leaves import SeamldrLeaf
from tdxseam.formats.seamldr_params import SEAMLDR_SCENARIO_UPDATE, SeamldrParams
from tdxseam.formats.seamldr_info import SEAMLDR_INFO_ALIGN, SEAMLDR_INFO_SIZE, SeamldrInfo
from tdxseam.kernel.kcsan import SharedField, kcsan_access
from tdxseam.kernel.locks import (
    RawSpinlock,
    raw_spin_lock,
    raw_spin_lock_irqsave,
    raw_spin_unlock,
    raw_spin_unlock_irqrestore,
)
from tdxseam.kernel.seamcall import seamcall_prerr
from tdxseam.kernel.stop_machine import stop_machine_cpuslocked
from tdxseam.kernel.tdx import tdx_cpu_enable, tdx_module_run_update, tdx_module_shutdown
from tdxseam.platform.cpu import Regs
from tdxseam.platform.memory import MemoryError_
from tdxseam.platform.sched import WaitQueue, lazy_site

if TYPE_CHECKING:
    from tdxseam.kernel.kernel import Kernel

PR_FMT = "seamldr: "
# bound once: every CPU calls it at every update, and on Python 3.11 a member looked up on its enum
# class costs a Python-level hook (EnumType.__getattr__)
_INSTALL = SeamldrLeaf.P_SEAMLDR_INSTALL


def seamldr_call(k: Kernel, fn: int, args: Regs) -> int:
    """Call the P-SEAMLDR, serialized and irq-safe; returns 0 or a negative errno."""
    cpu = k.this_cpu()
    # SEAMRET from the P-SEAMLDR clears the current VMCS on CPUs with this erratum; the
    # interface is hidden there (tdx_host), so reaching this is a kernel bug.
    if cpu.has_seamret_invd_vmcs:
        k.warn(f"P-SEAMLDR call on cpu{cpu.id}, which has the seamret_invd_vmcs erratum")
        return -errno.EINVAL
    site = lazy_site()
    if "no-lock" in k.mutations:
        return seamcall_prerr(k, PR_FMT, fn, args)
    if not k.profile.seamldr_lock_irqsave or "no-irqsave" in k.mutations:
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
    return seamldr_call(k, _INSTALL, Regs(rcx=params_pa))


# ---- runtime update ---------------------------------------------------------------------------


class ModuleUpdateState(IntEnum):
    MODULE_UPDATE_START = 0
    MODULE_UPDATE_SHUTDOWN = 1
    MODULE_UPDATE_CPU_INSTALL = 2
    MODULE_UPDATE_CPU_INIT = 3
    MODULE_UPDATE_RUN_UPDATE = 4
    MODULE_UPDATE_DONE = 5


# upstream's names, bound once: the lockstep compares with them at every turn, and on Python 3.11 a
# member looked up on its enum class costs a Python-level hook (EnumType.__getattr__)
(MODULE_UPDATE_START, MODULE_UPDATE_SHUTDOWN, MODULE_UPDATE_CPU_INSTALL, MODULE_UPDATE_CPU_INIT,
 MODULE_UPDATE_RUN_UPDATE, MODULE_UPDATE_DONE) = ModuleUpdateState
_UPDATE_STATES = {int(s): s for s in ModuleUpdateState}


def _update_state(value: int) -> ModuleUpdateState:
    """`ModuleUpdateState(value)`, from a dict: every CPU turns the state it reads into a member at
    every change, and the enum's call costs some 0.4 us against 0.05. A value that is no state
    still raises as the enum's call does."""
    state = _UPDATE_STATES.get(value)
    return ModuleUpdateState(value) if state is None else state


@dataclass
class UpdateCtrl:
    """The lockstep's shared control data; `lock` guards the ack counters."""

    lock: RawSpinlock
    wq: WaitQueue
    state: int = ModuleUpdateState.MODULE_UPDATE_START
    num_ack: int = 0
    num_failed: int = 0
    num_cpus: int = 0
    log: list[tuple[int, int, str, int]] = field(default_factory=list)  # (cpu, state, event, ret)
    # CPUs that entered and left the lockstep loop, in order (for observers: the simulator's
    # "every CPU leaves the lockstep" and "nothing else runs during it" checks)
    entered: list[int] = field(default_factory=list)
    left: list[int] = field(default_factory=list)


# the fields of UpdateCtrl that CPUs share without always holding its lock, for the race detector
UPDATE_CTRL_STATE = SharedField("update_ctrl", "state")
UPDATE_CTRL_NUM_ACK = SharedField("update_ctrl", "num_ack")
UPDATE_CTRL_NUM_FAILED = SharedField("update_ctrl", "num_failed")


@dataclass
class InstallParams:
    params_pa: int
    pages: list[int]  # every host page holding params, sigstruct or module


def init_seamldr_params(k: Kernel, data: bytes) -> tuple[int, InstallParams | None]:
    """Check the image as the merged kernel does and lay seamldr_params out in memory.

    The upload buffer is vmalloc'd, so every page has its own physical address: the module and
    sigstruct pages are copied into separately allocated (non-contiguous) host pages.
    """
    if len(data) < TDX_IMAGE_HEADER_SIZE:
        return -errno.EINVAL, None
    mem = k.machine.mem
    try:
        params_pa = mem.alloc_page()
    except MemoryError_:
        return -errno.ENOMEM, None
    reject = kernel_check_v2(data)
    if reject is not None:
        mem.free_page(params_pa)
        return -reject.errno, None
    hdr = V2Header.from_bytes(data)
    pages = [params_pa]

    def place(off: int) -> int:
        pa = mem.alloc_page()
        pages.append(pa)
        mem.write(pa, data[off:off + PAGE_SIZE])
        return pa

    try:
        off = TDX_IMAGE_HEADER_SIZE
        sig_pas = []
        for _ in range(hdr.sigstruct_nr_pages):
            sig_pas.append(place(off))
            off += PAGE_SIZE
        mod_pas = []
        for _ in range(hdr.module_nr_pages):
            mod_pas.append(place(off))
            off += PAGE_SIZE
    except MemoryError_:
        for pa in pages:
            mem.free_page(pa)
        return -errno.ENOMEM, None
    params = SeamldrParams(version=0, scenario=SEAMLDR_SCENARIO_UPDATE,
                           sigstruct_pa=sig_pas[0] if sig_pas else 0,
                           module_nr_pages=hdr.module_nr_pages, module_pages_pa=mod_pas)
    mem.write(params_pa, params.to_bytes())
    return 0, InstallParams(params_pa, pages)


def free_seamldr_params(k: Kernel, p: InstallParams) -> None:
    for pa in p.pages:
        k.machine.mem.free_page(pa)


def _changed(k: Kernel) -> None:
    """The update's control data (`k.last_update_ctrl` or a field of it) changed: tell the observer."""
    if k.update_watch is not None:
        k.update_watch()


def ack_state(k: Kernel, ctrl: UpdateCtrl, result: int) -> None:
    """The last CPU to ack a state advances everyone, unless some CPU failed.

    The counters are touched under `update_ctrl.lock`; `num_failed` and `state` are also read
    by the spinning CPUs without it, so they are written with WRITE_ONCE (marked for KCSAN).
    """
    racy = "racy-ack" in k.mutations
    if not racy:
        raw_spin_lock(ctrl.lock)
    try:
        if result and "no-abort" not in k.mutations:
            kcsan_access(k, UPDATE_CTRL_NUM_FAILED, write=False)
            kcsan_access(k, UPDATE_CTRL_NUM_FAILED, write=True, marked=True)
            ctrl.num_failed += 1
        kcsan_access(k, UPDATE_CTRL_NUM_ACK, write=False)
        num_ack = ctrl.num_ack + 1
        kcsan_access(k, UPDATE_CTRL_NUM_ACK, write=True)
        ctrl.num_ack = num_ack
        ctrl.log.append((k.smp_processor_id(), ctrl.state, "ack", result))
        _changed(k)
        if k.machine.tracing:
            state = ModuleUpdateState(min(ctrl.state, ModuleUpdateState.MODULE_UPDATE_DONE)).name
            k.machine.emit("update-ack", f"{state} {ctrl.num_ack}/{ctrl.num_cpus} ret={result}",
                           {"state": state, "acked": ctrl.num_ack, "failed": ctrl.num_failed,
                            "cpus": ctrl.num_cpus, "ret": result})
        if ctrl.num_ack == ctrl.num_cpus and ctrl.num_failed == 0:
            kcsan_access(k, UPDATE_CTRL_NUM_ACK, write=True)
            ctrl.num_ack = 0
            kcsan_access(k, UPDATE_CTRL_STATE, write=True, marked=True)
            ctrl.state += 1  # after DONE it becomes 6, which nobody reads
            _changed(k)
            ctrl.wq.notify_all()
        elif result and ctrl.num_failed:
            ctrl.wq.notify_all()  # spinning CPUs leave at their next loop test
    finally:
        if not racy:
            raw_spin_unlock(ctrl.lock)


def _do_state(k: Kernel, ctrl: UpdateCtrl, state: ModuleUpdateState, params: InstallParams) -> int:
    cpu = k.this_cpu()
    is_lead_cpu = cpu.id == 0
    if state == MODULE_UPDATE_SHUTDOWN:
        return tdx_module_shutdown(k) if is_lead_cpu else 0
    if state == MODULE_UPDATE_CPU_INSTALL:
        return seamldr_install(k, params.params_pa)
    if state == MODULE_UPDATE_CPU_INIT:
        if "skip-lp-init" in k.mutations and cpu.id == ctrl.num_cpus - 1 and cpu.id != 0:
            return 0
        return tdx_cpu_enable(k)
    if state == MODULE_UPDATE_RUN_UPDATE:
        return tdx_module_run_update(k) if is_lead_cpu else 0
    return 0


def do_seamldr_install_module(k: Kernel, ctrl: UpdateCtrl, params: InstallParams) -> int:
    """Every online CPU, interrupts off: follow the shared state, do each state's work, ack it."""
    cpu = k.this_cpu()
    curstate: int = MODULE_UPDATE_START
    ret = 0
    abort = "no-abort" not in k.mutations
    ctrl.entered.append(cpu.id)
    _changed(k)
    while True:
        kcsan_access(k, UPDATE_CTRL_STATE, write=False, marked=True)  # READ_ONCE
        newstate = ctrl.state
        if newstate != curstate:
            curstate = _update_state(newstate)
            if k.machine.tracing:
                k.machine.emit("update-state", curstate.name)
            if "ack-before-work" in k.mutations:
                # the planted bug: report the previous result, then work on a state others
                # may already have left
                ack_state(k, ctrl, ret)
                ret = _do_state(k, ctrl, ModuleUpdateState(curstate), params)
            else:
                ret = _do_state(k, ctrl, curstate, params)
                ack_state(k, ctrl, ret)
            ctrl.log.append((cpu.id, int(curstate), "done", ret))
            _changed(k)
        else:
            # cpu_relax(): parked until the state moves or a CPU fails
            cpu.spin_until(ctrl.wq, lambda: ctrl.state != curstate or (abort and ctrl.num_failed != 0),
                           "module update state")
        kcsan_access(k, UPDATE_CTRL_NUM_FAILED, write=False, marked=True)  # READ_ONCE
        if curstate == MODULE_UPDATE_DONE or (abort and ctrl.num_failed):
            ctrl.left.append(cpu.id)
            _changed(k)
            if k.machine.tracing:
                k.machine.emit("update-leave", f"ret={ret}")
            return ret


def seamldr_install_module(k: Kernel, data: bytes) -> int:
    """Check `data` (a v2 image) and replace the running TDX module with it, on every CPU in lockstep."""
    ret, params = init_seamldr_params(k, data)
    if ret:
        return ret
    from tdxseam.kernel.kvm_tdx import kvm_tdx

    failed = True
    # profile "kernel": never hand off a TD whose build is half done (tdxseam's seed design)
    build_lock = kvm_tdx(k).build_lock
    guard_builds = k.profile.td_build_guard == "kernel" and "update-during-td-build" not in k.mutations
    gated = False
    hotplug = "no-hotplug-lock" not in k.mutations
    try:
        if guard_builds:
            if not build_lock.update_trylock():
                return -errno.EBUSY
            gated = True
        if k.profile.precheck_remaining:  # v4: refuse when the SEAMDB is full
            ret, info = seamldr_get_info(k)
            if ret:
                return ret
            if info.num_remaining_updates == 0:
                return -errno.ENOSPC
        if hotplug:
            k.cpu_hotplug_lock.read_lock()
        try:
            # v4: every CPU must be online (errno unconfirmed; dropped in v5)
            if k.profile.refuse_offline_cpus and len(k.machine.online_cpus()) != k.machine.ncpus:
                return -errno.EINVAL
            ctrl = UpdateCtrl(lock=RawSpinlock(k, "update_ctrl.lock"),
                              wq=WaitQueue(k.machine.sched, "update_ctrl"),
                              state=ModuleUpdateState.MODULE_UPDATE_SHUTDOWN,
                              num_cpus=len(k.machine.online_cpus()))
            k.kcsan.forget("update_ctrl")  # fresh control data: earlier accesses do not count
            k.last_update_ctrl = ctrl
            _changed(k)
            ret = stop_machine_cpuslocked(
                k, lambda p: do_seamldr_install_module(k, ctrl, p), params)
            failed = ret != 0
            return ret
        finally:
            if hotplug:
                k.cpu_hotplug_lock.read_unlock()
    finally:
        if gated and not (failed and "keep-build-gate" in k.mutations):
            build_lock.update_unlock()
        if not (failed and "leak-params" in k.mutations):
            free_seamldr_params(k, params)
