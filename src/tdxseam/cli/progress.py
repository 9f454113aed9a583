"""Progress of a long run (stress, campaign, explore) on a terminal: count, rate and ETA.

A campaign draws its own text (sim/progress.py: violations so far, batches retried) with `show`.

One line on stderr, rewritten at most five times a second, and cleared at the end; nothing at
all when stderr is not a terminal, so logs and pipes see only the result.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO


def _duration(s: float) -> str:
    s = int(s + 0.5)
    return f"{s // 3600}h{s // 60 % 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class Progress:
    """`Progress("campaign", total, "runs")(done, total)`: a callback for the long-running loops."""

    def __init__(self, label: str, unit: str, *, stream: TextIO | None = None, enabled: bool | None = None,
                 clock=time.monotonic, every: float = 0.2) -> None:  # noqa: ANN001
        from tdxseam.cli.output import raw

        self.label, self.unit = label, unit
        self.stream = raw(stream if stream is not None else sys.stderr)
        self.enabled = self.stream.isatty() if enabled is None else enabled
        self.clock, self.every = clock, every
        self.t0 = clock()
        self.last = float("-inf")
        self.shown = False

    def line(self, done: int, total: int, now: float) -> str:
        elapsed = now - self.t0
        rate = done / elapsed if elapsed > 0 else 0.0
        text = f"{self.label}: {done:,}/{total:,} {self.unit}"
        if total:
            text += f" ({100 * done // total}%)"
        text += f", {rate:,.1f}/s"
        if 0 < done < total and rate > 0:
            text += f", ETA {_duration((total - done) / rate)}"
        return text

    def __call__(self, done: int, total: int) -> None:
        self.show(lambda now: self.line(done, total, now), final=done >= total)

    def show(self, text, *, final: bool = False) -> None:  # noqa: ANN001
        """Redraw the line with `text(now)` (built only when drawn): at most every `every` seconds,
        and always for the final one."""
        if not self.enabled:
            return
        now = self.clock()
        if now - self.last < self.every and not final:
            return
        self.last = now
        self.stream.write("\r\033[K" + text(now))
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            self.stream.write("\r\033[K")
            self.stream.flush()
            self.shown = False
