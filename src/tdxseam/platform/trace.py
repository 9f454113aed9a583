"""The event trace of a run: what each CPU did, at which scheduler step.

Events are stored as tuples and formatted only when printed, so tracing a long run costs little.
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

    def emit(self, step: int, cpu: int, kind: str, detail: str = "") -> None:
        if not self.enabled:
            return
        if self.limit is not None and len(self.events) >= self.limit:
            self.dropped += 1
            return
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
