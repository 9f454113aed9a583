"""Machine instructions per 8-CPU scenario, counted by valgrind: a speed figure no other load disturbs.

Run with `.venv/bin/python bench/bench_sim_instructions.py [--runs N] [--against SRC]`. Wall and
CPU time on a shared or virtual machine move by a third from one hour to the next; the count of
instructions a scenario executes moves by well under a percent, so two versions of the code
compare by it (`--against` takes the `src` directory of another checkout, e.g. one made with
`git worktree add` or `git archive`). Each figure is a difference of two runs under cachegrind,
both warming up the same seeds first (test images signed, host shapes imaged, as in a long
campaign), one then running seeds 0..N-1 once more: what is left is what a campaign pays per
scenario. Hash randomization is fixed (PYTHONHASHSEED=0) so dict layouts are the same each time.
About 50 times slower than a plain run: 40 seeds take a minute.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

# the child: warm up seeds 0..N-1, then run them again `again` times (0 or 1)
CHILD = """
import sys
from tdxseam.sim.runner import SimRun
from tdxseam.sim.scenario import generate
n, again = int(sys.argv[1]), int(sys.argv[2])
for _ in range(1 + again):
    for s in range(n):
        SimRun(generate(s, cpus=8)).run()
"""


def instructions(src: Path, runs: int, again: int) -> int:
    env = dict(os.environ, PYTHONPATH=str(src), PYTHONHASHSEED="0")
    out = subprocess.run(
        ["valgrind", "--tool=cachegrind", "--cache-sim=no", "--cachegrind-out-file=/dev/null",
         sys.executable, "-c", CHILD, str(runs), str(again)],
        env=env, capture_output=True, text=True, check=True).stderr
    m = re.search(r"I\s+refs:\s+([\d,]+)", out)
    if m is None:
        raise SystemExit(f"no instruction count in valgrind's output:\n{out[-2000:]}")
    return int(m.group(1).replace(",", ""))


def per_scenario(src: Path, runs: int) -> float:
    return (instructions(src, runs, 1) - instructions(src, runs, 0)) / runs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=40, help="seeds 0..N-1 (8-CPU hosts)")
    ap.add_argument("--against", type=Path, help="another checkout's src directory, counted the same way")
    args = ap.parse_args()
    if shutil.which("valgrind") is None:
        print("  skipped: valgrind not found (Debian package valgrind)")  # `make bench` goes on
        return
    here = Path(__file__).resolve().parent.parent / "src"
    print(f"tdxseam simulation, instructions per 8-CPU scenario (seeds 0..{args.runs - 1}, every check on)")
    new = per_scenario(here, args.runs)
    print(f"  this tree        {new / 1e6:7.2f} M instructions per scenario")
    if args.against is not None:
        old = per_scenario(args.against.resolve(), args.runs)
        print(f"  --against        {old / 1e6:7.2f} M instructions per scenario")
        print(f"  ratio            {old / new:7.3f} (against / this tree: above 1, this tree executes fewer)")


if __name__ == "__main__":
    main()
