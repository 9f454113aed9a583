"""Schedules beyond the seeded random draw: PCT priorities and bounded exhaustive exploration.

Both plug into the scheduler's draw policy (`Scheduler.pick`): at each point where more than one
task could run, the policy is asked which of `Scheduler.candidates()` runs next.

PCT (Burckhardt, Kothari, Musuvathi, Nagarakatte: "A randomized scheduler with probabilistic
guarantees of finding bugs", ASPLOS 2010): every task gets a random priority when first seen, the
highest-priority candidate always runs, and at d-1 random points of the run the task that just ran
drops below every initial priority. A bug that needs d ordering constraints is found with
probability at least 1/(n k^(d-1)) per run (n tasks, k steps), where random draws mostly
interleave finely and rarely starve one CPU for long, as many lockstep bugs need.

Exhaustive exploration (`explore`): a depth-first search over the choice points, in the manner of
stateless model checkers (CHESS): every run replays a prefix of choices, then lets the current task
go on when it can (no preemption) and records what else could have run. Backtracking flips the
deepest choice that still has an untried alternative. Bounds keep it finite: at most `preemptions`
switches away from a task that could have continued, choices only at the first `depth` branching
points, at most `max_schedules` runs. Each run is a distinct schedule (its choice sequence differs
from every other one); the report says how many were covered and whether the bounded space was
exhausted.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from tdxseam.sim.scenario import Scenario


class PctPolicy:
    """Priority-based draws (PCT) with `depth` - 1 priority change points in `horizon` decisions."""

    name = "pct"

    def __init__(self, seed: int, *, depth: int = 3, horizon: int = 1500) -> None:
        self.rng = random.Random(f"tdxseam pct {seed}")  # the priorities
        self.depth = max(1, depth)
        k = max(2, horizon)
        # change points from their own stream, so a run's prefix before the first change point is
        # the same whatever the depth (the horizon probe relies on it)
        cp = random.Random(f"tdxseam pct change points {seed}")
        self.change_points = sorted(cp.sample(range(1, k), min(self.depth - 1, k - 1)))
        self.prio: dict[Any, float] = {}
        self.decisions = 0
        self.last: Any = None
        self.lowered = 0

    def __call__(self, sched: Any, n: int) -> int:
        cands = sched.candidates()
        prio = self.prio
        for t in cands:
            if t not in prio:
                prio[t] = self.depth + self.rng.random()  # initial priorities are all above d
        self.decisions += 1
        while self.change_points and self.decisions >= self.change_points[0]:
            self.change_points.pop(0)
            if self.last is not None:
                # the task that ran last falls below every initial priority (the i-th change to d-i)
                self.lowered += 1
                prio[self.last] = self.depth - self.lowered
        best = 0
        bp = prio[cands[0]]
        for i in range(1, n):
            p = prio[cands[i]]
            if p > bp:
                best, bp = i, p
        self.last = cands[best]
        return best


def measured_horizon(scenario: Scenario, mutations: tuple[str, ...] | frozenset[str] = (), *,
                     catalog: Any = None) -> int:
    """PCT's horizon k for a scenario: the decisions its PCT run makes without change points (a
    probe run with the same priorities), so the d-1 change points fall inside the run rather than
    past its end (the run is the probe's up to the first change point)."""
    from tdxseam.sim.runner import SimRun

    probe = PctPolicy(scenario.seed, depth=1)
    SimRun(scenario, mutations=mutations, schedule=probe, catalog=catalog).run()
    return max(2, probe.decisions)


@dataclass
class _Node:
    n: int  # candidates at this choice point
    default: int  # the index that continues the running task (or 0)
    preemptive: bool  # choosing anything else switches away from a task that could go on


class _Follow:
    """Replays `prefix` (as ranks: 0 = the default, r = the r-th other candidate), then defaults."""

    name = "exhaustive"

    def __init__(self, prefix: list[int], depth: int) -> None:
        self.prefix = prefix
        self.depth = depth
        self.nodes: list[_Node] = []
        self.ranks: list[int] = []
        self.last: Any = None

    def __call__(self, sched: Any, n: int) -> int:
        cands = sched.candidates()
        default = 0
        preemptive = False
        if self.last is not None:
            for i, t in enumerate(cands):
                if t is self.last:
                    default, preemptive = i, True
                    break
        i = len(self.ranks)
        rank = self.prefix[i] if i < len(self.prefix) else 0
        if rank >= n:  # cannot happen for a deterministic model; stay safe
            rank = 0
        if i < self.depth:
            self.nodes.append(_Node(n, default, preemptive))
            self.ranks.append(rank)
        order = [default] + [j for j in range(n) if j != default]
        pick = order[rank]
        self.last = cands[pick]
        return pick


@dataclass
class Exploration:
    schedules: int  # runs made, each a distinct choice sequence
    distinct_interleavings: int  # distinct sequences of CPUs run (schedule digests)
    exhausted: bool  # the whole bounded space was covered
    failing: list[tuple[list[int], list[str]]] = field(default_factory=list)  # (prefix, violations)
    seconds: float = 0.0
    max_choice_points: int = 0

    def to_json(self) -> dict:
        return {"schedules": self.schedules, "distinct_interleavings": self.distinct_interleavings,
                "exhausted": self.exhausted, "violation_count": len(self.failing),
                "failing_schedules": [compact(p) for p, _ in self.failing[:10]],
                "first_violations": self.failing[0][1] if self.failing else [],
                "seconds": round(self.seconds, 3), "max_choice_points": self.max_choice_points}


def compact(ranks: list[int]) -> str:
    """A schedule as its non-default choices, "point:rank ..." ("default": none), for `--choices`."""
    return " ".join(f"{i}:{r}" for i, r in enumerate(ranks) if r) or "default"


def parse_compact(text: str) -> list[int]:
    """The inverse of `compact`."""
    text = text.strip()
    if text in ("", "default"):
        return []
    pairs = []
    for part in text.replace(",", " ").split():
        i, _, r = part.partition(":")
        if not (i.isdigit() and r.isdigit()):
            raise ValueError(f"{part!r}: expected POINT:RANK")
        pairs.append((int(i), int(r)))
    ranks = [0] * (max(i for i, _ in pairs) + 1)
    for i, r in pairs:
        ranks[i] = r
    return ranks


def run_schedule(scenario: Scenario, ranks: list[int], *, mutations: tuple[str, ...] | frozenset[str] = (),
                 depth: int = 400, trace: bool = False) -> Any:
    """One schedule of an exploration again (by its choices), e.g. to print its trace."""
    from tdxseam.sim.runner import SimRun

    return SimRun(scenario, mutations=mutations, schedule=_Follow(list(ranks), depth), trace=trace).run()


def explore(scenario: Scenario, *, mutations: tuple[str, ...] | frozenset[str] = (), preemptions: int = 1,
            depth: int = 400, max_schedules: int = 2000, stop_on_violation: bool = False,
            progress: Callable[[int, int], None] | None = None) -> Exploration:
    """Run `scenario` under every schedule within the bounds (depth-first); count and check them.
    `progress(runs, max_schedules)` after every run (the space may end sooner)."""
    from tdxseam.sim.runner import SimRun

    t0 = time.perf_counter()
    prefix: list[int] = []
    digests: set[str] = set()
    runs = 0
    failing: list[tuple[list[int], list[str]]] = []
    exhausted = False
    max_nodes = 0
    while runs < max_schedules:
        policy = _Follow(prefix, depth)
        result = SimRun(scenario, mutations=mutations, schedule=policy).run()
        runs += 1
        if progress is not None:
            progress(runs, max_schedules)
        digests.add(result.schedule_digest)
        max_nodes = max(max_nodes, len(policy.nodes))
        if result.violations:
            failing.append((list(policy.ranks), [str(v) for v in result.violations[:3]]))
            if stop_on_violation:
                break
        # backtrack: the deepest node with an untried alternative within the preemption bound
        nodes, ranks = policy.nodes, policy.ranks
        used = [0] * (len(nodes) + 1)
        for i, (node, r) in enumerate(zip(nodes, ranks)):
            used[i + 1] = used[i] + (1 if r and node.preemptive else 0)
        nxt = None
        for i in range(len(nodes) - 1, -1, -1):
            node, r = nodes[i], ranks[i]
            if r + 1 >= node.n:
                continue
            cost = used[i] + (1 if node.preemptive else 0)
            if cost > preemptions:
                continue
            nxt = ranks[:i] + [r + 1]
            break
        if nxt is None:
            exhausted = True
            break
        prefix = nxt
    return Exploration(runs, len(digests), exhausted, failing, time.perf_counter() - t0, max_nodes)
