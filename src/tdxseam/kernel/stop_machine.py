"""stop_machine and the CPU-hotplug lock (kernel/stop_machine.c, kernel/cpu.c), as the update uses them.

`stop_machine_cpuslocked` runs a callback on every online CPU in a stopper thread: the stoppers
preempt whatever their CPU runs (at its next preemptible point), step together through
PREPARE -> DISABLE_IRQ -> RUN -> EXIT with every CPU acking every state, and keep interrupts off
from DISABLE_IRQ on. The caller sleeps until all stoppers are done.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING, Any

from tdxseam.kernel.locks import local_irq_disable, local_irq_restore
from tdxseam.platform.sched import WaitQueue

if TYPE_CHECKING:
    from tdxseam.kernel.kernel import Kernel

STOPPER_PRIORITY = 99  # above any ordinary task: a stopper preempts what its CPU runs


class MultiStop(IntEnum):
    NONE = 0
    PREPARE = 1
    DISABLE_IRQ = 2
    RUN = 3
    EXIT = 4


# upstream's names, bound once: the stoppers compare with them at every turn, and on Python 3.11 a
# member looked up on its enum class costs a Python-level hook (EnumType.__getattr__)
MULTI_STOP_NONE, MULTI_STOP_PREPARE, MULTI_STOP_DISABLE_IRQ, MULTI_STOP_RUN, MULTI_STOP_EXIT = MultiStop


@dataclass
class MultiStopData:
    fn: Callable[[Any], int]
    data: Any
    active: frozenset[int]
    num_threads: int
    wq: WaitQueue
    state: int = MultiStop.NONE
    thread_ack: int = 0
    done: int = 0
    ret: int = 0  # last non-zero result recorded, as cpu_stop_done does
    results: dict[int, int] = field(default_factory=dict)

    def set_state(self, state: int) -> None:
        self.thread_ack = self.num_threads
        self.state = state
        self.wq.notify_all()

    def ack_state(self) -> None:
        self.thread_ack -= 1
        if self.thread_ack == 0:
            self.set_state(self.state + 1)  # past EXIT nobody reads it


def multi_cpu_stop(k: Kernel, msdata: MultiStopData) -> int:
    cpu = k.this_cpu()
    flags = cpu.irq_enabled
    is_active = cpu.id in msdata.active
    curstate = MULTI_STOP_NONE
    err = 0
    while True:
        cpu.spin_until(msdata.wq, lambda: msdata.state != curstate, "stop_machine state")
        curstate = msdata.state
        if curstate == MULTI_STOP_DISABLE_IRQ:
            local_irq_disable(k)
        elif curstate == MULTI_STOP_RUN and is_active:
            err = msdata.fn(msdata.data)
        msdata.ack_state()
        if curstate == MULTI_STOP_EXIT:
            break
    local_irq_restore(k, flags)
    return err


def stop_machine_cpuslocked(k: Kernel, fn: Callable[[Any], int], data: Any,
                            cpus: list[int] | None = None) -> int:
    """Run `fn(data)` on `cpus` (default: every online CPU) with all online CPUs stopped."""
    m = k.machine
    online = [c for c in m.cpus if c.online]
    active = frozenset(cpus if cpus is not None else (c.id for c in online))
    msdata = MultiStopData(fn, data, active, len(online), WaitQueue(m.sched, "stop_machine"))
    msdata.set_state(MultiStop.PREPARE)
    m.emit("stop_machine", f"{len(online)} CPUs")

    def stopper() -> None:
        ret = multi_cpu_stop(k, msdata)
        msdata.results[k.smp_processor_id()] = ret
        if ret:
            msdata.ret = ret
        msdata.done += 1
        msdata.wq.notify_all()

    for c in online:
        m.sched.spawn(c, stopper, name=f"migration/{c.id}", priority=STOPPER_PRIORITY)
    k.this_cpu().sleep_until(msdata.wq, lambda: msdata.done == len(online), "stop_machine completion")
    return msdata.ret


class CpuHotplugLock:
    """cpus_read_lock(): while held, no CPU goes online or offline (a percpu rwsem, sleeping)."""

    def __init__(self, k: Kernel) -> None:
        self.k = k
        self.readers = 0
        self.writer = False
        self.wq = WaitQueue(k.machine.sched, "cpu_hotplug_lock")

    def read_lock(self) -> None:
        self.k.this_cpu().sleep_until(self.wq, lambda: not self.writer, "cpu_hotplug_lock (read)")
        self.readers += 1

    def read_unlock(self) -> None:
        self.readers -= 1
        self.wq.notify_all()

    def write_lock(self) -> None:
        self.k.this_cpu().sleep_until(self.wq, lambda: not self.writer and self.readers == 0,
                                      "cpu_hotplug_lock (write)")
        self.writer = True

    def write_unlock(self) -> None:
        self.writer = False
        self.wq.notify_all()
