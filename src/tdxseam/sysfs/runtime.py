"""The machine thread: one thread owns the emulated host and runs every request against it.

Greenlets can only be switched from the thread that created them, so the host is built, booted
and driven by one thread. Requests (a sysfs read from a FUSE worker, a test, the operator tool)
come from any thread as calls queued to it, and each caller waits for its answer.

Between requests the machine thread advances whatever the kernel left running in the background,
such as an update worker, a slice of scheduler steps at a time (`Scheduler.run(slice_steps=...)`,
which pauses a run without changing its interleaving). So an update progresses while nobody asks,
and a `status` read issued meanwhile is answered at the end of the current slice, not at the end
of the update. Only what the kernel itself would block on holds a read up: while stop_machine runs,
every CPU belongs to a stopper, so a read task waits for it, as a read(2) would on real hardware.

Two modes, one interface (`call`):
- threaded (FUSE, the `emulate` command): a daemon thread serves a queue; between requests it runs
  slices while background work is pending and sleeps otherwise.
- inline (tests, in-process tools): no thread; every top-level call first advances the background
  by exactly one slice, then runs. The interleaving then depends only on the seed and the sequence
  of calls, so a test that polls `status` sees the same progress every run.
"""

from __future__ import annotations

import errno
import queue
import signal
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import TYPE_CHECKING, Any

from tdxseam import get_logger

if TYPE_CHECKING:
    from tdxseam.host import EmulatedHost
    from tdxseam.platform.cpu import Cpu
    from tdxseam.platform.sched import Task

log = get_logger("tdxseam.sysfs")

DEFAULT_SLICE_STEPS = 256


class KernelModelError(OSError):
    """Simulated kernel code raised, deadlocked or ran out of steps: a bug in the model.

    The request that meets one fails with EIO (an `OSError`, so the file boundary answers it like
    any other error); the cause is kept in `MachineRuntime.errors` and logged.
    """

    def __init__(self, message: str) -> None:
        super().__init__(errno.EIO, message)


