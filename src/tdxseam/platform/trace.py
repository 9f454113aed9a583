"""The event trace of a run: what each CPU did, at which scheduler step.

Events are stored as tuples and formatted only when printed, so tracing a long run costs little.
An event may carry structured `args` (registers, counters) beside its text; they are kept apart,
by event index, for exporters such as the Chrome trace (`tdxseam.sim.chrome_trace`), and change
neither the text nor the digest. Callers that build args check `enabled` first, so a run that is
not traced builds none.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator


class Trace:
    def __init__(self, enabled: bool = True, limit: int | None = None) -> None:
        self.enabled = enabled
        self.limit = limit
        self.events: list[tuple[int, int, str, str]] = []
        self.dropped = 0
        self.args: dict[int, dict] = {}  # event index -> structured data of that event

    def emit(self, step: int, cpu: int, kind: str, detail: str = "", args: dict | None = None) -> None:
        if not self.enabled:
            return
        if self.limit is not None and len(self.events) >= self.limit:
            self.dropped += 1
            return
        if args is not None:
            self.args[len(self.events)] = args
        self.events.append((step, cpu, kind, detail))

    def lines(self) -> Iterator[str]:
        for step, cpu, kind, detail in self.events:
            who = f"cpu{cpu}" if cpu >= 0 else "firmware"  # -1: no CPU running (boot-time loader)
            yield f"{step:>9} {who:<8} {kind:<14} {detail}".rstrip()
        if self.dropped:
            yield f"... {self.dropped} more events not recorded (trace limit {self.limit})"

    def text(self) -> str:
        return "\n".join(self.lines()) + ("\n" if self.events else "")

    def digest(self) -> str:
        h = hashlib.sha256()
        for line in self.lines():
            h.update(line.encode())
            h.update(b"\n")
        return h.hexdigest()[:16]
