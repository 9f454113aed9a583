"""Many seeds, in parallel processes or on a Ray cluster: how many runs, how many violations, which seeds fail.

Seeds are cut into batches; each batch runs in a worker (a process of a `ProcessPoolExecutor`
with the "spawn" start method, so workers share nothing with the parent and the module is
importable from a fresh interpreter; or a Ray task) and sends back one small record per seed
(`run_chunk`). The result does not depend on the backend, the number of workers or their timing:
every seed's run is a function of the seed alone, records are merged in any order and failing
seeds are reported sorted. `seeds_digest` sums a hash of every seed's record (its interleaving,
violation count and kinds), so two campaigns over the same seeds agree seed by seed exactly when
their digests match, and a seed lost or counted twice changes it. With `stop_at_first`, batches
are handed out in seed order and the campaign stops once the lowest failing seed is known, which
is how the mutation tests measure "seeds it took".

`backend="ray"` runs the batches as Ray tasks, on the cluster at `ray_address` or on a local Ray
instance started for the campaign (`ray` package, extra `tdxseam[ray]`, imported only then).
Batches are sized for the cluster's CPUs and handed out a window at a time, so results stream
back while later batches are still queued. A batch whose worker died (process killed, node lost)
is sent again, up to `RAY_RESUBMITS` times, and counted in `retried`: no seed is lost, and
none is counted twice (a batch's records are taken once, from the one attempt that finished).
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from multiprocessing import get_context

from tdxseam.sim.progress import CampaignStatus

CHUNK = 25  # seeds per batch for worker processes (at most)
RAY_CHUNK = 100  # seeds per Ray task (at most): a task costs a few ms, a seed about as much
RAY_RESUBMITS = 3  # times a batch is sent again after its worker died, before the campaign gives up
_DIGEST_MOD = 1 << 64


class CampaignError(RuntimeError):
    """The campaign could not run every seed (a batch kept losing its worker, Ray unreachable)."""


class RayUnreachable(CampaignError):
    """No Ray cluster answers at the address given, or no local instance could start."""


def _probe(address: str, timeout: float = 5.0) -> None:
    """Fail fast on a HOST:PORT nobody listens on (Ray itself retries for minutes, printing)."""
    import socket

    host, sep, port = address.rpartition(":")
    if "://" in address or not sep or not port.isdigit():
        return  # "auto", a ray:// client address, ...: left to Ray
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
    except OSError as e:
        raise RayUnreachable(f"no Ray cluster at {address}: {e.strerror or e}") from None


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
    seeds_digest: str = ""
    retried: int = 0  # batches sent again after their worker died (Ray)
    records: dict[int, dict] | None = None  # every seed's record, when asked for (keep_records)
    kernel: str = "merged"
    coverage: dict[str, int] = field(default_factory=dict)  # outcome -> count (sim/coverage.py)

    @property
    def missing_sometimes(self) -> list[str]:
        from tdxseam.sim.coverage import missing

        return missing(self.coverage, self.kernel, self.runs, generated=not self.mutations)

    def coverage_lines(self) -> list[str]:
        from tdxseam.sim.coverage import coverage_lines

        return coverage_lines(self.coverage, self.missing_sometimes)

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
            "seeds_digest": self.seeds_digest, "retried_batches": self.retried,
            "kernel": self.kernel, "coverage": dict(sorted(self.coverage.items())),
            "missing_sometimes": self.missing_sometimes,
        }


def run_chunk(seeds: list[int], cpus: int | None, mutations: tuple[str, ...],
              schedule: str, kernel: str = "merged") -> list[dict]:
    """Worker: run `seeds`; one record per seed.

    A record is a plain dict, so a new field is one more key: `seed`, `steps`, `schedule` (the
    interleaving's digest), `violations` (count), `kinds` ({kind: count}), `coverage`
    ({outcome: count}, sim/coverage.py) and, for a failing seed, `failure` ([first kind, its
    message, the replay command]).
    """
    from tdxseam.sim.coverage import run_coverage
    from tdxseam.sim.runner import replay_command, run_seed

    out = []
    for s in seeds:
        r = run_seed(s, cpus=cpus, mutations=mutations, schedule=schedule, kernel=kernel)
        rec: dict = {"seed": s, "steps": r.steps, "schedule": r.schedule_digest,
                     "violations": len(r.violations), "kinds": {}, "coverage": dict(run_coverage(r))}
        for x in r.violations:
            rec["kinds"][x.kind] = rec["kinds"].get(x.kind, 0) + 1
        if r.violations:
            v = r.violations[0]
            rec["failure"] = [v.kind, v.message,
                              replay_command(s, cpus=cpus, mutations=mutations, schedule=schedule,
                                             kernel=kernel)]
        out.append(rec)
    return out


def record_hash(rec: dict) -> int:
    """A seed's contribution to `seeds_digest`: what must be equal for two runs of it to agree."""
    key = (f"{rec['seed']}:{rec['schedule']}:{rec['violations']}:{sorted(rec['kinds'].items())}:"
           f"{sorted(rec['coverage'].items())}")
    return int.from_bytes(hashlib.sha256(key.encode()).digest()[:8], "little")


def _chunks(first: int, runs: int, size: int) -> Iterator[list[int]]:
    for start in range(first, first + runs, size):
        yield list(range(start, min(first + runs, start + size)))


class _Tally:
    """The campaign's running totals, fed one batch of records at a time."""

    def __init__(self, total: int, keep_records: bool,
                 progress: Callable[[CampaignStatus], None] | None) -> None:
        self.total = total
        self.t0 = time.perf_counter()
        self.t_run = self.t0  # when seeds began to run (after a Ray instance came up): for rates
        self.runs = 0
        self.steps = 0
        self.violations = 0
        self.failing: list[SeedFailure] = []
        self.kinds: dict[str, int] = {}
        self.coverage: dict[str, int] = {}
        self.digest = 0
        self.retried = 0
        self.ran: set[int] = set()  # seeds whose records are in (each taken once)
        self.records: dict[int, dict] | None = {} if keep_records else None
        self.progress = progress

    def absorb(self, records: list[dict]) -> None:
        for rec in records:
            s = rec["seed"]
            if s in self.ran:
                raise CampaignError(f"seed {s} reported twice")  # a bug in the backend, never data
            self.ran.add(s)
            self.runs += 1
            self.steps += rec["steps"]
            self.violations += rec["violations"]
            self.digest = (self.digest + record_hash(rec)) % _DIGEST_MOD
            for name, c in rec["kinds"].items():
                self.kinds[name] = self.kinds.get(name, 0) + c
            for name, c in rec["coverage"].items():
                self.coverage[name] = self.coverage.get(name, 0) + c
            if "failure" in rec:
                kind, message, replay = rec["failure"]
                self.failing.append(SeedFailure(s, rec["violations"], kind, message, replay,
                                                dict(rec["kinds"])))
            if self.records is not None:
                self.records[s] = rec
        if self.progress is not None:
            self.progress(self.status())

    def status(self) -> CampaignStatus:
        return CampaignStatus(self.runs, self.total, self.violations, len(self.failing),
                              time.perf_counter() - self.t_run, self.retried)


def run_campaign(runs: int, *, jobs: int | None = None, seed: int = 0, cpus: int | None = None,
                 mutations: tuple[str, ...] = (), schedule: str = "random", stop_at_first: bool = False,
                 backend: str = "process", chunk: int | None = None, ray_address: str | None = None,
                 progress: Callable[[CampaignStatus], None] | None = None,
                 keep_records: bool = False, kernel: str = "merged") -> CampaignResult:
    """Run seeds seed .. seed+runs-1; see the module docstring.

    `jobs`: worker processes, or the CPUs of the local Ray instance (default: every CPU; on a
    cluster, the cluster's). `progress` is called after every batch.
    """
    if runs < 0:
        raise ValueError("runs must not be negative")
    if backend not in ("process", "ray"):
        raise ValueError(f"unknown backend {backend!r} (process or ray)")
    mutations = tuple(sorted(mutations))
    tally = _Tally(runs, keep_records, progress)
    args = (cpus, mutations, schedule, kernel)
    if backend == "ray":
        jobs = _run_ray(tally, seed, runs, args, stop_at_first, jobs, ray_address, chunk)
    else:
        jobs = max(1, jobs or os.cpu_count() or 1)
        _run_processes(tally, seed, runs, args, stop_at_first, jobs, chunk or CHUNK)
    failing = sorted(tally.failing, key=lambda f: f.seed)
    total_violations, kinds, runs_counted = tally.violations, tally.kinds, tally.runs
    if stop_at_first and failing:
        # the answer is seeds first..low: every count describes that range (seeds past it that ran
        # in parallel are left out of runs, violations and kinds alike)
        low = failing[0].seed
        failing = failing[:1]
        total_violations = failing[0].violations
        kinds = dict(failing[0].kinds)
        runs_counted = low - seed + 1
    records = None if tally.records is None else dict(sorted(tally.records.items()))
    return CampaignResult(
        runs=runs_counted, violations=total_violations, failing=failing,
        seconds=time.perf_counter() - tally.t0, first_seed=seed, mutations=mutations, cpus=cpus,
        schedule=schedule, jobs=jobs, backend=backend, steps=tally.steps, kinds=kinds,
        seeds_digest=f"{tally.digest:016x}", retried=tally.retried, records=records,
        kernel=kernel, coverage=tally.coverage,
    )


def _batch_size(runs: int, workers: int, cap: int, stop_at_first: bool) -> int:
    """Small enough that every worker stays busy to the end (and stop_at_first stops early)."""
    return max(1, min(cap, runs // (workers * 4) or 1, 10 if stop_at_first else cap))


def _run_processes(tally: _Tally, first: int, runs: int, args: tuple, stop_at_first: bool,
                   jobs: int, cap: int) -> None:
    size = _batch_size(runs, jobs, cap, stop_at_first)
    chunks = _chunks(first, runs, size)  # lazily: a campaign of 10**9 seeds never lists them
    if jobs == 1 or runs <= size:
        for c in chunks:
            tally.absorb(run_chunk(c, *args))
            if stop_at_first and tally.failing:
                break
        return
    with ProcessPoolExecutor(max_workers=jobs, mp_context=get_context("spawn")) as pool:
        pending = {}

        def submit() -> bool:
            c = next(chunks, None)
            if c is None:
                return False
            pending[pool.submit(run_chunk, c, *args)] = c
            return True

        for _ in range(jobs * 2):
            if not submit():
                break
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            for fut in done:
                pending.pop(fut)
                tally.absorb(fut.result())
            if stop_at_first and _lowest_settled(tally.failing, tally.ran, first):
                for fut in pending:
                    fut.cancel()
                break
            while len(pending) < jobs * 2 and submit():
                pass


def ray_available() -> bool:
    try:
        import importlib.util

        return importlib.util.find_spec("ray") is not None
    except (ImportError, ValueError):
        return False


def _run_ray(tally: _Tally, first: int, runs: int, args: tuple, stop_at_first: bool,
             jobs: int | None, address: str | None, cap: int | None) -> int:
    """Run the batches as Ray tasks; returns the CPUs the cluster offered."""
    if not ray_available():
        raise CampaignError("the ray backend needs the 'ray' package (pip install 'tdxseam[ray]')")
    import ray  # noqa: PLC0415  (optional dependency)
    from ray.exceptions import RayError, RayTaskError

    started = False
    if not ray.is_initialized():
        quiet = {"log_to_driver": False, "logging_level": logging.ERROR}
        if address:
            _probe(address)
        try:
            if address:
                ray.init(address=address, **quiet)
            else:  # "local": a new instance even when another cluster runs on this machine
                ray.init(address="local", num_cpus=jobs, include_dashboard=False, **quiet)
        except (ConnectionError, RuntimeError, ValueError) as e:
            where = f"the Ray cluster at {address}" if address else "a local Ray instance"
            raise RayUnreachable(f"cannot start or reach {where}: {e}") from None
        started = True
    tally.t_run = time.perf_counter()
    try:
        workers = max(1, int(ray.cluster_resources().get("CPU", 1)))
        size = _batch_size(runs, workers, cap or RAY_CHUNK, stop_at_first)
        todo = _chunks(first, runs, size)  # lazily, a window at a time
        # max_retries=0: a batch whose worker dies comes back as an error here, and is sent again
        # by us, so the campaign knows (and says) how many batches it retried
        remote = ray.remote(max_retries=0)(run_chunk)
        window = 2 * workers
        pending: dict = {}  # ObjectRef -> (batch, attempts so far)

        def submit(c: list[int], attempt: int) -> None:
            pending[remote.remote(c, *args)] = (c, attempt)

        for c in todo:
            submit(c, 0)
            if len(pending) >= window:
                break
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            for ref in ready:
                c, attempt = pending.pop(ref)
                try:
                    records = ray.get(ref)
                except RayTaskError as e:  # our code raised in the worker: a bug, not a lost worker
                    raise e.as_instanceof_cause() from None
                except RayError as e:  # the worker or its node died: send the batch again
                    if attempt >= RAY_RESUBMITS:
                        raise CampaignError(f"seeds {c[0]}..{c[-1]}: worker lost {attempt + 1} times "
                                            f"({type(e).__name__})") from None
                    tally.retried += 1
                    submit(c, attempt + 1)
                    continue
                tally.absorb(records)
            if stop_at_first and _lowest_settled(tally.failing, tally.ran, first):
                for ref in pending:
                    ray.cancel(ref)
                break
            for c in todo:
                submit(c, 0)
                if len(pending) >= window:
                    break
        return workers
    finally:
        if started:
            ray.shutdown()


def _lowest_settled(failing: list[SeedFailure], ran: set[int], first: int) -> bool:
    """A failure is known and every seed below the lowest one has run: nothing lower can fail."""
    if not failing:
        return False
    low = min(f.seed for f in failing)
    return all(s in ran for s in range(first, low))