class MachineRuntime:
    """Owns an `EmulatedHost` and runs calls against it on its own thread (or inline)."""

    def __init__(self, factory: Callable[[], EmulatedHost], *, threaded: bool = False,
                 slice_steps: int = DEFAULT_SLICE_STEPS, step_delay: float = 0.0,
                 name: str = "tdxseam-machine") -> None:
        self.slice_steps = max(1, slice_steps)
        self.threaded = threaded
        # Threaded mode only: wall-clock seconds per background scheduler step, so that an update
        # takes visible time (tools can watch `status` move and test their timeouts). Requests
        # are still answered at once; only background progress is paced.
        self.step_delay = max(0.0, step_delay)
        self.errors: list[str] = []
        self.requests = 0
        self.slices = 0
        self._rr = 0
        self._depth = 0
        self._closed = False
        self._factory = factory
        self.host: EmulatedHost
        if threaded:
            self._q: queue.Queue = queue.Queue()
            ready: Future = Future()
            self._thread = threading.Thread(target=self._serve, args=(ready,), name=name, daemon=True)
            self._thread.start()
            ready.result()  # a boot error surfaces here, in the caller's thread
            self._owner = self._thread.ident
        else:
            self._thread = None
            self._owner = threading.get_ident()
            self.host = factory()

    # ---- calls -----------------------------------------------------------------------------------

    def call(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run `fn(*args)` on the machine thread and return its result (or raise its exception)."""
        if threading.get_ident() == self._owner:
            return self._execute(fn, args)
        if not self.threaded:
            raise RuntimeError("an inline MachineRuntime is driven by the thread that created it")
        if self._closed:
            raise OSError(5, "the emulated host is shut down")
        fut: Future = Future()
        self._q.put((fut, fn, args))
        return fut.result()

    def _execute(self, fn: Callable[..., Any], args: tuple) -> Any:
        top = self._depth == 0
        if top:
            self.requests += 1
            if not self.threaded and self.background_pending:
                self._advance(self.slice_steps)  # inline: one slice per request, deterministic
        self._depth += 1
        try:
            return fn(*args)
        finally:
            self._depth -= 1

    # ---- the machine thread ----------------------------------------------------------------------

    def _serve(self, ready: Future) -> None:
        # Signals are for the process's main thread (or libfuse's), never this one: a handler run
        # here could not wake whoever waits for it.
        if hasattr(signal, "pthread_sigmask"):
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
        try:
            self.host = self._factory()
        except BaseException as e:  # noqa: BLE001 - reported to the constructor's caller
            ready.set_exception(e)
            return
        ready.set_result(None)
        paced = max(1, min(self.slice_steps, int(0.01 / self.step_delay))) if self.step_delay else 0
        while True:
            try:
                if not self.background_pending:
                    item = self._q.get()
                elif paced:
                    item = self._q.get(timeout=paced * self.step_delay)
                else:
                    item = self._q.get_nowait()
            except queue.Empty:
                self._advance(paced or self.slice_steps)
                continue
            if item is None:
                break
            fut, fn, args = item
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(self._execute(fn, args))
            except BaseException as e:  # noqa: BLE001 - handed to the waiting caller
                fut.set_exception(e)
        # shutting down: refuse whatever is still queued
        while True:
            try:
                item = self._q.get_nowait()
            except queue.Empty:
                break
            if item is not None and item[0].set_running_or_notify_cancel():
                item[0].set_exception(OSError(5, "the emulated host is shut down"))

    def close(self, *, drain: bool = True) -> None:
        """Stop serving. With `drain`, background work (an update in flight) first runs to its end,
        so the host is left in a state the kernel could be in, never halfway through a lockstep."""
        if self._closed:
            return
        if drain:
            self.call(self.settle)
        self._closed = True
        if self.threaded and self._thread is not None:
            self._q.put(None)
            self._thread.join()

    # ---- scheduling --------------------------------------------------------------------------------

    @property
    def background_pending(self) -> bool:
        """Is there kernel work (a worker, stoppers) that could run now?

        Tasks that sleep on something only a later request can give (a lock that request will
        release) are not pending: the machine then waits for requests, as an idle kernel would.
        """
        return bool(self.host.sched.paused) and not self._stalled()

    def _stalled(self) -> bool:
        """Nothing can run: the scheduler's next draw would find no task."""
        return not self.host.sched.can_run()

    def describe_waits(self) -> str:
        tasks = self.host.sched.live_tasks()
        return "; ".join(str(t.wait_info) for t in tasks if t.wait_info) or "?"

    def _advance(self, steps: int) -> None:
        self.slices += 1
        try:
            # A run with nothing runnable pauses instead of ending in a "deadlock": a kernel task
            # asleep until a later request wakes it is waiting, not stuck.
            dl = self.host.sched.run(slice_steps=steps, until=self._stalled)
        except Exception as e:  # noqa: BLE001 - StepBudgetExceeded or a scheduler misuse
            self._record(f"background run failed: {e!r}")
            return
        self._collect(dl, None)

    def settle(self, max_steps: int | None = None) -> bool:
        """Run background work until nothing can run (or for `max_steps`).

        True if no kernel task is left at all; False if some still sleep (waiting for something
        no request has given yet) or the step budget ran out."""
        run = self.host.sched
        budget = max_steps
        while self.background_pending:
            step = self.slice_steps * 64 if budget is None else min(budget, self.slice_steps * 64)
            if step <= 0:
                break
            before = run.steps
            self._advance(step)
            if budget is not None:
                budget -= max(1, run.steps - before)
        return not run.live_tasks()

    def _pick_cpu(self) -> Cpu:
        """Round-robin over online CPUs, preferring one with nothing to run (deterministic)."""
        cpus = [c for c in self.host.machine.cpus if c.online]
        n = len(cpus)
        start = self._rr % n
        self._rr += 1
        for i in range(n):
            c = cpus[(start + i) % n]
            if c.task is None and not c.runqueue:
                return c
        return cpus[start]

    def run_kernel(self, fn: Callable[..., Any], *args: Any, cpu: Cpu | None = None,
                   name: str | None = None) -> Any:
        """Run host kernel code as a task on a simulated CPU until it returns; other tasks (an
        update in progress) interleave with it as the seeded scheduler decides, and whatever they
        have not finished keeps running in later slices. Machine thread only."""
        sched = self.host.sched
        t: Task = sched.spawn(cpu or self._pick_cpu(), fn, *args, name=name)
        try:
            dl = sched.run(until=lambda: t.done or self._stalled())
        except Exception as e:  # noqa: BLE001
            self._record(f"{t.name}: run failed: {e!r}")
            raise KernelModelError(f"{t.name}: {e}") from e
        own = self._collect(dl, t)
        if own is not None:
            raise KernelModelError(f"{t.name} raised {own!r}") from own
        if dl is not None:
            raise KernelModelError(f"{t.name}: {dl.describe()}")
        if not t.done:
            # The kernel would block this caller until something wakes it; nothing here can.
            self._record(f"{t.name} blocked: {self.describe_waits()}")
            raise KernelModelError(f"{t.name} blocked: {self.describe_waits()}")
        return t.result

    def _collect(self, dl: Any, own: Task | None) -> BaseException | None:
        sched = self.host.sched
        mine = None
        for task, err in sched.errors:
            if task is own:
                mine = err
            else:
                self._record(f"{task.name} on cpu{task.cpu.id} raised {err!r}")
        sched.errors.clear()
        if dl is not None:
            self._record(dl.describe())
        return mine

    def _record(self, text: str) -> None:
        self.errors.append(text)
        log.error("emulated kernel: %s", text)

