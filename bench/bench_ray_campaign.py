"""Ray campaigns against worker processes: the same seeds, the same results, seed by seed.

    python bench/bench_ray_campaign.py [--runs 2000] [--cpus 2]

Runs seeds 0..RUNS-1 with `--jobs CPUS` worker processes and on a local Ray instance of CPUS
CPUs started here: clean, with `--mutate no-abort`, and with `--mutate no-abort` while one Ray
worker is killed (SIGKILL) a quarter of the way in. Prints, for each, runs, violations, failing
seeds, the seeds digest, whether every seed's record equals the worker processes' one, the
batches retried and runs per second (and Ray's over the processes' as a ratio). Exits 1 if any
Ray campaign differs from its reference.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _ray_workers import kill_a_busy_worker  # noqa: E402

from tdxseam.sim.campaign import run_campaign  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=2000)
    ap.add_argument("--cpus", type=int, default=2, help="worker processes, and the Ray instance's CPUs")
    args = ap.parse_args()
    import ray

    os.environ.setdefault("RAY_AUTH_MODE", "disabled")  # a local instance for this bench only
    ok = True
    refs = {}
    print(f"seeds 0..{args.runs - 1}, {args.cpus} CPUs")
    for muts in ((), ("no-abort",)):
        refs[muts] = run_campaign(args.runs, jobs=args.cpus, mutations=muts, keep_records=True)
    t0 = time.perf_counter()
    tmp = tempfile.mkdtemp(prefix="ray")
    ray.init(address="local", num_cpus=args.cpus, include_dashboard=False, log_to_driver=False,
             _temp_dir=tmp, logging_level="ERROR")
    print(f"  Ray instance started in {time.perf_counter() - t0:.1f} s")
    try:
        for muts, kill in (((), False), (("no-abort",), False), (("no-abort",), True)):
            killed: list[int] = []

            def kill_one(st, kill=kill, killed=killed) -> None:
                if kill and st.total // 4 <= st.done <= 3 * st.total // 4:
                    kill_a_busy_worker(killed)

            res = run_campaign(args.runs, backend="ray", mutations=muts, keep_records=True, progress=kill_one)
            ref = refs[muts]
            same = res.records == ref.records and res.seeds_digest == ref.seeds_digest
            every = sorted(res.records) == list(range(args.runs))
            ok &= same and every and (not kill or (bool(killed) and res.retried >= 1))
            name = ("--mutate no-abort" if muts else "clean") + (", a worker killed" if kill else "")
            print(f"  {name}")
            for label, r in (("--jobs", ref), ("--ray", res)):
                print(f"    {label:<7} runs {r.runs}  violations {r.violations}  failing seeds {len(r.failing)}"
                      f"  digest {r.seeds_digest}  retried {r.retried}  {r.runs / r.seconds:7.1f} runs/s")
            print(f"    every seed once: {every}; equal seed by seed: {same}; "
                  f"ray/processes speed {ref.seconds / res.seconds:.2f}"
                  + (f"; killed worker pid {killed[0]}" if killed else ""))
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
    print("OK" if ok else "MISMATCH")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
