"""Raw spinlocks, irqsave, and the lock checker's reports (irq inversion, recursion)."""

from __future__ import annotations

import faulthandler

import pytest

from tdxseam.kernel.kernel import Kernel
from tdxseam.kernel.locks import (
    RawSpinlock,
    local_irq_disable,
    local_irq_enable,
    local_irq_restore,
    local_irq_save,
    raw_spin_lock,
    raw_spin_lock_irqsave,
    raw_spin_unlock,
    raw_spin_unlock_irqrestore,
)
from tdxseam.platform.machine import Machine
from tdxseam.platform.sched import WaitQueue


@pytest.fixture(autouse=True)
def no_hang():
    faulthandler.dump_traceback_later(60, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def make(ncpus: int = 2, seed: int = 0) -> tuple[Machine, Kernel, RawSpinlock]:
    m = Machine(ncpus, seed=seed)
    k = Kernel(m)
    return m, k, RawSpinlock(k, "test_lock")


# ---- irqsave -----------------------------------------------------------------------------------


def test_irqsave_disables_and_restores_if():
    m, k, lock = make(1)
    seen = []

    def body():
        cpu = m.cpus[0]
        seen.append(("before", cpu.irq_enabled, cpu.preempt_count))
        flags = raw_spin_lock_irqsave(lock)
        seen.append(("held", cpu.irq_enabled, cpu.preempt_count, flags, lock.holder is cpu))
        raw_spin_unlock_irqrestore(lock, flags)
        seen.append(("after", cpu.irq_enabled, cpu.preempt_count, lock.holder))

    m.sched.spawn(m.cpus[0], body)
    assert m.sched.run() is None
    assert seen == [("before", True, 0), ("held", False, 1, True, True), ("after", True, 0, None)]
    assert lock.acquisitions == 1


def test_irqsave_with_irqs_already_off_leaves_them_off():
    m, k, lock = make(1)
    seen = []

    def body():
        cpu = m.cpus[0]
        local_irq_disable(k)
        flags = raw_spin_lock_irqsave(lock)
        raw_spin_unlock_irqrestore(lock, flags)
        seen.append((flags, cpu.irq_enabled))
        outer = local_irq_save(k)
        local_irq_restore(k, outer)
        seen.append((outer, cpu.irq_enabled))

    m.sched.spawn(m.cpus[0], body)
    m.sched.run()
    assert seen == [(False, False), (False, False)]


def test_local_irq_enable_delivers_pending_interrupts_there():
    m, k, _lock = make(1)
    log = []

    def body():
        cpu = m.cpus[0]
        flags = local_irq_save(k)
        m.irq.raise_irq(cpu, lambda: log.append(("handler", cpu.irq_enabled, cpu.irq_depth)))
        cpu.preempt_point()
        log.append("still off")
        local_irq_restore(k, flags)
        log.append("restored")

    m.sched.spawn(m.cpus[0], body)
    m.sched.run()
    assert log == ["still off", ("handler", False, 1), "restored"]


def test_irq_raised_while_irqsave_lock_held_runs_after_unlock():
    m, k, lock = make(2, seed=3)
    log = []

    def handler():
        log.append(("handler", lock.holder))

    def holder():
        cpu = m.cpus[0]
        flags = raw_spin_lock_irqsave(lock)
        m.irq.raise_irq(cpu, handler)
        for _ in range(5):
            cpu.preempt_point()
        log.append("unlocking")
        raw_spin_unlock_irqrestore(lock, flags)
        log.append("done")

    m.sched.spawn(m.cpus[0], holder)
    assert m.sched.run() is None
    assert log == ["unlocking", ("handler", None), "done"]
    assert k.lockdep.reports == []


# ---- mutual exclusion --------------------------------------------------------------------------------


def test_lock_gives_mutual_exclusion():
    m, k, lock = make(8, seed=4)
    inside = [0]
    peak = [0]

    def body():
        cpu = m.current_cpu()
        for _ in range(20):
            flags = raw_spin_lock_irqsave(lock)
            inside[0] += 1
            peak[0] = max(peak[0], inside[0])
            cpu.preempt_point()
            cpu.preempt_point()
            inside[0] -= 1
            raw_spin_unlock_irqrestore(lock, flags)

    for c in m.cpus:
        m.sched.spawn(c, body)
    assert m.sched.run() is None
    assert peak[0] == 1
    assert lock.acquisitions == 160
    assert k.lockdep.reports == []


def test_unlock_by_a_non_holder_is_an_error():
    m, k, lock = make(2, seed=1)
    q = WaitQueue(m.sched, "held")
    st = {"held": False}

    def holder():
        raw_spin_lock(lock)
        st["held"] = True
        q.notify_all()
        m.cpus[0].spin_until(q, lambda: False, "forever")

    def thief():
        m.cpus[1].spin_until(q, lambda: st["held"], "held")
        raw_spin_unlock(lock)

    m.sched.spawn(m.cpus[0], holder)
    m.sched.spawn(m.cpus[1], thief)
    m.sched.run()
    assert len(m.sched.errors) == 1
    assert "cpu1 releases test_lock held by" in str(m.sched.errors[0][1])


# ---- the lock checker ------------------------------------------------------------------------------


def task_takes_lock_irqs_on(k, lock):
    raw_spin_lock(lock)  # interrupts left on while held
    raw_spin_unlock(lock)


def handler_takes_lock(k, lock):
    flags = raw_spin_lock_irqsave(lock)
    raw_spin_unlock_irqrestore(lock, flags)


def task_takes_lock_irqsave(k, lock):
    flags = raw_spin_lock_irqsave(lock)
    raw_spin_unlock_irqrestore(lock, flags)


def _irq_and_task_use(task_fn, seed: int = 2):
    """cpu0 takes the lock in task context via `task_fn`, then cpu1 takes it in an irq handler."""
    m, k, lock = make(2, seed=seed)
    q = WaitQueue(m.sched, "step")
    st = {"task_done": False}

    def cpu0():
        task_fn(k, lock)
        st["task_done"] = True
        q.notify_all()

    def cpu1():
        cpu = m.cpus[1]
        cpu.spin_until(q, lambda: st["task_done"], "task done")
        m.irq.raise_irq(cpu, handler_takes_lock, k, lock)
        cpu.preempt_point()

    m.sched.spawn(m.cpus[0], cpu0)
    m.sched.spawn(m.cpus[1], cpu1)
    dl = m.sched.run()
    return m, k, lock, dl


def test_irq_inversion_reported_naming_cpus_and_sites():
    m, k, lock, dl = _irq_and_task_use(task_takes_lock_irqs_on)
    assert dl is None
    assert [r.kind for r in k.lockdep.reports] == ["irq-inversion"]
    r = k.lockdep.reports[0]
    assert r.lock == "test_lock"
    assert r.message.startswith("inconsistent {IN-HARDIRQ-W} -> {HARDIRQ-ON-W} usage of test_lock: ")
    assert "taken in hardirq context by cpu1 at test_kernel_locks.py:" in r.message
    assert "(handler_takes_lock)" in r.message
    assert "held with interrupts enabled by cpu0 at test_kernel_locks.py:" in r.message
    assert "(task_takes_lock_irqs_on)" in r.message
    # printed to the kernel log too
    assert [line.text for line in k.dmesg] == [f"lockdep: {r.message}"]
    assert r.to_json() == {"kind": "irq-inversion", "lock": "test_lock", "message": r.message}


def test_no_report_for_the_correct_irqsave_pattern():
    m, k, lock, dl = _irq_and_task_use(task_takes_lock_irqsave)
    assert dl is None
    assert k.lockdep.reports == []
    assert lock.in_hardirq_use is not None and lock.hardirq_on_use is None
    assert k.dmesg == []


def test_irq_inversion_reported_once():
    m, k, lock = make(1)

    def body():
        for _ in range(3):
            task_takes_lock_irqs_on(k, lock)
            m.irq.raise_irq(m.cpus[0], handler_takes_lock, k, lock)
            m.cpus[0].preempt_point()

    m.sched.spawn(m.cpus[0], body)
    assert m.sched.run() is None
    assert [r.kind for r in k.lockdep.reports] == ["irq-inversion"]


def enable_irqs_while_holding(k, lock):
    local_irq_disable(k)
    raw_spin_lock(lock)
    local_irq_enable(k)  # turns interrupts on with the lock held
    local_irq_disable(k)
    raw_spin_unlock(lock)
    local_irq_enable(k)


def test_enabling_irqs_while_holding_counts_as_hardirq_on_use():
    m, k, lock, dl = _irq_and_task_use(enable_irqs_while_holding)
    assert dl is None
    assert [r.kind for r in k.lockdep.reports] == ["irq-inversion"]
    assert "held with interrupts enabled by cpu0 at test_kernel_locks.py:" in k.lockdep.reports[0].message
    assert "(enable_irqs_while_holding)" in k.lockdep.reports[0].message


def take_twice(k, lock):
    flags = raw_spin_lock_irqsave(lock)
    raw_spin_lock(lock)  # recursion: spins on itself forever
    raw_spin_unlock_irqrestore(lock, flags)


def test_recursion_reported_and_the_self_deadlock_ends_the_run():
    m, k, lock = make(2, seed=1)
    m.sched.spawn(m.cpus[1], take_twice, k, lock)
    dl = m.sched.run()
    assert [r.kind for r in k.lockdep.reports] == ["recursion"]
    msg = k.lockdep.reports[0].message
    assert msg.startswith("possible recursive locking of test_lock on cpu1: already held (acquired at ")
    assert msg.count("(take_twice)") == 2 and "trying again at test_kernel_locks.py:" in msg
    assert dl is not None
    assert [(w.cpu, w.what, w.holder) for w in dl.waiting] == [(1, "test_lock", 1)]
    assert "cpu1 waits for test_lock (held by itself)" in dl.describe()


def test_irq_handler_on_the_holding_cpu_without_irqsave_deadlocks():
    """The hazard irqsave exists for: an interrupt on the holder whose handler takes the lock."""
    m, k, lock = make(2, seed=5)
    log = []

    def holder():
        cpu = m.cpus[0]
        raw_spin_lock(lock)  # no irqsave
        m.irq.raise_irq(cpu, handler_takes_lock, k, lock)
        cpu.preempt_point()  # interrupts on: the handler runs here, and spins on our lock
        log.append("never")
        raw_spin_unlock(lock)

    m.sched.spawn(m.cpus[0], holder)
    dl = m.sched.run()
    assert log == []
    assert dl is not None
    assert [(w.cpu, w.holder) for w in dl.waiting] == [(0, 0)]
    kinds = sorted(r.kind for r in k.lockdep.reports)
    assert kinds == ["irq-inversion", "recursion"]
    rec = next(r for r in k.lockdep.reports if r.kind == "recursion")
    assert "on cpu0" in rec.message and "(holder)" in rec.message and "(handler_takes_lock)" in rec.message


def test_same_pattern_with_irqsave_is_safe():
    m, k, lock = make(2, seed=5)
    log = []

    def holder():
        cpu = m.cpus[0]
        flags = raw_spin_lock_irqsave(lock)
        m.irq.raise_irq(cpu, handler_takes_lock, k, lock)
        cpu.preempt_point()
        log.append("unlocking")
        raw_spin_unlock_irqrestore(lock, flags)
        log.append("done")

    m.sched.spawn(m.cpus[0], holder)
    assert m.sched.run() is None
    assert log == ["unlocking", "done"]
    assert k.lockdep.reports == []
    assert lock.acquisitions == 2


def test_held_locks_tracked_per_cpu():
    m, k, lock = make(2)
    other = RawSpinlock(k, "other")
    seen = []

    def body():
        cpu = m.cpus[1]
        flags = raw_spin_lock_irqsave(lock)
        raw_spin_lock(other)
        seen.append([lk.name for lk in k.lockdep.held_by(cpu)])
        seen.append([lk.name for lk in k.lockdep.held_by(m.cpus[0])])
        raw_spin_unlock(other)
        raw_spin_unlock_irqrestore(lock, flags)
        seen.append([lk.name for lk in k.lockdep.held_by(cpu)])

    m.sched.spawn(m.cpus[1], body)
    m.sched.run()
    assert seen == [["test_lock", "other"], [], []]
