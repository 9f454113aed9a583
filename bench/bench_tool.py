"""Operator tool benchmarks: `tdxseam plan --json` over Intel's fixture releases with every signature
checked, and the CLI's start-up time (`tdxseam --help`).

    .venv/bin/python bench/bench_tool.py [--runs N]

Figures printed (milliseconds, median of N runs, with min and max):
- plan, in-process: read a host root, load the catalog (9 releases), verify every file (RSA-3072
  signature, key pin, SEAMHASH over the module), apply every rule, compare with Intel's choice;
- plan --json, whole command: the same as a user runs it (interpreter start-up included);
- `tdxseam --help`: start-up with nothing but typer loaded, against a bare `python -c pass`;
- the heaviest imports of `tdxseam --help` (python -X importtime), to find a regression.
The host is a plain directory with the sysfs files of a 1.5.06 / P-SEAMLDR 1.5.00 host.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tests"))
HELP_GOAL_MS = 150


def intel_dir() -> Path | None:
    env = os.environ.get("TDXSEAM_INTEL_BINARIES")
    for c in ([Path(env)] if env else []) + [REPO.parent / "shared" / "fixtures" / "intel-tdx-module-binaries"]:
        if (c / "mapping_file.json").is_file():
            return c
    return None


def stats(ms: list[float]) -> str:
    return f"median {statistics.median(ms):7.1f} ms   min {min(ms):7.1f}   max {max(ms):7.1f}   (n={len(ms)})"


def timed_runs(cmd: list[str], runs: int, env: dict | None = None) -> list[float]:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        r = subprocess.run(cmd, capture_output=True, env=env, cwd=REPO)
        out.append((time.perf_counter() - t) * 1000)
        if r.returncode not in (0,):
            raise SystemExit(f"{' '.join(cmd)} exited {r.returncode}: {r.stderr.decode()[:300]}")
    return out


def bench_plan(fixtures: Path, runs: int) -> None:
    from _tool_host import make_root
    from tdxseam.tool.catalog import load_catalog
    from tdxseam.tool.hostinfo import read_host
    from tdxseam.tool.plan import make_plan

    with tempfile.TemporaryDirectory() as tmp:
        root = make_root(Path(tmp))
        times, plan = [], None
        for _ in range(runs):
            t = time.perf_counter()
            plan = make_plan(read_host(root), load_catalog(fixtures))
            times.append((time.perf_counter() - t) * 1000)
        sigs = sum(1 for c in plan.candidates if c.verified is not None and c.verified.sig is not None)
        verified = sum(1 for c in plan.candidates if c.verified is not None and c.verified.ok)
        print(f"plan, in-process ({len(plan.candidates)} releases, {sigs} signatures and SEAMHASHes "
              f"checked, {verified} pass; selected {plan.selected.version if plan.selected else None}):")
        print(f"  {stats(times)}")
        cmd = [sys.executable, "-m", "tdxseam.cli", "plan", "--json", "--catalog", str(fixtures),
               "--sysfs-root", str(root)]
        ms = timed_runs(cmd, runs)
        out = subprocess.run(cmd, capture_output=True, cwd=REPO).stdout
        size = len(out)
        assert json.loads(out)["selected"]["version"] == "1.5.13"
        print(f"tdxseam plan --json, whole command ({size} bytes of JSON):")
        print(f"  {stats(ms)}")


def bench_startup(runs: int) -> None:
    exe = Path(sys.executable).parent / "tdxseam"
    help_cmd = [str(exe), "--help"] if exe.exists() else [sys.executable, "-m", "tdxseam.cli", "--help"]
    timed_runs(help_cmd, 2)  # warm the page cache and .pyc files
    base = timed_runs([sys.executable, "-c", "pass"], runs)
    ms = timed_runs(help_cmd, runs)
    med = statistics.median(ms)
    print(f"python -c pass (interpreter alone):")
    print(f"  {stats(base)}")
    print(f"{' '.join(Path(help_cmd[0]).name if i == 0 else a for i, a in enumerate(help_cmd))}:")
    print(f"  {stats(ms)}   goal < {HELP_GOAL_MS} ms: {'met' if med < HELP_GOAL_MS else 'NOT met'}")
    r = subprocess.run([sys.executable, "-X", "importtime", "-m", "tdxseam.cli", "--help"],
                       capture_output=True, text=True, cwd=REPO)
    rows = []
    for line in r.stderr.splitlines():
        parts = line.split("|")
        if len(parts) == 3 and parts[1].strip().isdigit():
            rows.append((int(parts[1]), parts[2].rstrip()))
    heavy = [name.strip() for _, name in rows if name.strip().split(".")[0] in ("rich", "cryptography", "greenlet")]
    print("heaviest imports of --help (cumulative us):")
    for us, name in sorted(rows, reverse=True)[:6]:
        print(f"  {us:8d}  {name.strip()}")
    print(f"rich / cryptography / greenlet loaded by --help: {', '.join(heavy) if heavy else 'none'}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=9)
    args = ap.parse_args()
    fixtures = intel_dir()
    if fixtures is None:
        print("plan: skipped (Intel fixtures not found; set TDXSEAM_INTEL_BINARIES)")
    else:
        bench_plan(fixtures, args.runs)
    bench_startup(args.runs)


if __name__ == "__main__":
    main()
