"""Hammer the P-SEAMLDR from every CPU, in task and interrupt context, and count what breaks.

The protections of `seamldr_call` can be switched off (`unserialized`, `no_irqsave`) to show what
each one prevents: without the lock callers meet inside the P-SEAMLDR and fail with VMfailInvalid;
without irqsave an interrupt handler spins on a lock its own CPU holds.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field

from tdxseam.host import EmulatedHost
from tdxseam.kernel.seamldr import seamldr_get_info

IRQ_SHARE = 0.3  # with irq_calls, the share of calls made from interrupt handlers


@dataclass
class StressResult:
    seed: int
    cpus: int
    kernel: str = "merged"
    calls: int = 0
    failed: int = 0
    irq_calls: int = 0
    max_inside: int = 0
    refused: int = 0
    lock_reports: list[dict] = field(default_factory=list)
    deadlock: bool = False
    deadlock_report: str | None = None
    steps: int = 0
    schedule_digest: str = ""

    def to_json(self) -> dict:
        return {
            "seed": self.seed, "kernel": self.kernel, "cpus": self.cpus, "calls": self.calls, "failed": self.failed,
            "irq_calls": self.irq_calls, "max_inside": self.max_inside, "refused": self.refused,
            "lock_reports": self.lock_reports, "deadlock": self.deadlock,
            "deadlock_report": self.deadlock_report, "steps": self.steps,
            "schedule_digest": self.schedule_digest,
        }


def run_stress(cpus: int, calls: int, *, seed: int = 0, irq_calls: bool = False,
               unserialized: bool = False, no_irqsave: bool = False, trace: bool = False,
               max_steps: int | None = None, kernel: str = "merged",
               progress: Callable[[int, int], None] | None = None) -> tuple[StressResult, EmulatedHost]:
    """`progress(done, total)` is told of every 64th call (and the last), for a progress line."""
    mutations = set()
    if unserialized:
        mutations.add("no-lock")
    if no_irqsave:
        mutations.add("no-irqsave")
    host = EmulatedHost(cpus, seed=seed, mutations=frozenset(mutations), trace=trace,
                        max_steps=max_steps, kernel=kernel)
    k, m = host.kernel, host.machine
    res = StressResult(seed=seed, cpus=cpus, kernel=host.kernel.profile.name)
    boot_steps = m.sched.steps
    boot_choices = len(m.sched.choices)

    def one_call(from_irq: bool) -> None:
        ret, _info = seamldr_get_info(k)
        res.calls += 1
        res.irq_calls += from_irq
        res.failed += ret != 0
        if progress is not None and (res.calls % 64 == 0 or res.calls == cpus * calls):
            progress(res.calls, cpus * calls)

    def worker(cpu_id: int) -> None:
        rng = random.Random(seed * 1_000_003 + cpu_id)
        cpu = m.cpus[cpu_id]
        for _ in range(calls):
            if irq_calls and rng.random() < IRQ_SHARE:
                target = m.cpus[rng.randrange(cpus)]
                m.irq.raise_irq(target, one_call, True, name="seamldr-info-irq")
            else:
                one_call(False)
            cpu.preempt_point()

    for c in m.cpus:
        m.sched.spawn(c, worker, c.id, name=f"stress-cpu{c.id}")
    dl = host.run()
    res.max_inside = host.fw.stats.max_seamldr_in_flight
    res.refused = host.fw.stats.seamldr_refused
    res.lock_reports = [r.to_json() for r in k.lockdep.reports]
    res.deadlock = dl is not None
    res.deadlock_report = dl.describe() if dl else None
    res.steps = m.sched.steps - boot_steps
    import hashlib
    res.schedule_digest = hashlib.sha256(m.sched.choices[boot_choices:].tobytes()).hexdigest()[:16]
    return res, host
