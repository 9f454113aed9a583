"""CPU hotplug (kernel/cpu.c, much reduced): taking a CPU offline and bringing it back.

Both operations hold `cpu_hotplug_lock` for write for their whole length, so they wait for every
reader (`cpus_read_lock()`, which the module update holds around its stop_machine) and no reader
gets in while the online set changes. The update relies on that: it counts the online CPUs for its
lockstep, runs SEAMLDR.INSTALL on exactly those, and must not meet a CPU that comes or goes
meanwhile (the `no-hotplug-lock` mutation drops the update's read side to show what happens).

The hotplug state machine's callbacks run on the CPU concerned, in its `cpuhp/N` thread:
- going down, the CPU leaves `cpu_online_mask` (set_cpu_online(cpu, false));
- coming up, it enters the mask, then the online callbacks run on it with interrupts off; the one
  that matters here is KVM's TDX callback (`tdx_online_cpu` -> `tdx_cpu_enable`), which runs
  TDH.SYS.LP.INIT on a CPU that has not done it for the running module. If that fails, the CPU
  is rolled back offline and the error returned, as a failing cpuhp callback does.
- going down, TDX's teardown callback (`tdx_offline_cpu`) refuses (-EBUSY) to take the last
  online CPU of a package while TDX KeyIDs are in use: reclaiming a KeyID needs
  TDH.PHYMEM.PAGE.WBINVD on every package.
CPU 0 (the boot CPU, the update's lead) is never taken offline.
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from tdxseam.kernel.locks import local_irq_restore, local_irq_save
from tdxseam.kernel.stop_machine import STOPPER_PRIORITY
from tdxseam.platform.sched import WaitQueue

if TYPE_CHECKING:
    from tdxseam.kernel.kernel import Kernel

PR_FMT = "cpuhp: "


def _run_on(k: Kernel, cpu_id: int, fn, what: str) -> int:
    """Run `fn()` in cpu_id's hotplug thread and sleep until it returns its result."""
    m = k.machine
    box: list[int] = []
    wq = WaitQueue(m.sched, f"cpuhp/{cpu_id}")

    def thread() -> None:
        box.append(fn())
        wq.notify_all()

    m.sched.spawn(m.cpus[cpu_id], thread, name=f"cpuhp/{cpu_id}", priority=STOPPER_PRIORITY)
    k.this_cpu().sleep_until(wq, lambda: bool(box), what)
    return box[0]


def tdx_offline_cpu(k: Kernel, cpu_id: int) -> int:
    """TDX's cpuhp teardown callback: 0, or -EBUSY for the last online CPU of a package while
    any TDX KeyID is in use."""
    from tdxseam.kernel.kvm_tdx import kvm_tdx

    if not kvm_tdx(k).keyids:
        return 0  # no TD: any CPU may go
    m = k.machine
    pkg = m.package_of(cpu_id)
    if any(c.id != cpu_id and m.package_of(c.id) == pkg for c in m.online_cpus()):
        return 0
    k.pr_info("virt/tdx: ", f"TDX requires all packages to have an online CPU (cpu{cpu_id} is the last of "
           f"package {pkg}). Delete all TDs in order to offline all CPUs of a package.")
    return -errno.EBUSY


def _migrate_tasks_away(k: Kernel, cpu_id: int) -> None:
    """The tasks of a CPU going offline move to an online CPU of its package (else any online
    CPU); its own per-CPU threads (cpuhp, stoppers, interrupt entries) stay."""
    m = k.machine
    cpu = m.cpus[cpu_id]
    pkg = m.package_of(cpu_id)
    online = m.online_cpus()
    target = next((c for c in online if m.package_of(c.id) == pkg), online[0])
    me = m.sched.current
    for t in list(cpu.runqueue):
        if t is me or t.done or t.name.endswith(f"/{cpu_id}") or t.name.endswith(f"-cpu{cpu_id}"):
            continue
        m.sched.migrate(t, target)
        k.cpuhp_migrations = getattr(k, "cpuhp_migrations", 0) + 1
        m.emit("migrate", f"{t.name} -> cpu{target.id}")


def cpu_down(k: Kernel, cpu_id: int) -> int:
    """Take `cpu_id` offline (device_offline). 0, or -EBUSY for the boot CPU or the last CPU of a
    package while TDs hold KeyIDs, -EINVAL if no such CPU."""
    m = k.machine
    if not 0 <= cpu_id < m.ncpus:
        return -errno.EINVAL
    if cpu_id == 0:
        return -errno.EBUSY
    k.cpu_hotplug_lock.write_lock()
    try:
        cpu = m.cpus[cpu_id]
        if not cpu.online:
            return 0

        def teardown() -> int:
            ret = tdx_offline_cpu(k, cpu_id)
            if ret:
                return ret  # a failing teardown callback leaves the CPU online
            flags = local_irq_save(k)
            try:
                m.set_cpu_online(cpu, False)
                m.emit("cpu-offline", f"cpu{cpu_id}")
                _migrate_tasks_away(k, cpu_id)
            finally:
                local_irq_restore(k, flags)
            return 0

        return _run_on(k, cpu_id, teardown, "cpu_down completion")
    finally:
        k.cpu_hotplug_lock.write_unlock()


def tdx_online_cpu(k: Kernel) -> int:
    """KVM's cpuhp online callback for TDX: make this CPU usable for TDX (interrupts off)."""
    from tdxseam.kernel.tdx import tdx_cpu_enable

    flags = local_irq_save(k)
    try:
        return tdx_cpu_enable(k)
    finally:
        local_irq_restore(k, flags)


def cpu_up(k: Kernel, cpu_id: int) -> int:
    """Bring `cpu_id` online (device_online). 0, or the error of a failed online callback."""
    m = k.machine
    if not 0 <= cpu_id < m.ncpus:
        return -errno.EINVAL
    k.cpu_hotplug_lock.write_lock()
    try:
        cpu = m.cpus[cpu_id]
        if cpu.online:
            return 0

        def bringup() -> int:
            m.set_cpu_online(cpu, True)
            m.emit("cpu-online", f"cpu{cpu_id}")
            ret = tdx_online_cpu(k)
            if ret:
                m.set_cpu_online(cpu, False)  # a failed online callback rolls the CPU back down
                m.emit("cpu-offline", f"cpu{cpu_id} (online callback failed: {ret})")
            return ret

        ret = _run_on(k, cpu_id, bringup, "cpu_up completion")
        if ret:
            k.pr_err(PR_FMT, f"cpu{cpu_id}: TDX online callback failed: {ret}")
        return ret
    finally:
        k.cpu_hotplug_lock.write_unlock()
