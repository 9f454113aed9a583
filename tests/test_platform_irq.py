"""Interrupt delivery: a handler raised for a CPU runs on that CPU where its interrupts are on."""

from __future__ import annotations

import faulthandler

import pytest

from tdxseam.platform.machine import Machine
from tdxseam.platform.sched import SpinWord, WaitQueue


@pytest.fixture(autouse=True)
def no_hang():
    faulthandler.dump_traceback_later(60, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def _handler_record(m: Machine, log: list, tag: str):
    def handler():
        cpu = m.current_cpu()
        log.append((tag, cpu.id, cpu.irq_enabled, cpu.irq_depth))
    return handler


def test_irq_pending_while_if_clear_and_delivered_when_enabled():
    m = Machine(2, seed=3, trace=True)
    q = WaitQueue(m.sched, "raised")
    raised = [False]
    log: list = []

    def target():
        cpu = m.cpus[1]
        cpu.irq_enabled = False
        cpu.spin_until(q, lambda: raised[0], "raised")
        for _ in range(20):
            cpu.preempt_point()  # preemption points with IF=0 do not deliver
        log.append(("still pending", len(cpu.pending_irqs)))
        cpu.irq_enabled = True
        log.append("enabled")
        cpu.preempt_point()  # the first point with IF=1 delivers
        log.append("after")

    def raiser():
        m.irq.raise_irq(m.cpus[1], _handler_record(m, log, "h"), name="test-irq")
        raised[0] = True
        q.notify_all()

    m.sched.spawn(m.cpus[1], target)
    m.sched.spawn(m.cpus[0], raiser)
    assert m.sched.run() is None
    assert log == [("still pending", 1), "enabled", ("h", 1, False, 1), "after"]
    assert m.irq.raised == 1 and m.irq.delivered == 1
    assert m.cpus[1].irq_enabled is True and m.cpus[1].irq_depth == 0
    kinds = [(e[1], e[2], e[3]) for e in m.sched.trace.events if e[2].startswith("irq-")]
    # irq-raise is recorded against the target CPU
    assert kinds == [(1, "irq-raise", "test-irq"), (1, "irq-enter", "test-irq"), (1, "irq-exit", "test-irq")]


def test_self_raised_irq_delivered_at_next_point_with_if_set():
    m = Machine(1, seed=0)
    log: list = []

    def body():
        cpu = m.cpus[0]
        m.irq.raise_irq(cpu, _handler_record(m, log, "self"))
        log.append("raised")
        cpu.preempt_point()
        log.append("after point")

    m.sched.spawn(m.cpus[0], body)
    m.sched.run()
    assert log == ["raised", ("self", 0, False, 1), "after point"]


def test_handler_runs_on_the_target_cpu_not_the_raiser():
    m = Machine(4, seed=8)
    log: list = []
    q = WaitQueue(m.sched, "handled")

    def handler(target):
        cpu = m.current_cpu()
        log.append((target, cpu.id, cpu.irq_enabled, cpu.irq_depth))
        q.notify_all()

    def busy(cpu):
        # IF=1: the CPU takes interrupts while it waits for all three handlers
        cpu.spin_until(q, lambda: len(log) == 3, "three handlers")

    def raiser():
        for target in (1, 2, 3):
            m.irq.raise_irq(m.cpus[target], handler, target)
            m.cpus[0].preempt_point()

    for c in m.cpus[1:]:
        m.sched.spawn(c, busy, c)
    m.sched.spawn(m.cpus[0], raiser)
    assert m.sched.run() is None
    assert sorted(log) == [(1, 1, False, 1), (2, 2, False, 1), (3, 3, False, 1)]


def test_idle_cpu_is_woken_by_an_ipi():
    m = Machine(2, seed=1, trace=True)
    log: list = []

    def raiser():
        assert m.cpus[1].task is None  # cpu1 runs nothing: it is idle
        m.irq.raise_irq(m.cpus[1], _handler_record(m, log, "ipi"), name="ipi")

    m.sched.spawn(m.cpus[0], raiser)
    assert m.sched.run() is None
    assert log == [("ipi", 1, False, 1)]
    assert m.irq.delivered == 1
    assert not m.cpus[1].pending_irqs
    assert m.cpus[1].irq_enabled and m.cpus[1].irq_depth == 0


def test_idle_cpu_with_interrupts_off_keeps_the_irq_pending():
    m = Machine(2, seed=1)
    m.cpus[1].irq_enabled = False
    log: list = []
    m.sched.spawn(m.cpus[0], lambda: m.irq.raise_irq(m.cpus[1], _handler_record(m, log, "x")))
    assert m.sched.run() is None
    assert log == []
    assert len(m.cpus[1].pending_irqs) == 1


@pytest.mark.parametrize("irqs_on", [True, False])
def test_cpu_spinning_on_a_variable_takes_an_interrupt_only_with_if_set(irqs_on):
    """cpu1 spins on a flag only its own interrupt handler sets."""
    m = Machine(2, seed=4)
    q = WaitQueue(m.sched, "flag")
    flag = [False]
    log: list = []

    def handler():
        cpu = m.current_cpu()
        log.append((cpu.id, cpu.irq_depth))
        flag[0] = True  # no notify: the spinner re-checks after its handler returns

    def spinner():
        cpu = m.cpus[1]
        cpu.irq_enabled = irqs_on
        cpu.spin_until(q, lambda: flag[0], "flag set by irq", "spin-site")
        log.append("spinner done")

    def raiser():
        cpu = m.cpus[0]
        while not m.cpus[1].task or m.cpus[1].task.waiting_on is None:
            cpu.preempt_point()  # wait until cpu1 is parked in its spin
        m.irq.raise_irq(m.cpus[1], handler)

    m.sched.spawn(m.cpus[1], spinner)
    m.sched.spawn(m.cpus[0], raiser)
    dl = m.sched.run()
    if irqs_on:
        assert dl is None
        assert log == [(1, 1), "spinner done"]
    else:
        assert dl is not None
        assert [(w.cpu, w.what, w.site) for w in dl.waiting] == [(1, "flag set by irq", "spin-site")]
        assert log == []


@pytest.mark.parametrize("irqs_on", [True, False])
def test_cpu_spinning_on_a_lock_takes_an_interrupt_only_with_if_set(irqs_on):
    """cpu0 holds a lock until cpu1's handler has run; cpu1 is spinning on that lock."""
    m = Machine(2, seed=6)
    w = SpinWord(m.sched, "L")
    q = WaitQueue(m.sched, "handled")
    handled = [False]
    log: list = []

    def handler():
        log.append(("handler", m.current_cpu().id, w.owner is not None))
        handled[0] = True
        q.notify_all()

    def holder():
        cpu = m.cpus[0]
        while not w.waiters:
            cpu.preempt_point()
        m.irq.raise_irq(m.cpus[1], handler)
        cpu.spin_until(q, lambda: handled[0], "handler ran", "holder-site")
        w.release()
        log.append("released")

    def spinner():
        cpu = m.cpus[1]
        cpu.irq_enabled = irqs_on
        cpu.spin_acquire(w, "L", "spinner-site")
        log.append("acquired")
        w.release()

    assert w.try_acquire(m.sched.spawn(m.cpus[0], holder))
    m.sched.spawn(m.cpus[1], spinner)
    dl = m.sched.run()
    if irqs_on:
        assert dl is None
        assert log[0] == ("handler", 1, True)  # ran on cpu1 while it spun on the held lock
        assert sorted(log[1:]) == ["acquired", "released"]
    else:
        assert dl is not None
        waits = {x.cpu: (x.what, x.site, x.holder) for x in dl.waiting}
        assert waits == {0: ("handler ran", "holder-site", None), 1: ("L", "spinner-site", 0)}


def test_handlers_do_not_nest_a_second_irq_waits_for_the_first():
    m = Machine(2, seed=2)
    q = WaitQueue(m.sched, "irq-sync")
    st = {"in_h1": False, "h2_raised": False}
    log: list = []

    def h2():
        log.append(("h2", m.current_cpu().irq_depth))

    def h1():
        cpu = m.current_cpu()
        log.append(("h1 start", cpu.irq_depth))
        st["in_h1"] = True
        q.notify_all()
        cpu.spin_until(q, lambda: st["h2_raised"], "h2 raised")
        log.append(("h1 end", cpu.irq_depth))

    def cpu1_body():
        cpu = m.cpus[1]
        m.irq.raise_irq(cpu, h1)
        cpu.preempt_point()
        log.append("cpu1 task continues")

    def cpu0_body():
        cpu = m.cpus[0]
        cpu.spin_until(q, lambda: st["in_h1"], "in h1")
        m.irq.raise_irq(m.cpus[1], h2)
        st["h2_raised"] = True
        q.notify_all()

    m.sched.spawn(m.cpus[1], cpu1_body)
    m.sched.spawn(m.cpus[0], cpu0_body)
    assert m.sched.run() is None
    assert log == [("h1 start", 1), ("h1 end", 1), ("h2", 1), "cpu1 task continues"]
    assert m.irq.delivered == 2


def test_handler_args_are_passed():
    m = Machine(1, seed=0)
    got = []
    m.sched.spawn(m.cpus[0], lambda: (m.irq.raise_irq(m.cpus[0], lambda a, b: got.append((a, b)), 1, "x"),
                                      m.cpus[0].preempt_point()))
    m.sched.run()
    assert got == [(1, "x")]


def test_seamcall_exit_delivers_pending_interrupts():
    """SEAMCALL exit is a point where a CPU with IF=1 takes its pending interrupts."""
    from tdxseam.platform.cpu import Regs, SeamcallEnd

    m = Machine(1, seed=0)
    log: list = []

    class FakeSeam:
        def seamcall(self, cpu, regs):
            m.irq.raise_irq(cpu, lambda: log.append("handler"))
            log.append("inside")
            return SeamcallEnd.SEAMRET

    m.seam = FakeSeam()

    def body():
        end = m.cpus[0].seamcall(Regs(rax=34))
        log.append(end)

    m.sched.spawn(m.cpus[0], body)
    m.sched.run()
    assert log == ["inside", "handler", SeamcallEnd.SEAMRET]


# ---- interrupts already pending when a CPU starts to wait ---------------------------------------------


def _pending_before_wait(kind: str):
    """An irq is pending on cpu1 before its task runs; the task's first act is to wait for what
    only that handler provides. With IF=1 the wait must take the interrupt, not park over it."""
    m = Machine(2, seed=1)
    q = WaitQueue(m.sched, "handled")
    w = SpinWord(m.sched, "L")
    st = {"handled": False}
    log: list = []

    def handler():
        log.append(("handler", m.current_cpu().id))
        st["handled"] = True
        q.notify_all()

    def waiter():
        cpu = m.cpus[1]
        if kind == "spin_until":
            cpu.spin_until(q, lambda: st["handled"], "handled")
        elif kind == "sleep_until":
            cpu.sleep_until(q, lambda: st["handled"], "handled")
        else:
            cpu.spin_acquire(w, "L", "waiter")
            w.release()
        log.append("waiter done")

    def holder():
        m.cpus[0].spin_until(q, lambda: st["handled"], "handled")
        w.release()

    m.sched.spawn(m.cpus[1], waiter)
    assert w.try_acquire(m.sched.spawn(m.cpus[0], holder))
    m.irq.raise_irq(m.cpus[1], handler)  # before the run: cpu1's task has not started yet
    assert len(m.cpus[1].pending_irqs) == 1
    return m.sched.run(), log


@pytest.mark.parametrize("kind", ["spin_until", "sleep_until", "spin_acquire"])
def test_interrupt_pending_before_a_wait_is_taken(kind):
    dl, log = _pending_before_wait(kind)
    assert dl is None, dl.describe()
    assert log == [("handler", 1), "waiter done"]
