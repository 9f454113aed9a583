"""Foundation benchmark: scheduler events/s, P-SEAMLDR calls/s, and the cost of a release with N
parked spinners. Plain printed figures; run with `.venv/bin/python bench/bench_foundation.py`.

Every run is seeded (seeds are printed), so the step counts are reproducible; wall-clock figures
depend on the machine.
"""

from __future__ import annotations

import time

from tdxseam.host import EmulatedHost
from tdxseam.platform.machine import Machine
from tdxseam.platform.sched import SpinWord
from tdxseam.sim.stress import run_stress

SEED = 1


def bench_scheduler(ncpus: int, total_steps: int, seed: int = SEED) -> None:
    """Pure scheduler events: every CPU does nothing but preemption points."""
    m = Machine(ncpus, seed=seed, trace=False)
    per_cpu = max(1, total_steps // ncpus)

    def work(cpu):
        for _ in range(per_cpu):
            cpu.preempt_point()

    for c in m.cpus:
        m.sched.spawn(c, work, c)
    t0 = time.perf_counter()
    dl = m.sched.run()
    dt = time.perf_counter() - t0
    assert dl is None
    steps = m.sched.steps
    print(f"  scheduler  cpus={ncpus:<5} seed={seed}  steps={steps:>8}  {dt:6.2f} s  "
          f"{steps / dt:>10,.0f} steps/s  digest={m.sched.schedule_digest()}")


def bench_seamldr_calls(ncpus: int, calls: int, irq_calls: bool, seed: int = SEED) -> None:
    """seamldr_call (serialized, irqsave) from every CPU; boot time measured apart and excluded."""
    EmulatedHost(ncpus, seed=seed, trace=False)  # warm-up: the boot module is synthesized once
    t0 = time.perf_counter()
    EmulatedHost(ncpus, seed=seed, trace=False)
    boot = time.perf_counter() - t0
    t0 = time.perf_counter()
    res, _host = run_stress(ncpus, calls, seed=seed, irq_calls=irq_calls)
    total = time.perf_counter() - t0
    dt = max(total - boot, 1e-9)
    assert res.failed == 0 and res.max_inside == 1 and not res.deadlock and not res.lock_reports
    irq = "with irq calls" if irq_calls else "task calls only"
    print(f"  seamldr    cpus={ncpus:<5} seed={seed}  {irq:<15}  calls={res.calls:>7} "
          f"(irq {res.irq_calls:>6})  steps={res.steps:>8}  {dt:6.2f} s  "
          f"{res.calls / dt:>9,.0f} calls/s  {res.steps / dt:>10,.0f} steps/s  "
          f"(boot {boot:.2f} s excluded)  digest={res.schedule_digest}")


def bench_release(nspinners: int, hold: int = 2000, seed: int = SEED) -> None:
    """cpu0 holds a lock word while `nspinners` CPUs spin on it, then releases it once."""
    m = Machine(nspinners + 1, seed=seed, trace=False)
    sched = m.sched
    w = SpinWord(sched, "L")
    marks: dict[str, float] = {}

    def holder():
        cpu = m.cpus[0]
        while len(w.waiters) < nspinners:
            cpu.preempt_point()
        marks["s0"], marks["t0"] = sched.steps, time.perf_counter()
        for _ in range(hold):
            cpu.preempt_point()  # each of these is one step however many CPUs spin
        marks["s1"], marks["t1"] = sched.steps, time.perf_counter()
        w.release()
        cpu.preempt_point()

    def spinner(cpu):
        cpu.spin_acquire(w, "L", "bench")
        if "s2" not in marks:
            marks["s2"], marks["t2"] = sched.steps, time.perf_counter()
        w.release()

    w.try_acquire(sched.spawn(m.cpus[0], holder))
    for c in m.cpus[1:]:
        sched.spawn(c, spinner, c)
    assert sched.run() is None
    t_end = time.perf_counter()
    held_steps = marks["s1"] - marks["s0"]
    held_us = (marks["t1"] - marks["t0"]) / hold * 1e6
    handoff_steps = marks["s2"] - marks["s1"]
    handoff_us = (marks["t2"] - marks["t1"]) * 1e6
    drain_steps_per = (sched.steps - marks["s1"]) / nspinners
    drain_us_per = (t_end - marks["t1"]) / nspinners * 1e6
    print(f"  release    spinners={nspinners:<5} seed={seed}  held: {held_steps / hold:.2f} steps "
          f"and {held_us:5.2f} us per holder preemption  release->first owner: {handoff_steps} steps, "
          f"{handoff_us:7.1f} us  drain: {drain_steps_per:.2f} steps, {drain_us_per:5.1f} us per spinner")


def main() -> None:
    t0 = time.perf_counter()
    print("tdxseam foundation benchmark")
    print("scheduler events per second (every CPU only preempts):")
    bench_scheduler(64, 500_000)
    bench_scheduler(1024, 500_000)
    print("P-SEAMLDR calls per second through seamldr_call (serialized, irqsave):")
    for irq in (False, True):
        bench_seamldr_calls(64, 1000, irq)
    for irq in (False, True):
        bench_seamldr_calls(1024, 60, irq)
    print("one release of a lock with N parked spinners (must not grow with N):")
    for n in (10, 100, 1000, 4000):
        bench_release(n)
    print(f"total {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
