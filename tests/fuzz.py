"""`make fuzz`: the fuzz properties of fuzz_targets.py, round after round, until the time is up.

    .venv/bin/python tests/fuzz.py [--seconds 600] [--seed S] [--examples N] [--only NAME ...]

Each round runs every property for N examples, seeded from S and the round number (the seed is
printed; the same seed replays the same rounds). At the end it prints the counts: runs in all and
per property, exit-70 count, tracebacks, accepted changes, unnamed errors, and failed properties.
Exit status 1 if any of them is not zero. `$FUZZ_SECONDS` and `$FUZZ_SEED` set the defaults.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import time
import traceback
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from hypothesis import HealthCheck, given, seed, settings  # noqa: E402

from fuzz_targets import BAD, COUNTS, PROPERTIES  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=float(os.environ.get("FUZZ_SECONDS", "600")))
    ap.add_argument("--seed", type=int, default=int(os.environ.get("FUZZ_SEED", random.SystemRandom().randrange(1 << 32))))
    ap.add_argument("--examples", type=int, default=200, help="examples per property per round")
    ap.add_argument("--only", nargs="*", choices=sorted(PROPERTIES), help="these properties only")
    args = ap.parse_args()
    names = args.only or list(PROPERTIES)
    print(f"fuzz: seed {args.seed}, {args.seconds:g} s, properties: {', '.join(names)}", flush=True)
    deadline = time.monotonic() + args.seconds
    failures: list[str] = []
    rounds = 0
    while time.monotonic() < deadline:
        for name in names:
            if time.monotonic() >= deadline:
                break
            fn, strategies, _ = PROPERTIES[name]
            test = seed(args.seed * 1_000_003 + rounds)(settings(
                max_examples=args.examples, deadline=None, database=None, derandomize=False,
                print_blob=True, suppress_health_check=list(HealthCheck))(given(**strategies)(fn)))
            try:
                test()
            except Exception:  # a property failed: hypothesis has shrunk it and printed the example
                failures.append(f"{name} (round {rounds})")
                traceback.print_exc()
        rounds += 1
        print(f"fuzz: round {rounds} done, {COUNTS['runs']} runs, "
              f"{sum(COUNTS[k] for k in BAD)} problems", flush=True)
    print(f"fuzz: seed {args.seed}, {rounds} rounds")
    for name in names:
        print(f"  {name:14} {COUNTS['runs.' + name]:8d} runs")
    print(f"runs: {COUNTS['runs']}")
    for k in BAD:
        print(f"{k.replace('_', ' ')}: {COUNTS[k]}")
    print(f"failed properties: {len(failures)}" + (f" ({', '.join(failures)})" if failures else ""))
    return 1 if failures or any(COUNTS[k] for k in BAD) else 0


if __name__ == "__main__":
    sys.exit(main())
