"""The deterministic scheduler: simulated CPUs run host code and switch only at preemption points.

Every simulated CPU runs host code in a greenlet (a `Task`). A task gives up the processor only
at a preemption point (`Scheduler.preempt`), where the scheduler draws the next task to run
from a seeded RNG. One seed therefore fixes the whole interleaving, and the choices it made are
recorded (`Scheduler.choices`) so a run can be compared or replayed.

Waiting is never a busy loop. A CPU spinning on a lock or a shared variable is *parked* on a
`WaitQueue` and costs nothing until something it waits on changes:
- `SpinWord` is a word CPUs spin on with compare-and-exchange (a raw spinlock's lock word). While
  it is free, its waiters are part of the draw: picking one *is* that CPU winning the exchange,
  so a free lock with a thousand spinners costs one step, not a thousand.
- `WaitQueue.notify_all` wakes waiters whose condition now holds (a spin on a state variable).

When nothing can run and some task has not finished, the run is deadlocked: `run()` stops and
returns a `Deadlock` naming every waiting CPU, what it waits for and from where. A run never hangs.
"""

from __future__ import annotations

import hashlib
import heapq
import random
import sys
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import greenlet

from tdxseam.platform.trace import Trace


class SchedulerError(RuntimeError):
    """A misuse of the scheduler by simulated code (a bug in the model, not in the host)."""


class StepBudgetExceeded(RuntimeError):
    """The run took more scheduler steps than allowed: a livelock, or a budget set too low."""


class _Abort(greenlet.GreenletExit):
    """Thrown into tasks still alive when a run ends, so they unwind without scheduling."""


@dataclass
class Waiting:
    """What a parked task waits for, for deadlock reports."""

    cpu: int
    what: str
    site: str
    holder: int | None = None  # for a lock word: the CPU holding it when the run ended

    def __str__(self) -> str:
        held = ""
        if self.holder is not None:
            held = " (held by itself)" if self.holder == self.cpu else f" (held by cpu{self.holder})"
        return f"cpu{self.cpu} waits for {self.what}{held} at {self.site}"


@dataclass
class Deadlock:
    """Every runnable CPU waits on something only another waiting CPU could provide."""

    step: int
    waiting: list[Waiting]

    def describe(self, limit: int = 8) -> str:
        """The waits, self-deadlocks first; CPUs waiting on the same thing are counted, not listed."""
        lines = [f"deadlock at step {self.step}: no CPU can run ({len(self.waiting)} waiting)"]
        ordered = sorted(self.waiting, key=lambda w: (w.holder != w.cpu, w.cpu))
        groups: dict[tuple, list[Waiting]] = {}
        for w in ordered:
            groups.setdefault((w.what, w.site), []).append(w)
        shown = 0
        for ws in groups.values():
            for w in ws[:limit]:
                lines.append(f"  {w}")
                shown += 1
            if len(ws) > limit:
                lines.append(f"  ... and {len(ws) - limit} more CPUs waiting for {ws[0].what} at {ws[0].site}")
        return "\n".join(lines)


def call_site(depth: int = 2) -> str:
    """`file:line (function)` of simulated code, for traces and lock reports."""
    f = sys._getframe(depth)
    name = f.f_code.co_filename.rsplit("/", 1)[-1]
    return f"{name}:{f.f_lineno} ({f.f_code.co_name})"


def code_line(code: Any, lasti: int) -> int | None:
    """The source line of the instruction at byte offset `lasti` of `code`: what a frame's
    `f_lineno` gives at that `f_lasti`. Reading `f_lasti` is cheap, `f_lineno` searches the line
    table, so sites are noted by offset and spelt with their line only when printed."""
    for start, end, line in code.co_lines():
        if start <= lasti < end:
            return line
    return None


