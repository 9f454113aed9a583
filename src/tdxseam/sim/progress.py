"""How far a campaign has got, as one line that rewrites itself on a terminal.

`run_campaign` reports a `CampaignStatus` after every batch of seeds, whatever the backend (worker
processes or Ray). `ProgressLine` shows it on a terminal (seeds done, violations so far, rate,
ETA, batches retried) and stays silent when the stream is not a terminal, so logs and pipes get
only the final report.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from typing import TextIO


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


class ProgressLine:
    """Call it with each `CampaignStatus`; `close()` when done. Writes only to a terminal."""

    def __init__(self, stream: TextIO | None = None, *, min_interval: float = 0.2,
                 enabled: bool | None = None) -> None:
        self.stream = stream if stream is not None else sys.stderr
        if enabled is None:
            isatty = getattr(self.stream, "isatty", None)
            enabled = bool(isatty and isatty())
        self.enabled = enabled
        self.min_interval = min_interval
        self._last = float("-inf")
        self._shown = False

    def __call__(self, st: CampaignStatus) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if now - self._last < self.min_interval and st.done < st.total:
            return  # a terminal redraw per batch would cost more than the batch on big clusters
        self._last = now
        self.stream.write("\r" + format_status(st) + "\x1b[K")
        self.stream.flush()
        self._shown = True

    def close(self) -> None:
        """Clear the line, so the report that follows starts on a clean one."""
        if self._shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._shown = False
