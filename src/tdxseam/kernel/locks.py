"""Raw spinlocks, interrupt and preemption control, and a lock checker in the spirit of lockdep.

The checker watches every acquisition and reports, naming CPUs and call sites:
- a lock taken in hardirq context that is elsewhere held with interrupts enabled (lockdep's
  "inconsistent {IN-HARDIRQ-W} -> {HARDIRQ-ON-W} usage"): an interrupt on the holder's CPU whose
  handler takes the lock would spin forever;
- a CPU acquiring a lock it already holds ("possible recursive locking").
A schedule in which every CPU waits is detected by the scheduler itself (a deadlock ends the run).
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from typing import TYPE_CHECKING

from tdxseam.platform.cpu import Cpu
from tdxseam.platform.sched import Site, SpinWord, lazy_site

if TYPE_CHECKING:
    from tdxseam.kernel.kernel import Kernel


@dataclass
class LockReport:
    kind: str  # "irq-inversion" or "recursion"
    lock: str
    message: str

    def to_json(self) -> dict:
        return {"kind": self.kind, "lock": self.lock, "message": self.message}


class Lockdep:
    def __init__(self, k: Kernel) -> None:
        self.k = k
        self.reports: list[LockReport] = []
        self.held: dict[int, list[RawSpinlock]] = {}
        # the names of `held[cpu]`, kept with it: the race detector's lockset at every access
        self.held_names: dict[int, frozenset[str]] = {}

    def report(self, kind: str, lock: RawSpinlock, message: str) -> None:
        self.reports.append(LockReport(kind, lock.name, message))
        self.k.printk(40, f"lockdep: {message}")

    def held_by(self, cpu: Cpu) -> list[RawSpinlock]:
        return self.held.setdefault(cpu.id, [])

    def irqs_enabled_while_holding(self, cpu: Cpu, site: str) -> None:
        for lock in self.held_by(cpu):
            lock.note_hardirq_on(cpu, site)


_NO_LOCKS: frozenset[str] = frozenset()


class RawSpinlock:
    """A raw spinlock: never sleeps, disables preemption while held."""

    def __init__(self, k: Kernel, name: str) -> None:
        self.k = k
        self.name = name
        self.names = frozenset((name,))  # the lockset of a CPU holding only this lock
        self.word = SpinWord(k.machine.sched, name)
        self.holder: Cpu | None = None
        self.acquired_at = ""
        self.in_hardirq_use: str | None = None  # first site taking it in an interrupt handler
        self.hardirq_on_use: str | None = None  # first site holding it with interrupts enabled
        self._inversion_reported = False
        self.acquisitions = 0

    def __repr__(self) -> str:
        return f"<RawSpinlock {self.name}>"

    # ---- lockdep usage tracking -----------------------------------------------------------------

    def note_hardirq_on(self, cpu: Cpu, site: str) -> None:
        if self.hardirq_on_use is None:
            self.hardirq_on_use = f"cpu{cpu.id} at {site}"
        self._check_inversion()

    def note_in_hardirq(self, cpu: Cpu, site: str) -> None:
        if self.in_hardirq_use is None:
            self.in_hardirq_use = f"cpu{cpu.id} at {site}"
        self._check_inversion()

    def _check_inversion(self) -> None:
        if self._inversion_reported or not (self.in_hardirq_use and self.hardirq_on_use):
            return
        self._inversion_reported = True
        self.k.lockdep.report(
            "irq-inversion", self,
            f"inconsistent {{IN-HARDIRQ-W}} -> {{HARDIRQ-ON-W}} usage of {self.name}: "
            f"taken in hardirq context by {self.in_hardirq_use}, "
            f"held with interrupts enabled by {self.hardirq_on_use}",
        )


# ---- interrupt and preemption control --------------------------------------------------------------

def preempt_disable(k: Kernel) -> None:
    k.this_cpu().preempt_count += 1


def preempt_enable(k: Kernel) -> None:
    cpu = k.this_cpu()
    cpu.preempt_count -= 1
    assert cpu.preempt_count >= 0, "preempt_count underflow"


def local_irq_save(k: Kernel) -> bool:
    cpu = k.this_cpu()
    flags = cpu.irq_enabled
    cpu.irq_enabled = False
    return flags


def local_irq_disable(k: Kernel) -> None:
    k.this_cpu().irq_enabled = False


def local_irq_enable(k: Kernel, site: str | None = None) -> None:
    """Turn interrupts on; pending ones are taken here (an interrupt-enable point)."""
    cpu = k.this_cpu()
    if cpu.irq_enabled:
        return
    cpu.irq_enabled = True
    if k.lockdep.held_by(cpu):
        k.lockdep.irqs_enabled_while_holding(cpu, site or lazy_site())
    cpu.preempt_point()


def local_irq_restore(k: Kernel, flags: bool) -> None:
    if flags:
        local_irq_enable(k, lazy_site())
    else:
        k.this_cpu().irq_enabled = False


# ---- spinlocks ------------------------------------------------------------------------------

def raw_spin_lock(lock: RawSpinlock, site: str | None = None) -> None:
    k = lock.k
    cpu = k.this_cpu()
    if site is None:  # lazy_site(), written out: every acquisition notes where it was made
        f = sys._getframe(1)
        site = Site(f.f_code, f.f_lasti)
    cpu.preempt_count += 1  # preempt_disable()
    cpu.preempt_point()
    if lock.holder is cpu:
        k.lockdep.report(
            "recursion", lock,
            f"possible recursive locking of {lock.name} on cpu{cpu.id}: already held "
            f"(acquired at {lock.acquired_at}), trying again at {site}",
        )
    if cpu.irq_depth:  # in hardirq
        lock.note_in_hardirq(cpu, site)
    elif cpu.irq_enabled and (lock.hardirq_on_use is None or lock.in_hardirq_use is not None):
        lock.note_hardirq_on(cpu, site)  # (with both uses known and nothing new, a no-op)
    if lock.word.owner is not None and k.machine.tracing:
        k.machine.emit("lock-spin", lock.name)  # held elsewhere: this CPU spins until "lock"
    cpu.spin_acquire(lock.word, lock.name, site)
    lock.holder = cpu
    lock.acquired_at = site
    lock.acquisitions += 1
    held = k.lockdep.held_by(cpu)
    held.append(lock)
    k.lockdep.held_names[cpu.id] = lock.names if len(held) == 1 else frozenset([h.name for h in held])
    if k.machine.sched.trace.enabled:  # `emit`'s own test, made here: every acquisition passes it
        k.machine.emit("lock", lock.name)


def raw_spin_unlock(lock: RawSpinlock) -> None:
    k = lock.k
    cpu = k.this_cpu()
    if lock.holder is not cpu:
        raise RuntimeError(f"cpu{cpu.id} releases {lock.name} held by {lock.holder}")
    held = k.lockdep.held_by(cpu)
    held.remove(lock)
    k.lockdep.held_names[cpu.id] = frozenset([h.name for h in held]) if held else _NO_LOCKS
    lock.holder = None
    lock.word.release()
    if k.machine.sched.trace.enabled:  # (as in raw_spin_lock)
        k.machine.emit("unlock", lock.name)
    cpu.preempt_count -= 1  # preempt_enable()
    assert cpu.preempt_count >= 0, "preempt_count underflow"
    cpu.preempt_point()


def raw_spin_lock_irqsave(lock: RawSpinlock, site: str | None = None) -> bool:
    """Save the interrupt flag, disable interrupts, take the lock; returns the saved flag."""
    flags = local_irq_save(lock.k)
    raw_spin_lock(lock, site or lazy_site())
    return flags


def raw_spin_unlock_irqrestore(lock: RawSpinlock, flags: bool) -> None:
    raw_spin_unlock(lock)
    local_irq_restore(lock.k, flags)