class Site:
    """A call site kept as (code, instruction offset) and spelt like `call_site` only when
    printed: lock and spin paths note their site at every acquisition, and almost none is ever
    printed."""

    __slots__ = ("code", "lasti")

    def __init__(self, code: Any, lasti: int) -> None:
        self.code = code
        self.lasti = lasti

    @property
    def line(self) -> int | None:
        return code_line(self.code, self.lasti)

    def __str__(self) -> str:
        return f"{self.code.co_filename.rsplit('/', 1)[-1]}:{self.line} ({self.code.co_name})"

    def __reduce__(self) -> tuple:
        return (str, (str(self),))  # a pickled host keeps the site as its text (code objects do not pickle)


def lazy_site(depth: int = 2) -> Site:
    """`call_site(depth)`, formatted when printed (see `Site`)."""
    f = sys._getframe(depth)
    return Site(f.f_code, f.f_lasti)


class Task:
    """One thread of host code bound to one CPU."""

    __slots__ = ("sched", "cpu", "name", "glet", "done", "waiting_on", "_wait", "pred",
                 "result", "error", "priority", "_slot", "on_cpu", "points")

    def __init__(self, sched: Scheduler, cpu: Any, name: str, fn: Callable[..., Any],
                 args: tuple, priority: int) -> None:
        self.sched = sched
        self.cpu = cpu
        self.name = name
        self.priority = priority
        self.done = False
        self.waiting_on: WaitQueue | None = None
        self._wait: tuple[str, Any] | None = None  # (what, site) while parked
        self.pred: Callable[[], bool] | None = None
        self.result: Any = None
        self.error: BaseException | None = None
        self._slot = -1  # index in Scheduler._runnable, -1 when not there
        self.on_cpu = False
        self.points = 0  # bare preemption points still to pass (`Scheduler.preempt_points`)

        def body() -> None:
            try:
                self.result = fn(*args)
            except StepBudgetExceeded:
                if sched.aborting:
                    return
                raise  # ends the whole run (out of run()), not just this task
            except BaseException as e:  # reported by run(); the model must not lose errors
                if sched.aborting:
                    return  # the run ended around this task: unwinding, nothing to account
                self.error = e
            sched._task_exit(self)

        self.glet = greenlet.greenlet(body, parent=sched._main)

    def __repr__(self) -> str:
        return f"<Task {self.name} cpu{self.cpu.id}>"

    @property
    def wait_info(self) -> Waiting | None:
        """What the task waits for (None when it does not), made when asked: parking only notes it."""
        w = self._wait
        return None if w is None else Waiting(self.cpu.id, w[0], str(w[1]))


class WaitQueue:
    """Tasks parked until a condition holds; `notify_all` re-checks them."""

    __slots__ = ("sched", "name", "waiters")

    def __init__(self, sched: Scheduler, name: str) -> None:
        self.sched = sched
        self.name = name
        self.waiters: list[Task] = []

    def notify_all(self) -> None:
        """Something the waiters look at changed: each whose condition now holds may run."""
        if not self.waiters:
            return
        still = []
        for t in self.waiters:
            if t.pred is None or t.pred():
                t.waiting_on = None
                t._wait = None
                self.sched._make_runnable(t)
            else:
                still.append(t)
        self.waiters = still


class SpinWord(WaitQueue):
    """A lock word CPUs spin on. Holding it is `owner is not None`."""

    __slots__ = ("owner",)

    def __init__(self, sched: Scheduler, name: str) -> None:
        super().__init__(sched, name)
        self.owner: Task | None = None

    def try_acquire(self, task: Task) -> bool:
        if self.owner is None:
            self.owner = task
            return True
        return False

    def release(self) -> None:
        self.owner = None
        if self.waiters and self not in self.sched._contended:
            self.sched._contended.append(self)


_NO_LIMIT = sys.maxsize  # `Scheduler._limit` when no slice, budget, timer or policy applies


