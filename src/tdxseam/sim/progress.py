"""How far a campaign has got, as one line that rewrites itself on a terminal.

`run_campaign` reports a `CampaignStatus` after every batch of seeds, whatever the backend (worker
processes or Ray); `format_status` is its line (seeds done, violations so far, rate, ETA, batches
retried), which the command line draws on a terminal with cli/progress.py and nowhere else.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CampaignStatus:
    done: int  # seeds run so far
    total: int
    violations: int  # invariant violations so far, summed over the seeds
    failing: int  # failing seeds so far
    elapsed: float  # seconds since the campaign began
    retried: int = 0  # batches sent again after their worker died

    @property
    def rate(self) -> float:
        return self.done / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def eta(self) -> float | None:
        """Seconds left at the rate so far (None before the first seed is in)."""
        return (self.total - self.done) / self.rate if self.rate > 0 else None


def _duration(s: float) -> str:
    s = int(round(s))
    if s < 60:
        return f"{s} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {s % 3600 // 60:02d} min"


def format_status(st: CampaignStatus) -> str:
    pct = 100.0 * st.done / st.total if st.total else 100.0
    eta = "?" if st.eta is None else _duration(st.eta)
    line = (f"campaign: {st.done}/{st.total} seeds ({pct:.0f}%), {st.violations} violation(s) in "
            f"{st.failing} seed(s), {st.rate:.1f} runs/s, ETA {eta}")
    if st.retried:
        line += f", {st.retried} batch(es) retried"
    return line
