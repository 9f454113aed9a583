"""The deterministic scheduler: seeded choices, parked spinners, deadlocks, budgets, errors, sleeping."""

from __future__ import annotations

import faulthandler

import pytest

from tdxseam.platform.machine import MAX_CPUS, Machine
from tdxseam.platform.sched import (
    Deadlock,
    SchedulerError,
    SpinWord,
    StepBudgetExceeded,
    WaitQueue,
)
from tdxseam.platform.trace import Trace


@pytest.fixture(autouse=True)
def no_hang():
    """A run that should end by itself must not hang the suite: dump and exit after 60 s."""
    faulthandler.dump_traceback_later(60, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def _interleave(seed: int, ncpus: int = 8, rounds: int = 25) -> tuple[list[int], list[int], str]:
    """Every CPU appends its id and preempts, `rounds` times. Returns (choices, order, digest)."""
    m = Machine(ncpus, seed=seed, trace=False)
    order: list[int] = []

    def work(cpu):
        for _ in range(rounds):
            order.append(cpu.id)
            cpu.preempt_point()

    for c in m.cpus:
        m.sched.spawn(c, work, c)
    assert m.sched.run() is None
    assert len(m.sched.choices) == m.sched.steps
    return list(m.sched.choices), order, m.sched.schedule_digest()


# ---- determinism ------------------------------------------------------------------------------


def test_same_seed_same_choices_and_order():
    a = _interleave(11)
    b = _interleave(11)
    assert a == b
    choices, order, _ = a
    assert len(order) == 8 * 25
    # every CPU did all its rounds, in an order that really interleaves CPUs
    assert sorted(order) == sorted(list(range(8)) * 25)
    assert order != sorted(order)


def test_different_seeds_give_different_interleavings():
    runs = {seed: _interleave(seed) for seed in range(1, 7)}
    digests = {r[2] for r in runs.values()}
    orders = {tuple(r[1]) for r in runs.values()}
    assert len(digests) == 6
    assert len(orders) == 6


def test_schedule_digest_is_a_function_of_choices():
    m1 = Machine(2, seed=3, trace=False)
    m2 = Machine(2, seed=3, trace=False)
    for m in (m1, m2):
        for c in m.cpus:
            m.sched.spawn(c, lambda c=c: [c.preempt_point() for _ in range(5)])
        m.sched.run()
    assert m1.sched.schedule_digest() == m2.sched.schedule_digest()
    assert len(m1.sched.schedule_digest()) == 16
    m2.sched.choices.append(0)
    assert m1.sched.schedule_digest() != m2.sched.schedule_digest()


# ---- parked spinners cost no steps ---------------------------------------------------------------

HOLD = 40


def _spin_on_held_lock(n: int, seed: int = 7) -> dict:
    """cpu0 holds a lock word while `n` CPUs spin on it, preempts HOLD times, then releases."""
    m = Machine(n + 1, seed=seed, trace=False)
    sched = m.sched
    w = SpinWord(sched, "L")
    marks: dict = {"acquired": []}

    def holder():
        cpu = m.cpus[0]
        assert w.owner is sched.current
        while len(w.waiters) < n:  # let every spinner start and park
            cpu.preempt_point()
        marks["parked"] = sched.steps
        for _ in range(HOLD):
            cpu.preempt_point()
        marks["release"] = sched.steps
        w.release()
        cpu.preempt_point()

    def spinner(cpu):
        cpu.spin_acquire(w, "L", "spinner")
        marks["acquired"].append((cpu.id, sched.steps))
        assert w.owner is sched.current
        w.release()

    assert w.try_acquire(sched.spawn(m.cpus[0], holder))  # held before anyone runs
    for c in m.cpus[1:]:
        sched.spawn(c, spinner, c)
    assert sched.run() is None
    marks["total"] = sched.steps
    return marks


@pytest.mark.parametrize("n", [10, 1000])
def test_spinners_on_held_lock_cost_no_steps(n):
    marks = _spin_on_held_lock(n)
    # While the lock is held, each of the holder's preemption points is exactly one step,
    # whatever the number of spinners: nobody re-checks a lock word that did not change.
    assert marks["release"] - marks["parked"] == HOLD
    acquired = marks["acquired"]
    assert sorted(cpu for cpu, _ in acquired) == list(range(1, n + 1))
    # One release hands the lock on within O(1) steps ...
    assert acquired[0][1] - marks["release"] <= 3
    # ... and the whole drain of n spinners is linear, not quadratic.
    after = marks["total"] - marks["release"]
    assert after <= 2 * n + 5


def test_release_cost_does_not_grow_with_spinners():
    small = _spin_on_held_lock(10)
    big = _spin_on_held_lock(1000)
    assert small["release"] - small["parked"] == big["release"] - big["parked"] == HOLD
    per_small = (small["total"] - small["release"]) / 10
    per_big = (big["total"] - big["release"]) / 1000
    assert per_big <= per_small + 1


def test_spin_until_wakes_only_when_predicate_holds():
    m = Machine(6, seed=5, trace=False)
    sched = m.sched
    q = WaitQueue(sched, "counter")
    value = [0]
    woke: list[tuple[int, int, int]] = []
    marks = {}

    def writer():
        cpu = m.cpus[0]
        while len(q.waiters) < 5:
            cpu.preempt_point()
        marks["parked"] = sched.steps
        for _ in range(30):  # spinners see no change: no steps spent on them
            cpu.preempt_point()
        marks["quiet"] = sched.steps
        for _ in range(5):
            value[0] += 1
            q.notify_all()
            cpu.preempt_point()

    def waiter(cpu, threshold):
        cpu.spin_until(q, lambda: value[0] >= threshold, f"value >= {threshold}")
        woke.append((cpu.id, threshold, value[0]))

    sched.spawn(m.cpus[0], writer)
    for i, c in enumerate(m.cpus[1:], start=1):
        sched.spawn(c, waiter, c, i)
    assert sched.run() is None
    assert marks["quiet"] - marks["parked"] == 30
    assert sorted(w[0] for w in woke) == [1, 2, 3, 4, 5]
    for _cpu, threshold, seen in woke:
        assert seen >= threshold


def test_notify_leaves_waiters_whose_condition_is_false():
    m = Machine(3, seed=1, trace=False)
    q = WaitQueue(m.sched, "flags")
    flags = {1: False, 2: False}
    left_in_queue = []

    def setter():
        cpu = m.cpus[0]
        while len(q.waiters) < 2:
            cpu.preempt_point()
        flags[1] = True
        q.notify_all()
        left_in_queue.append([t.cpu.id for t in q.waiters])
        cpu.preempt_point()
        flags[2] = True
        q.notify_all()

    m.sched.spawn(m.cpus[0], setter)
    for i in (1, 2):
        m.sched.spawn(m.cpus[i], lambda i=i: m.cpus[i].spin_until(q, lambda: flags[i], f"flag{i}"))
    assert m.sched.run() is None
    assert left_in_queue == [[2]]


# ---- deadlocks end the run -------------------------------------------------------------------------


def _abba(seed: int):
    m = Machine(2, seed=seed, trace=False)
    sched = m.sched
    a, b = SpinWord(sched, "A"), SpinWord(sched, "B")
    barrier = WaitQueue(sched, "barrier")
    count = [0]
    finished: list[int] = []
    unwound: list[int] = []

    def body(cpu, first, second):
        try:
            cpu.spin_acquire(first, first.name, f"site-{cpu.id}-first")
            count[0] += 1
            barrier.notify_all()
            cpu.spin_until(barrier, lambda: count[0] == 2, "barrier")
            cpu.spin_acquire(second, second.name, f"site-{cpu.id}-second")
            finished.append(cpu.id)
        finally:
            unwound.append(cpu.id)

    sched.spawn(m.cpus[0], body, m.cpus[0], a, b)
    sched.spawn(m.cpus[1], body, m.cpus[1], b, a)
    return m, sched.run(), finished, unwound


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_abba_deadlock_is_reported_and_ends(seed):
    m, dl, finished, unwound = _abba(seed)
    sched = m.sched
    assert isinstance(dl, Deadlock)
    assert sched.deadlock is dl
    assert finished == []
    assert sorted(unwound) == [0, 1]  # the stuck tasks were unwound, their finally blocks ran
    by_cpu = {w.cpu: w for w in dl.waiting}
    assert set(by_cpu) == {0, 1}
    assert (by_cpu[0].what, by_cpu[0].site, by_cpu[0].holder) == ("B", "site-0-second", 1)
    assert (by_cpu[1].what, by_cpu[1].site, by_cpu[1].holder) == ("A", "site-1-second", 0)
    text = dl.describe()
    assert text.startswith(f"deadlock at step {dl.step}: no CPU can run (2 waiting)")
    assert "cpu0 waits for B (held by cpu1) at site-0-second" in text
    assert "cpu1 waits for A (held by cpu0) at site-1-second" in text
    # the same scheduler runs new work afterwards; nothing of the deadlocked tasks survives
    ran = []
    sched.spawn(m.cpus[0], lambda: ran.append(m.current_cpu().id))
    assert sched.run() is None
    assert ran == [0]


def test_self_deadlock_names_the_cpu_holding_its_own_lock():
    m = Machine(1, seed=0, trace=False)
    w = SpinWord(m.sched, "L")

    def twice(cpu):
        cpu.spin_acquire(w, "L", "first")
        cpu.spin_acquire(w, "L", "second")

    m.sched.spawn(m.cpus[0], twice, m.cpus[0])
    dl = m.sched.run()
    assert dl is not None
    assert len(dl.waiting) == 1
    assert dl.waiting[0].holder == 0
    assert "cpu0 waits for L (held by itself) at second" in dl.describe()
    # the dead task is gone from the lock word's spinners and from its CPU
    assert w.waiters == [] and m.cpus[0].runqueue == [] and m.cpus[0].task is None
    ran = []
    m.sched.spawn(m.cpus[0], lambda: ran.append("new"))
    assert m.sched.run() is None and ran == ["new"]


def test_deadlock_report_groups_many_waiters():
    m = Machine(40, seed=4, trace=False)
    w = SpinWord(m.sched, "L")
    q = WaitQueue(m.sched, "never")

    def holder(cpu):
        cpu.spin_until(q, lambda: False, "forever", "holder-site")

    assert w.try_acquire(m.sched.spawn(m.cpus[0], holder, m.cpus[0]))
    for c in m.cpus[1:]:
        m.sched.spawn(c, lambda c=c: c.spin_acquire(w, "L", "spin-site"))
    dl = m.sched.run()
    assert dl is not None and len(dl.waiting) == 40
    text = dl.describe(limit=8)
    assert "cpu0 waits for forever at holder-site" in text
    assert "... and 31 more CPUs waiting for L at spin-site" in text
    assert len(text.splitlines()) == 1 + 1 + 8 + 1


def test_sleeping_forever_is_a_deadlock_not_a_hang():
    m = Machine(1, seed=0, trace=False)
    q = WaitQueue(m.sched, "event")
    m.sched.spawn(m.cpus[0], lambda: m.cpus[0].sleep_until(q, lambda: False, "event that never comes"))
    dl = m.sched.run()
    assert dl is not None
    assert [w.what for w in dl.waiting] == ["event that never comes"]


# ---- step budget, errors ----------------------------------------------------------------------------


@pytest.mark.parametrize("ncpus", [1, 3])
def test_step_budget_ends_a_livelock(ncpus):
    m = Machine(ncpus, seed=2, trace=False, max_steps=100)

    def forever(cpu):
        while True:
            cpu.preempt_point()

    for c in m.cpus:
        m.sched.spawn(c, forever, c)
    with pytest.raises(StepBudgetExceeded):
        m.sched.run()
    assert m.sched.steps == 101


def test_step_budget_not_hit_by_a_run_within_it():
    m = Machine(2, seed=2, trace=False, max_steps=100)
    for c in m.cpus:
        m.sched.spawn(c, lambda c=c: [c.preempt_point() for _ in range(10)])
    assert m.sched.run() is None
    assert m.sched.steps <= 100


def test_a_budget_set_while_the_run_goes_on_ends_it_one_step_past():
    """The common draw sees the budget only through `_limit`: setting it mid-run must reach it."""
    m = Machine(3, seed=2, trace=False)
    set_at: list[int] = []

    def setter():
        m.current_cpu().preempt_point()
        set_at.append(m.sched.steps)
        m.sched.max_steps = m.sched.steps + 50
        for _ in range(1000):
            m.current_cpu().preempt_point()

    m.sched.spawn(m.cpus[0], setter)
    for c in m.cpus[1:]:
        m.sched.spawn(c, lambda c=c: [c.preempt_point() for _ in range(1000)])
    with pytest.raises(StepBudgetExceeded):
        m.sched.run()
    assert m.sched.steps == set_at[0] + 51


def _points(m: Machine, n: int) -> None:
    for c in m.cpus:
        m.sched.spawn(c, lambda c=c: [c.preempt_point() for _ in range(n)])


def test_a_slice_pauses_at_its_step_and_the_run_goes_on_with_the_same_draws():
    m = Machine(3, seed=4, trace=False)
    _points(m, 20)
    assert m.sched.run(slice_steps=7) is None
    assert m.sched.paused and m.sched.steps == 7
    while m.sched.paused:
        m.sched.run(slice_steps=7)
    whole = Machine(3, seed=4, trace=False)
    _points(whole, 20)
    whole.sched.run()
    assert list(m.sched.choices) == list(whole.sched.choices)


def _spawn_workers(m: Machine, points: int) -> None:
    """A task on every CPU but the first that passes `points` preemption points."""

    def worker():
        for _ in range(points):
            m.current_cpu().preempt_point()

    for c in m.cpus[1:]:
        m.sched.spawn(c, worker)


def test_a_delay_ends_at_its_step_while_every_draw_takes_the_common_path():
    """Nothing contends and no policy is set, so only `_limit` brings the draw to the timer."""
    m = Machine(3, seed=5, trace=False)
    woke: list[tuple[int, int]] = []

    def delayer():
        m.current_cpu().delay(10)
        woke.append((m.sched.steps, ends))

    m.sched.spawn(m.cpus[0], delayer)
    _spawn_workers(m, 200)
    ends = 0
    orig = m.sched.sleep_steps

    def sleep_steps(n):
        nonlocal ends
        ends = m.sched.steps + n * len(m.sched._runnable)  # the step its timer names
        orig(n)

    m.sched.sleep_steps = sleep_steps
    assert m.sched.run() is None
    (back, end), = woke
    assert end < back <= end + 15, (back, end)  # runnable at `end`, then drawn among 3


def test_a_policy_set_while_the_run_goes_on_makes_every_later_draw():
    m = Machine(4, seed=1, trace=False)
    asked: list[int] = []
    set_at: list[int] = []

    def pick(sched, n):
        asked.append(n)
        return 0

    def setter(cpu):
        cpu.preempt_point()
        if not set_at:
            set_at.append(m.sched.steps)
            m.sched.pick = pick
        for _ in range(5):
            cpu.preempt_point()

    for c in m.cpus:
        m.sched.spawn(c, setter, c)
    assert m.sched.run() is None
    assert asked and all(n > 1 for n in asked)
    # always the first candidate from then on: each CPU runs to its end before another runs
    ch = list(m.sched.choices)[set_at[0]:]
    assert sum(a != b for a, b in zip(ch, ch[1:])) <= 3, ch


def test_task_errors_surface_and_others_finish():
    m = Machine(3, seed=9, trace=False)
    done = []

    def ok(cpu):
        for _ in range(5):
            cpu.preempt_point()
        done.append(cpu.id)

    def bad(cpu):
        cpu.preempt_point()
        raise ValueError("boom on cpu1")

    m.sched.spawn(m.cpus[0], ok, m.cpus[0])
    t = m.sched.spawn(m.cpus[1], bad, m.cpus[1])
    m.sched.spawn(m.cpus[2], ok, m.cpus[2])
    assert m.sched.run() is None
    assert sorted(done) == [0, 2]
    assert len(m.sched.errors) == 1
    task, err = m.sched.errors[0]
    assert task is t and isinstance(err, ValueError) and str(err) == "boom on cpu1"


def test_task_error_raised_by_emulated_host_run():
    from tdxseam.host import EmulatedHost

    host = EmulatedHost(2, seed=1, trace=False)

    def bad():
        raise KeyError("model bug")

    host.sched.spawn(host.machine.cpus[1], bad)
    with pytest.raises(KeyError, match="model bug"):
        host.run()


def test_task_results_are_kept():
    m = Machine(2, seed=0, trace=False)
    t = m.sched.spawn(m.cpus[1], lambda: 42)
    m.sched.run()
    assert t.done and t.result == 42


# ---- sleeping tasks ---------------------------------------------------------------------------------


def test_sleeping_task_gives_its_cpu_to_another_task():
    m = Machine(1, seed=0, trace=False)
    cpu = m.cpus[0]
    q = WaitQueue(m.sched, "ready")
    flag = [False]
    log: list[str] = []

    def sleeper():
        log.append("sleeper starts")
        cpu.sleep_until(q, lambda: flag[0], "ready")
        log.append("sleeper wakes")

    def waker():
        log.append("waker runs")
        flag[0] = True
        q.notify_all()
        log.append("waker done")

    m.sched.spawn(cpu, sleeper)
    m.sched.spawn(cpu, waker)  # same CPU: it can only run if the sleeper gives the CPU away
    assert m.sched.run() is None
    assert log == ["sleeper starts", "waker runs", "waker done", "sleeper wakes"]


def test_spinning_task_keeps_its_cpu():
    """The same pair with a spin instead of a sleep: the waker never gets the CPU."""
    m = Machine(1, seed=0, trace=False)
    cpu = m.cpus[0]
    q = WaitQueue(m.sched, "ready")
    flag = [False]

    def waker():
        flag[0] = True
        q.notify_all()

    m.sched.spawn(cpu, lambda: cpu.spin_until(q, lambda: flag[0], "ready"))
    m.sched.spawn(cpu, waker)
    dl = m.sched.run()
    assert dl is not None
    assert any(w.what == "ready" for w in dl.waiting)


@pytest.mark.parametrize("atomic", ["preempt", "irqs-off"])
def test_sleeping_in_atomic_context_is_an_error(atomic):
    m = Machine(1, seed=0, trace=False)
    cpu = m.cpus[0]
    q = WaitQueue(m.sched, "x")

    def body():
        if atomic == "preempt":
            cpu.preempt_count += 1
        else:
            cpu.irq_enabled = False
        cpu.sleep_until(q, lambda: False, "x")

    m.sched.spawn(cpu, body)
    m.sched.run()
    assert len(m.sched.errors) == 1
    err = m.sched.errors[0][1]
    assert isinstance(err, SchedulerError)
    assert "scheduling while atomic" in str(err)


def test_a_delay_sleeps_while_the_others_take_its_steps_times_the_runnable_tasks():
    m = Machine(4, seed=3, trace=False)
    woke: list[int] = []

    def delayer():
        start = m.sched.steps
        m.current_cpu().delay(10)
        woke.append(m.sched.steps - start)

    m.sched.spawn(m.cpus[0], delayer)
    _spawn_workers(m, 100)
    assert m.sched.run() is None
    # the delay began with 4 tasks runnable: it is runnable again 40 steps on, then drawn among 4
    assert 41 <= woke[0] <= 60, woke


def test_a_delay_costs_one_step_and_ends_when_nothing_else_can_run():
    m = Machine(2, seed=0, trace=False)
    order: list[str] = []

    def delayer(name, n):
        m.current_cpu().delay(n)
        order.append(name)

    m.sched.spawn(m.cpus[0], delayer, "long", 1000)
    m.sched.spawn(m.cpus[1], delayer, "short", 5)
    assert m.sched.run() is None
    assert order == ["short", "long"]
    assert m.sched.steps < 10  # not the thousands of steps a loop of preemption points would take


def test_a_delayed_task_frees_its_cpu_and_takes_interrupts_after():
    m = Machine(1, seed=0, trace=False)
    cpu = m.cpus[0]
    log: list[str] = []

    def delayer():
        cpu.delay(50)
        log.append("delay over")

    def other():
        log.append("other runs")  # same CPU: it runs only because the delayer sleeps
        m.irq.raise_irq(cpu, lambda: log.append("irq"))

    m.sched.spawn(cpu, delayer)
    m.sched.spawn(cpu, other)
    assert m.sched.run() is None
    assert log[0] == "other runs" and log[-1] == "delay over" and "irq" in log


@pytest.mark.parametrize("atomic", ["preempt", "irqs-off"])
def test_a_delay_in_atomic_context_is_an_error(atomic):
    m = Machine(1, seed=0, trace=False)
    cpu = m.cpus[0]

    def body():
        if atomic == "preempt":
            cpu.preempt_count += 1
        else:
            cpu.irq_enabled = False
        cpu.delay(3)

    m.sched.spawn(cpu, body)
    m.sched.run()
    assert "scheduling while atomic" in str(m.sched.errors[0][1])


def test_a_deadlock_beside_a_delay_is_still_reported():
    m = Machine(2, seed=0, trace=False)
    q = WaitQueue(m.sched, "never")
    m.sched.spawn(m.cpus[0], lambda: m.current_cpu().delay(20))
    m.sched.spawn(m.cpus[1], lambda: m.current_cpu().sleep_until(q, lambda: False, "never"))
    dl = m.sched.run()
    assert dl is not None and [w.what for w in dl.waiting] == ["never"]
    assert not m.sched._timers


def test_run_is_not_reentrant():
    m = Machine(1, seed=0, trace=False)
    seen = []

    def body():
        try:
            m.sched.run()
        except SchedulerError as e:
            seen.append(str(e))

    m.sched.spawn(m.cpus[0], body)
    m.sched.run()
    assert seen and "re-entrant" in seen[0]


# ---- platform size -------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, MAX_CPUS + 1])
def test_machine_cpu_count_bounds(n):
    with pytest.raises(ValueError, match="1 to 4096"):
        Machine(n)


def test_4096_cpus_run_without_recursion_trouble():
    """Tasks started from inside other tasks must not stack up Python recursion depth."""
    m = Machine(MAX_CPUS, seed=1, trace=False)
    assert m.ncpus == 4096
    count = [0]

    def work(cpu):
        cpu.preempt_point()
        cpu.preempt_point()
        count[0] += 1

    for c in m.cpus:
        m.sched.spawn(c, work, c)
    assert m.sched.run() is None
    assert count[0] == 4096
    assert not m.sched.errors


# ---- the trace -----------------------------------------------------------------------------------


def test_trace_lines_limit_and_digest():
    t = Trace(enabled=True, limit=2)
    t.emit(1, 0, "lock", "seamldr_lock")
    t.emit(2, 12, "unlock", "")
    t.emit(3, 1, "dropped", "x")
    lines = list(t.lines())
    assert lines[0] == "        1 cpu0     lock           seamldr_lock"
    assert lines[1] == "        2 cpu12    unlock"
    assert lines[2] == "... 1 more events not recorded (trace limit 2)"
    assert t.text().endswith("\n")
    t2 = Trace(enabled=True, limit=2)
    t2.emit(1, 0, "lock", "seamldr_lock")
    t2.emit(2, 12, "unlock", "")
    assert t.digest() != t2.digest()
    off = Trace(enabled=False)
    off.emit(1, 0, "x")
    assert off.events == [] and off.text() == ""


def test_trace_records_scheduler_events_in_step_order():
    m = Machine(2, seed=3, trace=True)

    def work(cpu):
        for i in range(3):
            m.emit("work", str(i))
            cpu.preempt_point()

    for c in m.cpus:
        m.sched.spawn(c, work, c)
    m.sched.run()
    ev = [e for e in m.sched.trace.events if e[2] == "work"]
    assert len(ev) == 6
    assert [e[0] for e in ev] == sorted(e[0] for e in ev)
    assert {e[1] for e in ev} == {0, 1}


def _delays(seed: int, passed: bool, *, slice_steps: int | None = None, budget: int | None = None) -> tuple:
    """CPUs that spend time (bare preemption points, no interrupt taken, as in SEAM code) and
    work, raise interrupts on each other and take a stopper-like higher-priority task, with
    `Scheduler.preempt_points` (points passed for a task that is not switched to) or a plain loop
    of `preempt`. Returns what must not differ."""
    m = Machine(6, seed=seed, trace=False, max_steps=budget)
    order: list[tuple] = []
    hooks: list[tuple] = []
    m.sched.on_step = lambda s: hooks.append((s.steps, s.current.cpu.id if s.current else -1))

    def delay(cpu, n):
        if cpu.id in (0, 5):  # these take interrupts at their points
            for _ in range(n):
                cpu.preempt_point()
        elif passed:
            m.sched.preempt_points(n)
        else:
            for _ in range(n):
                m.sched.preempt()

    def handler(cpu, tag):
        order.append(("irq", cpu.id, tag, m.sched.steps))
        delay(cpu, 2)  # an interrupt handler's own points belong to no delay

    def work(cpu):
        for i in range(6):
            delay(cpu, 3 + (cpu.id + i) % 5)
            order.append(("work", cpu.id, i, m.sched.steps))
            other = m.cpus[(cpu.id + 1) % 6]
            m.irq.raise_irq(other, handler, other, i)
            if cpu.id == 1 and i == 3:  # onto another CPU, which may be passing points meanwhile
                m.sched.spawn(m.cpus[2], lambda: order.append(("stopper", m.sched.steps)), priority=1)

    for c in m.cpus:
        m.sched.spawn(c, work, c)
    try:
        while True:
            m.sched.run(slice_steps=slice_steps)
            if not m.sched.paused:
                break
            order.append(("pause", m.sched.steps))
    except StepBudgetExceeded:
        order.append(("budget", m.sched.steps))
    assert not m.sched.errors
    return m.sched.steps, m.sched.schedule_digest(), order, hooks


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("slice_steps, budget", [(None, None), (7, None), (None, 150)])
def test_passed_preemption_points_change_nothing(seed, slice_steps, budget):
    """A delay's points passed without a switch give the same draws, steps, step hooks (with the
    same running CPU), interrupts, pauses and budget end as the task passing them itself."""
    a = _delays(seed, True, slice_steps=slice_steps, budget=budget)
    b = _delays(seed, False, slice_steps=slice_steps, budget=budget)
    assert a == b
    assert any(e[0] == "irq" for e in a[2])