class Scheduler:
    """Seeded choice of which CPU runs next, at every preemption point."""

    def __init__(self, seed: int = 0, *, trace: bool = True, max_steps: int | None = None,
                 policy: str = "random") -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        # the draw is rng.randrange(n), made from getrandbits as random does it (see _draw)
        self._getrandbits = self.rng.getrandbits
        self.trace = Trace(enabled=trace)
        self.steps = 0
        self.choices = array("H")  # CPU id chosen at each step (mod 65536)
        self.policy = policy
        self._main = greenlet.getcurrent()
        self._runnable: list[Task] = []
        self._contended: list[SpinWord] = []  # free lock words that have spinners
        self._tasks: list[Task] = []
        self.current: Task | None = None
        self._start: Task | None = None  # a task drawn inside another, to be started by main
        self.deadlock: Deadlock | None = None
        self.running = False
        self.paused = False
        self._slice_end: int | None = None
        self._max_steps = max_steps
        self._pick: Callable[[Scheduler, int], int] | None = None
        self._limit = _NO_LIMIT  # see `_set_limit`; made again when a run starts
        self.aborting = False
        self.errors: list[tuple[Task, BaseException]] = []
        self.on_step: Callable[[Scheduler], None] | None = None  # invariant checks, fault timing
        self.on_idle: Callable[[Scheduler], bool] | None = None  # may inject work; True if it did
        # tasks in `sleep_steps`: a heap of (step to wake at, order, task), and what they wait on
        self._timers: list[tuple[int, int, Task]] = []
        self._timer_order = 0
        self._timer_q = WaitQueue(self, "a delay")

    @property
    def max_steps(self) -> int | None:
        """The step budget: a step past it raises StepBudgetExceeded (None: no budget)."""
        return self._max_steps

    @max_steps.setter
    def max_steps(self, value: int | None) -> None:
        self._max_steps = value
        self._set_limit()

    @property
    def pick(self) -> Callable[[Scheduler, int], int] | None:
        """Draw policy (tdxseam.sim.schedules): given n > 1 candidates (see `candidates()`), return
        the index to run. None is the seeded random draw, whose sequence it leaves untouched."""
        return self._pick

    @pick.setter
    def pick(self, value: Callable[[Scheduler, int], int] | None) -> None:
        self._pick = value
        self._set_limit()

    def _set_limit(self) -> None:
        """`_limit`: the first step at which a turn leaves `_reschedule`'s common path, where one
        comparison stands for the slice's end, the budget, the next timer and a draw policy.
        Made when a run starts and again whenever one of them changes (the two setters, a timer
        pushed or popped: a popped one would otherwise send every later turn the long way)."""
        lim = -1 if self._pick is not None else _NO_LIMIT
        for end in (self._slice_end, self._max_steps, self._timers[0][0] if self._timers else None):
            if end is not None and end < lim:
                lim = end
        self._limit = lim

    def reseed(self, seed: int) -> None:
        """Draw from now on as a scheduler seeded with `seed` would (a host loaded from a boot image)."""
        self.seed = seed
        self.rng = random.Random(seed)
        self._getrandbits = self.rng.getrandbits

    def __getstate__(self) -> dict:
        """A scheduler between runs, pickled (a boot image): no task may be alive, since greenlets
        do not pickle; the main greenlet is the loader's."""
        if self.running or any(not t.done for t in self._tasks) or self._start is not None:
            raise TypeError("cannot pickle a scheduler with live tasks")
        state = dict(self.__dict__)
        state["_main"] = state["_getrandbits"] = None
        state["_tasks"] = []
        return state

    def __setstate__(self, state: dict) -> None:
        for k, v in state.items():  # attribute by attribute: `__dict__.update` would slow every access
            object.__setattr__(self, k, v)
        self._main = greenlet.getcurrent()
        self._getrandbits = self.rng.getrandbits if self.rng is not None else None

    # ---- task management -------------------------------------------------------------------

    def spawn(self, cpu: Any, fn: Callable[..., Any], *args: Any, name: str | None = None,
              priority: int = 0) -> Task:
        """Start host code on `cpu`; it first runs when the scheduler draws it."""
        t = Task(self, cpu, name or getattr(fn, "__name__", "task"), fn, args, priority)
        self._tasks.append(t)
        cpu.runqueue.append(t)
        self._cpu_pick(cpu)
        return t

    def _cpu_pick(self, cpu: Any) -> None:
        """Put the CPU's best ready task on it, if the CPU has none running."""
        cur = cpu.task
        if cur is not None and not cur.done:
            return
        best = None
        for t in cpu.runqueue:
            if not t.done and t.waiting_on is None and (best is None or t.priority > best.priority):
                best = t
        cpu.task = best
        if best is not None and best._slot < 0 and best.waiting_on is None:
            self._make_runnable(best)

    def migrate(self, t: Task, cpu: Any) -> None:
        """Move a task that is not running on its CPU (preempted, ready or asleep) to `cpu`, as the
        kernel does with the tasks of a CPU going offline."""
        old = t.cpu
        if old is cpu or t.done:
            return
        if t is self.current:
            raise SchedulerError(f"cannot migrate {t.name} while it runs")
        self._remove_runnable(t)
        old.runqueue.remove(t)
        if old.task is t:
            old.task = None
        t.cpu = cpu
        cpu.runqueue.append(t)
        self._cpu_pick(cpu)
        self._cpu_pick(old)

    def _make_runnable(self, t: Task) -> None:
        if t._slot >= 0 or t.done:
            return
        if t.cpu.task is not None and t.cpu.task is not t and not t.cpu.task.done:
            # another task owns the CPU; this one becomes ready and waits its turn
            return
        t.cpu.task = t
        t._slot = len(self._runnable)
        self._runnable.append(t)

    def _remove_runnable(self, t: Task) -> None:
        i = t._slot
        if i < 0:
            return
        last = self._runnable.pop()
        if last is not t:
            self._runnable[i] = last
            last._slot = i
        t._slot = -1

    def _task_exit(self, t: Task) -> None:
        t.done = True
        self._remove_runnable(t)
        cpu = t.cpu
        cpu.runqueue.remove(t)
        if cpu.task is t:
            cpu.task = None
        if t.error is not None:
            self.errors.append((t, t.error))
        self._cpu_pick(cpu)
        # the greenlet returns to main; main's loop draws the next task

    # ---- the draw ---------------------------------------------------------------------------

    def _draw(self) -> Task | None:
        """Pick the next task: any runnable one, or a spinner on a free lock (which then wins it)."""
        runnable = self._runnable
        if self._timers and self._timers[0][0] <= self.steps:
            self._wake_timers(self.steps)
        while True:
            contended = self._contended
            nr = n = len(runnable)
            if contended:
                # drop words that were taken again or lost their spinners
                contended[:] = [w for w in contended if w.owner is None and w.waiters]
                for w in contended:
                    n += len(w.waiters)
            if n == 1:
                r = 0
            elif n == 0:
                if self._timers:  # nothing else can run: the next delay ends now
                    self._wake_timers(self._timers[0][0])
                    continue
                if self.on_idle is not None and self.on_idle(self):
                    continue
                return None
            elif self._pick is None:
                # random.Random._randbelow_with_getrandbits, inlined: the same draws
                k = n.bit_length()
                r = self._getrandbits(k)
                while r >= n:
                    r = self._getrandbits(k)
            else:
                r = self._pick(self, n)
                if not 0 <= r < n:
                    raise SchedulerError(f"draw policy chose {r} of {n} candidates")
            if r < nr:
                return runnable[r]
            r -= nr
            for w in contended:
                if r < len(w.waiters):
                    t = w.waiters.pop(r)
                    w.owner = t  # the spinner's cmpxchg succeeded
                    t.waiting_on = None
                    t._wait = None
                    contended.remove(w)
                    self._make_runnable(t)
                    return t
                r -= len(w.waiters)

    def _wake_timers(self, step: int) -> None:
        """Wake the tasks whose delay ends at `step` or before."""
        timers = self._timers
        while timers and timers[0][0] <= step:
            t = heapq.heappop(timers)[2]
            if t.waiting_on is self._timer_q:  # not woken or killed meanwhile
                self.unpark(t)
        self._set_limit()

    def candidates(self) -> list[Task]:
        """The tasks the next draw chooses among, in draw-index order (for draw policies).

        Runnable tasks first, then spinners on free lock words (drawing one means it wins the lock).
        """
        out = list(self._runnable)
        for w in self._contended:
            out.extend(w.waiters)
        return out

    def can_run(self) -> bool:
        """Would the next draw find a task? (A task to start, a runnable one, or a spinner on a
        free lock.) False means every live task waits on something no task can give."""
        if self._start is not None or self._runnable or self._timers:
            return True
        return any(w.owner is None and w.waiters for w in self._contended)

    def live_tasks(self) -> list[Task]:
        """Tasks not finished (after a paused run: those still waiting or runnable)."""
        return [t for t in self._tasks if not t.done]

    def _step(self, t: Task) -> None:
        self.steps += 1
        self.choices.append(t.cpu.id & 0xFFFF)
        if self._max_steps is not None and self.steps > self._max_steps:
            raise StepBudgetExceeded(f"more than {self._max_steps} scheduler steps")
        if self.on_step is not None:
            self.on_step(self)

    def _reschedule(self) -> None:
        """Hand the processor on: to the next draw, or back to `run` when the slice is used up.

        Runs at every preemption point and every park, so the draw (its common case), the step
        (`_step`) and the switch are written out here rather than called.

        A task drawn while it passes bare preemption points (`preempt_points`: the P-SEAMLDR's
        time inside a call) would only come back here for its next point: that point is passed
        for it (`_pass_point`) and the draw made again, without switching to the task and back.
        The draws, steps, step hooks, pauses and budget end are the same as with the switch."""
        me = self.current
        while True:
            runnable = self._runnable
            n = len(runnable)
            if self.steps >= self._limit or self._contended or not n:
                nxt = self._turn()
                if nxt is None:
                    break  # `run` had the processor: a pause, or nothing left to draw
            else:
                if n == 1:
                    nxt = runnable[0]  # the only candidate: `_draw` makes no choice either
                else:
                    # the common draw, as `_draw` makes it: a random pick among runnable tasks only
                    k = n.bit_length()
                    r = self._getrandbits(k)
                    while r >= n:
                        r = self._getrandbits(k)
                    nxt = runnable[r]
                self.steps += 1  # `_step`, written out (no budget or slice ends before `_limit`)
                self.choices.append(nxt.cpu.id & 0xFFFF)
                if self.on_step is not None:
                    self.on_step(self)
            if nxt is me:
                break
            self.current = nxt
            if not nxt.glet:
                # Not started yet: let main start it. A greenlet started from inside another inherits
                # its Python recursion depth, so chains of starts would overflow with thousands of CPUs.
                self._start = nxt
                self._main.switch()
                return
            if not nxt.points:
                nxt.glet.switch()
                return
            self._pass_point(nxt)
        self.current = me  # (it may have stood for a task whose points were passed)

    def _turn(self) -> Task | None:
        """One turn of `_reschedule` off its common path: the slice's end (back to `run`), delays
        that end now, contended lock words, a draw policy, the budget. The task drawn and
        stepped, or None once `run` has had the processor back."""
        if self._slice_end is not None and self.steps >= self._slice_end:
            self._main.switch()  # `run` pauses; it draws again when the run goes on
            return None
        nxt = self._draw()  # (it wakes the delays that end now first)
        if nxt is None:
            self._main.switch()  # main sees no runnable task: done or deadlocked
            return None
        self._step(nxt)
        return nxt

    def _pass_point(self, t: Task) -> None:
        """Pass `t`'s next bare preemption point for it, as it would itself after being drawn:
        take the next point (no interrupt is taken at them, as in SEAM code) and do `preempt`'s
        work before the draw. A slice or budget that ends there ends at the loop's next turn as
        it would in the task's own `_reschedule`."""
        t.points -= 1
        if len(t.cpu.runqueue) > 1:
            self._maybe_resched(t)

    # ---- what simulated code calls ----------------------------------------------------------

    def preempt(self) -> None:
        """A preemption point: another CPU may run before this one continues."""
        if not self.running:
            return
        t = self.current
        if t is not None and len(t.cpu.runqueue) > 1:
            self._maybe_resched(t)
        self._reschedule()

    def preempt_points(self, n: int) -> None:
        """`n` preemption points in a row with nothing between them: time spent (`preempt`, no
        interrupt taken, as in SEAM code). While the task waits to be drawn, its next point may be
        passed for it without switching to it (`_reschedule`); `Task.points` counts those left."""
        t = self.current
        if t is None or not self.running:
            for _ in range(n):
                self.preempt()
            return
        t.points = n
        try:
            while t.points > 0:
                t.points -= 1
                self.preempt()
        finally:
            t.points = 0

    def need_resched(self) -> bool:
        """A higher-priority task is ready on the running task's CPU (the kernel's need_resched():
        what cond_resched() looks at). No draw is made, so asking changes no interleaving."""
        t = self.current
        if t is None or t.cpu.runqueue_len < 2:
            return False
        return any(o is not t and not o.done and o.waiting_on is None and o.priority > t.priority
                   for o in t.cpu.runqueue)

    def _maybe_resched(self, t: Task) -> None:
        """Let a higher-priority ready task (a stopper thread) take the CPU where it may."""
        cpu = t.cpu
        if cpu.preempt_count or not cpu.irq_enabled:
            return
        best = t
        for o in cpu.runqueue:
            if o is not t and not o.done and o.waiting_on is None and o.priority > best.priority:
                best = o
        if best is t:
            return
        self._remove_runnable(t)
        cpu.task = best
        self._make_runnable(best)

    def park(self, q: WaitQueue, what: str, site: str, pred: Callable[[], bool] | None = None,
             *, sleeping: bool = False) -> None:
        """Stop running until `q` wakes this task (and `pred`, if given, holds).

        A spinning task keeps its CPU; a `sleeping` one gives it to the CPU's other tasks.
        """
        if not self.running:
            raise _Abort()
        t = self.current
        if t is None:
            raise SchedulerError("park() outside a task")
        t.waiting_on = q
        t.pred = pred
        t._wait = (what, site)
        q.waiters.append(t)
        self._remove_runnable(t)
        if sleeping and t.cpu.task is t:
            t.cpu.task = None
            self._cpu_pick(t.cpu)
        self._reschedule()

    def sleep_steps(self, n: int) -> None:
        """The running task sleeps, its CPU free for other tasks, while the others take about the
        steps that `n` preemption points of its own would have given them: `n` times the tasks
        runnable now (a draw picks it one time in that many). It wakes at that step, or sooner
        when nothing else can run. One step for the whole delay instead of `n`."""
        t = self.current
        if n <= 0 or t is None or not self.running:
            return
        heapq.heappush(self._timers, (self.steps + n * len(self._runnable), self._timer_order, t))
        self._timer_order += 1
        self._set_limit()
        self.park(self._timer_q, "the end of a delay", "sleep_steps", sleeping=True)

    def unpark(self, t: Task) -> None:
        """Take a task off whatever it waits on (an interrupt came for its CPU)."""
        q = t.waiting_on
        if q is None:
            return
        if t in q.waiters:
            q.waiters.remove(t)
        t.waiting_on = None
        t._wait = None
        self._make_runnable(t)

    def spin_acquire(self, w: SpinWord, what: str, site: str,
                     on_wake: Callable[[], None] | None = None) -> None:
        """Spin until this task holds `w`. `on_wake` runs whenever the spin is interrupted."""
        t = self.current
        while not w.try_acquire(t):
            self.park(w, what, site)
            if w.owner is t:
                return
            if on_wake is not None:
                on_wake()
        return

    # ---- running ------------------------------------------------------------------------------

    def run(self, *, until: Callable[[], bool] | None = None,
            slice_steps: int | None = None) -> Deadlock | None:
        """Run tasks; return the deadlock if the run ended in one.

        Without arguments every task runs to completion. `until` (checked whenever control comes
        back to the scheduler: a task ended or a slice ran out) and `slice_steps` pause the run
        instead, leaving tasks where they are (`paused` is then True); the next `run` goes on
        with the same draws, so slicing a run does not change its interleaving.
        """
        if self.running:
            raise SchedulerError("run() is not re-entrant")
        self.running = True
        if not self.paused:
            self.deadlock = None  # a new run reports its own ending, not an earlier run's
        self.paused = False
        self._slice_end = None if slice_steps is None else self.steps + slice_steps
        self._set_limit()
        self._main = greenlet.getcurrent()
        for t in self._tasks:
            if not t.done:
                t.glet.parent = self._main
        try:
            while True:
                nxt = self._start
                if nxt is not None:
                    self._start = None  # drawn and stepped by _reschedule; main only starts it
                else:
                    if (until is not None and until()) or (
                            self._slice_end is not None and self.steps >= self._slice_end):
                        self.paused = True
                        return None
                    nxt = self._draw()
                    if nxt is None:
                        break
                    self._step(nxt)
                self.current = nxt
                nxt.glet.switch()
                self.current = None
            alive = [t for t in self._tasks if not t.done]
            if alive:
                waits = []
                for t in alive:
                    w = t.wait_info or Waiting(t.cpu.id, "its CPU", "?")
                    owner = getattr(t.waiting_on, "owner", None)
                    if owner is not None:
                        w.holder = owner.cpu.id
                    waits.append(w)
                waits.sort(key=lambda w: w.cpu)
                self.deadlock = Deadlock(self.steps, waits)
            return self.deadlock
        finally:
            self.running = False
            self.current = None
            self._slice_end = None
            if not self.paused:
                self._start = None
                self._kill_all()

    def _kill_all(self) -> None:
        """Unwind tasks still alive (a deadlock): their `finally` blocks run with nothing to schedule."""
        self.aborting = True
        try:
            for t in self._tasks:
                if not t.done and t.glet and not t.glet.dead:
                    t.cpu.pending_irqs.clear()
                    self.current = t
                    try:
                        t.glet.throw(_Abort)
                    except _Abort:
                        pass
                if not t.done:
                    # gone for good: off its wait queue and its CPU, so later runs never draw it
                    q = t.waiting_on
                    if q is not None and t in q.waiters:
                        q.waiters.remove(t)
                    t.waiting_on = None
                    if t in t.cpu.runqueue:
                        t.cpu.runqueue.remove(t)
                    if t.cpu.task is t:
                        t.cpu.task = None
                t.done = True
        finally:
            self.current = None
            self.aborting = False
        self._tasks = [t for t in self._tasks if not t.done]
        self._runnable.clear()
        self._contended.clear()
        self._timers.clear()

    def schedule_digest(self) -> str:
        """A short fingerprint of the interleaving: the CPU drawn at every step."""
        return hashlib.sha256(self.choices.tobytes()).hexdigest()[:16]


def current_task(sched: Scheduler) -> Task:
    t = sched.current
    if t is None:
        raise SchedulerError("no simulated CPU is running")
    return t


__all__ = [
    "Deadlock", "Scheduler", "SchedulerError", "SpinWord", "StepBudgetExceeded", "Task",
    "Site", "WaitQueue", "Waiting", "call_site", "code_line", "current_task", "field", "lazy_site",
]
