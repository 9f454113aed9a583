"""Many seeds, in parallel processes: how many runs, how many violations, which seeds fail.

Seeds are cut into chunks; each chunk runs in a worker process (`ProcessPoolExecutor` with the
"spawn" start method, so workers share nothing with the parent and the module is importable from a
fresh interpreter) and sends back one small line per failing seed. The result does not depend on
the number of workers or their timing: every seed's run is a function of the seed alone, and
failing seeds are reported sorted. With `stop_at_first`, chunks are handed out in seed order and
the campaign stops once the lowest failing seed is known, which is how the mutation tests measure
"seeds it took".

For campaigns larger than one machine, `backend="ray"` sends the chunks to a Ray cluster
(`ray.init(address=...)`, default a local one) when the `ray` package is importable (extra
`tdxseam[ray]`); it is never imported otherwise.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context

CHUNK = 25


@dataclass
class SeedFailure:
    seed: int
    violations: int
    kind: str
    message: str
    replay: str
    kinds: dict[str, int] = field(default_factory=dict)  # this seed's violations by kind

    def to_json(self) -> dict:
        return {"seed": self.seed, "violation_count": self.violations, "kind": self.kind,
                "message": self.message, "replay": self.replay}


@dataclass
class CampaignResult:
    runs: int
    violations: int  # invariant violations, summed over every run
    failing: list[SeedFailure]
    seconds: float
    first_seed: int = 0
    mutations: tuple[str, ...] = ()
    cpus: int | None = None
    schedule: str = "random"
    jobs: int = 1
    backend: str = "process"
    steps: int = 0
    kinds: dict[str, int] = field(default_factory=dict)

    @property
    def failing_seeds(self) -> list[int]:
        return [f.seed for f in self.failing]

    @property
    def seeds_to_catch(self) -> int | None:
        """Runs up to and including the lowest failing seed (None if nothing failed)."""
        return self.failing[0].seed - self.first_seed + 1 if self.failing else None

    def to_json(self) -> dict:
        return {
            "runs": self.runs, "violation_count": self.violations, "failing_seeds": self.failing_seeds,
            "seconds": round(self.seconds, 3),
            "failing": [f.to_json() for f in self.failing], "first_seed": self.first_seed,
            "mutations": list(self.mutations), "cpus": self.cpus, "schedule": self.schedule,
            "jobs": self.jobs, "backend": self.backend, "steps": self.steps,
            "runs_per_second": round(self.runs / self.seconds, 1) if self.seconds else None,
            "seeds_to_catch": self.seeds_to_catch, "violation_kinds": dict(sorted(self.kinds.items())),
        }


def run_chunk(seeds: list[int], cpus: int | None, mutations: tuple[str, ...],
              schedule: str) -> tuple[int, int, list[tuple], dict[str, int]]:
    """Worker: run `seeds`; (runs, steps, failures as tuples, violation kinds)."""
    from tdxseam.sim.runner import replay_command, run_seed

    failures = []
    kinds: dict[str, int] = {}
    steps = 0
    for s in seeds:
        r = run_seed(s, cpus=cpus, mutations=mutations, schedule=schedule)
        steps += r.steps
        if r.violations:
            v = r.violations[0]
            mine: dict[str, int] = {}
            for x in r.violations:
                kinds[x.kind] = kinds.get(x.kind, 0) + 1
                mine[x.kind] = mine.get(x.kind, 0) + 1
            failures.append((s, len(r.violations), v.kind, v.message,
                             replay_command(s, cpus=cpus, mutations=mutations, schedule=schedule), mine))
    return len(seeds), steps, failures, kinds


def _chunks(first: int, runs: int, size: int) -> Iterator[list[int]]:
    for start in range(first, first + runs, size):
        yield list(range(start, min(first + runs, start + size)))


def run_campaign(runs: int, *, jobs: int | None = None, seed: int = 0, cpus: int | None = None,
                 mutations: tuple[str, ...] = (), schedule: str = "random", stop_at_first: bool = False,
                 backend: str = "process", chunk: int = CHUNK, ray_address: str | None = None,
                 progress: Callable[[int, int], None] | None = None) -> CampaignResult:
    """Run seeds seed .. seed+runs-1; see the module docstring."""
    if runs < 0:
        raise ValueError("runs must not be negative")
    mutations = tuple(sorted(mutations))
    jobs = max(1, jobs or os.cpu_count() or 1)
    t0 = time.perf_counter()
    done_runs = 0
    steps = 0
    failing: list[SeedFailure] = []
    kinds: dict[str, int] = {}
    total_violations = 0
    # small chunks keep every worker busy to the end (and make stop_at_first stop early)
    chunk = max(1, min(chunk, runs // (jobs * 4) or 1, 10 if stop_at_first else chunk))

    def absorb(res: tuple[int, int, list[tuple], dict[str, int]]) -> None:
        nonlocal done_runs, steps, total_violations
        n, st, fails, k = res
        done_runs += n
        steps += st
        for f in fails:
            failing.append(SeedFailure(*f))
            total_violations += f[1]
        for name, c in k.items():
            kinds[name] = kinds.get(name, 0) + c
        if progress is not None:
            progress(done_runs, runs)

    chunks = _chunks(seed, runs, chunk)  # lazily: a campaign of 10**9 seeds never lists them
    if backend == "ray":
        _run_ray(chunks, cpus, mutations, schedule, stop_at_first, absorb, ray_address, seed, jobs)
    elif backend != "process":
        raise ValueError(f"unknown backend {backend!r} (process or ray)")
    elif jobs == 1 or runs <= chunk:
        for c in chunks:
            absorb(run_chunk(c, cpus, mutations, schedule))
            if stop_at_first and failing:
                break
    else:
        with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
            pending = {}
            it = iter(chunks)
            ran: set[int] = set()

            def submit() -> bool:
                c = next(it, None)
                if c is None:
                    return False
                pending[pool.submit(run_chunk, c, cpus, mutations, schedule)] = c
                return True

            for _ in range(jobs * 2):
                if not submit():
                    break
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    ran.update(pending.pop(fut))
                    absorb(fut.result())
                if stop_at_first and _lowest_settled(failing, ran, seed):
                    for fut in pending:
                        fut.cancel()
                    break
                while len(pending) < jobs * 2 and submit():
                    pass
    failing.sort(key=lambda f: f.seed)
    if stop_at_first and failing:
        # the answer is seeds first..low: every count describes that range (seeds past it that ran
        # in parallel are left out of runs, violations and kinds alike)
        low = failing[0].seed
        failing = [f for f in failing if f.seed == low]
        total_violations = failing[0].violations
        kinds = dict(failing[0].kinds)
        done_runs = low - seed + 1
    return CampaignResult(
        runs=done_runs, violations=total_violations, failing=failing,
        seconds=time.perf_counter() - t0, first_seed=seed, mutations=mutations, cpus=cpus,
        schedule=schedule, jobs=jobs, backend=backend, steps=steps, kinds=kinds,
    )


def ray_available() -> bool:
    try:
        import importlib.util

        return importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):
        return False


def _run_ray(chunks: Iterator[list[int]], cpus: int | None, mutations: tuple[str, ...], schedule: str,
             stop_at_first: bool, absorb: Callable, address: str | None, first: int, jobs: int) -> None:
    if not ray_available():
        raise RuntimeError("the ray backend needs the 'ray' package (pip install 'tdxseam[ray]')")
    import ray  # noqa: PLC0415  (optional dependency)

    if not ray.is_initialized():
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    remote = ray.remote(run_chunk)
    pending: dict = {}
    in_flight = max(jobs, int(ray.cluster_resources().get("CPU", 1))) * 2

    def submit() -> bool:  # a bounded number of chunks in flight, the rest not yet generated
        c = next(chunks, None)
        if c is None:
            return False
        pending[remote.remote(c, cpus, mutations, schedule)] = c
        return True

    while len(pending) < in_flight and submit():
        pass
    ran: set[int] = set()
    failing: list = []

    def take(res: tuple) -> None:
        failing.extend(SeedFailure(*f) for f in res[2])
        absorb(res)

    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        for r in ready:
            ran.update(pending.pop(r))
            take(ray.get(r))
        if stop_at_first and _lowest_settled(failing, ran, first):
            for r in pending:
                ray.cancel(r)
            break
        while len(pending) < in_flight and submit():
            pass


def _lowest_settled(failing: list[SeedFailure], ran: set[int], first: int) -> bool:
    """A failure is known and every seed below the lowest one has run: nothing lower can fail."""
    if not failing:
        return False
    low = min(f.seed for f in failing)
    return all(s in ran for s in range(first, low))
