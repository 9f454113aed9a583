"""Replay a seed (same scenario, same interleaving, same trace, byte for byte) and shrink a failure.

Replay is nothing but running again: a run is a function of (scenario, mutations, schedule), and
the scenario a function of the seed. `replay` turns the trace on, which records events without
drawing from the scheduler, so the traced run is the run the campaign made.

Shrinking is greedy delta debugging over `Scenario.simplifications()`: try each smaller variant
(drop all faults, drop one reader, a smaller host, no delays, ...), keep the first that still
fails with a violation of the same kind, and start again from it, until no variant fails or the
run budget is spent. The result keeps the seed, so it runs under the same random stream; its
interleaving differs (there are fewer tasks), which is why the kind of violation, not its step,
is what must persist.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from tdxseam.sim.runner import RunResult, run_scenario
from tdxseam.sim.scenario import Scenario, generate


def replay(seed: int, *, cpus: int | None = None, mutations: tuple[str, ...] = (),
           schedule: str = "random", trace: bool = True, kernel: str = "merged", firmware: str = "model",
           module: str | None = None, to: str | None = None, catalog: Any = None) -> RunResult:
    sc = generate(seed, cpus=cpus, kernel=kernel, firmware=firmware, module=module, to=to)
    return run_scenario(sc, mutations=mutations, schedule=schedule, trace=trace, catalog=catalog)


@dataclass
class ShrinkResult:
    original: Scenario
    scenario: Scenario
    result: RunResult
    kind: str
    runs: int  # candidate runs tried
    steps: int  # accepted simplifications

    def to_json(self) -> dict:
        return {"kind": self.kind, "runs": self.runs, "accepted": self.steps,
                "size_before": self.original.size(), "size_after": self.scenario.size(),
                "scenario": self.scenario.to_json(),
                "violations": [v.to_json() for v in self.result.violations]}


def shrink(scenario: Scenario, *, mutations: tuple[str, ...] = (), schedule: str = "random",
           kind: str | None = None, max_runs: int = 400, catalog: Any = None) -> ShrinkResult:
    """The smallest variant found that still fails with a violation of `kind` (default: the
    first kind the scenario itself fails with). ValueError if the scenario does not fail."""
    base = run_scenario(scenario, mutations=mutations, schedule=schedule, catalog=catalog)
    if not base.violations:
        raise ValueError(f"seed {scenario.seed}: the scenario does not fail; nothing to shrink")
    kind = kind or base.violations[0].kind

    def fails(sc: Scenario) -> RunResult | None:
        r = run_scenario(sc, mutations=mutations, schedule=schedule, catalog=catalog)
        return r if any(v.kind == kind for v in r.violations) else None

    cur, cur_res, runs, accepted = scenario, base, 1, 0
    progress = True
    while progress and runs < max_runs:
        progress = False
        for cand in cur.simplifications():
            if runs >= max_runs:
                break
            if cand.size() >= cur.size():
                continue
            runs += 1
            r = fails(cand)
            if r is not None:
                cur, cur_res, accepted, progress = cand, r, accepted + 1, True
                break
    return ShrinkResult(scenario, cur, cur_res, kind, runs, accepted)
