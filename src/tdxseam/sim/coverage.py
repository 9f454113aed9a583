"""What a campaign reached: each outcome with its count, and the ones it must reach sometimes.

An outcome is an upload's row of the §5.7 oracle as the run judged it (`none`, `busy`, `image`,
`shutdown`, `install`, `init`, `init-offline`, `update`, `none-stale`), with the hazard it met
in brackets (merged: `td-build-raced`), plus run events worth seeing (`event: ...`). A long clean
campaign that never reaches one of `SOMETIMES[kernel]` fails: a generator or model change has
made that outcome unreachable, and the invariants behind it are no longer exercised.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

# outcomes every long generated campaign must reach, per kernel profile
_COMMON = ("none", "image", "shutdown", "install", "init", "update", "none-stale",
           "event: hotplug refused (last CPU of a package)",
           "event: recovered after reboot (module had been lost)",
           "event: busy CPU taken offline (its tasks migrated)")
SOMETIMES: dict[str, tuple[str, ...]] = {
    "merged": _COMMON + ("init-offline", "none (td-build-raced)"),
    "v10": _COMMON + ("init-offline", "busy"),
    "v4": _COMMON + ("busy",),
}
SOMETIMES_MIN_RUNS = 2000  # shorter campaigns only report


def run_coverage(result: Any) -> Counter:
    """The outcomes of one run (a RunResult)."""
    c: Counter = Counter(u["coverage_outcome"] for u in result.updates)
    if result.stats.get("hotplug_refused"):
        c["event: hotplug refused (last CPU of a package)"] += 1
    if result.stats.get("rebooted") == 2:
        c["event: recovered after reboot (module had been lost)"] += 1
    elif result.stats.get("rebooted"):
        c["event: rebooted, updated again"] += 1
    if result.stats.get("migrated"):
        c["event: busy CPU taken offline (its tasks migrated)"] += 1
    if result.stats.get("irq_in_seamldr_lock"):
        c["event: interrupt on a CPU holding seamldr_lock"] += 1
    if result.stats.get("nmi_in_seamldr_lock"):
        c["event: NMI on a CPU holding seamldr_lock"] += 1
    if result.cpus and result.scenario is not None and result.scenario.sockets > 1:
        c["event: multi-package host"] += 1
    return c


def missing(coverage: dict[str, int], kernel: str, runs: int, *, generated: bool = True) -> list[str]:
    """The `sometimes` outcomes a campaign of `runs` seeds failed to reach (none if too short)."""
    if not generated or runs < SOMETIMES_MIN_RUNS:
        return []
    return [o for o in SOMETIMES.get(kernel, ()) if not coverage.get(o)]


def coverage_lines(coverage: dict[str, int], miss: list[str]) -> list[str]:
    if not coverage:
        return []
    w = max(len(k) for k in coverage)
    out = ["coverage:"]
    out += [f"  {k:<{w}}  {n}" for k, n in sorted(coverage.items(), key=lambda kv: (-kv[1], kv[0]))]
    for o in miss:
        out.append(f"  sometimes-assertion failed: {o!r} never reached")
    return out
