"""A run's event trace in the Chrome trace-event JSON format, for Perfetto and chrome://tracing.

Built from the scheduler's `Trace` after the run, so tracing costs nothing more while it runs:

- one process, the emulated host; one thread (track) per CPU, named `cpuN`, and `firmware` for
  what ran before any CPU did (boot-time loading);
- a slice per SEAMCALL (`X`, leaf name; args: input registers, how it ended, status, output
  registers), per spinlock hold and spin (`lock`/`lock-spin` to `unlock`/`lock`), per interrupt
  handler; the lockstep states of a module update as `B`/`E` pairs on every CPU that runs them;
- instant events (`i`) for injected faults, interrupts raised, CPU hotplug, stop_machine, the
  SEAM side's milestones, kernel log lines and the simulator's notes; invariant violations are
  global instants;
- a counter (`C`) of the CPUs that acked the current lockstep state.

Timestamps are scheduler steps, not microseconds (the format's unit); `otherData` says so.
Slices on one CPU nest, since a CPU only switches tasks where it holds no lock and runs no
SEAMCALL; a slice a run left open (a deadlock ended it) is closed at the last step, and one
that would break nesting is closed with the slice it straddles, and counted in `otherData`.
"""

from __future__ import annotations

import errno
import json
import os
import stat
from typing import IO, Any

from tdxseam.platform.trace import Trace

PID = 1
FIRMWARE_TID = 0

# Trace kinds shown by a slice rather than an instant (or folded into one: the SEAM side's
# entry and exit events sit inside the SEAMCALL slice that carries the same leaf).
_SLICE_KINDS = {"seamcall", "seamret", "lock", "unlock", "lock-spin", "irq-enter", "irq-exit",
                "update-state", "update-leave", "update-ack", "module-call", "seamldr-enter",
                "seamldr-exit"}
_CATEGORY = {"fault": "fault", "irq-raise": "irq", "cpu-offline": "hotplug", "cpu-online": "hotplug",
             "printk": "log", "sim": "sim", "sim-violation": "violation", "stop_machine": "lockstep"}


def tid_of(cpu: int) -> int:
    return FIRMWARE_TID if cpu < 0 else cpu + 1


class _Builder:
    def __init__(self) -> None:
        self.out: list[dict] = []
        self.stacks: dict[int, list[tuple[str, str, int]]] = {}  # tid -> open (name, ph, out index)
        self.misnested = 0
        self.acked = 0

    def open(self, tid: int, ts: int, name: str, cat: str, args: dict | None = None,
             ph: str = "X") -> None:
        ev: dict[str, Any] = {"name": name, "cat": cat, "ph": ph, "ts": ts, "pid": PID, "tid": tid}
        if args:
            ev["args"] = args
        self.stacks.setdefault(tid, []).append((name, ph, len(self.out)))
        self.out.append(ev)

    def _end(self, tid: int, ts: int, entry: tuple[str, str, int], args: dict | None = None) -> None:
        name, ph, i = entry
        if ph == "X":
            self.out[i]["dur"] = ts - self.out[i]["ts"]
            if args:
                self.out[i].setdefault("args", {}).update(args)
        else:
            ev: dict[str, Any] = {"name": name, "cat": self.out[i]["cat"], "ph": "E", "ts": ts,
                                  "pid": PID, "tid": tid}
            if args:
                ev["args"] = args
            self.out.append(ev)

    def close(self, tid: int, ts: int, name: str, args: dict | None = None) -> bool:
        """Close the innermost open slice called `name` (and any left open inside it)."""
        stack = self.stacks.get(tid, [])
        for depth in range(len(stack) - 1, -1, -1):
            if stack[depth][0] == name:
                while len(stack) > depth + 1:
                    self.misnested += 1
                    self._end(tid, ts, stack.pop())
                self._end(tid, ts, stack.pop(), args)
                return True
        return False

    def top(self, tid: int) -> tuple[str, str, int] | None:
        stack = self.stacks.get(tid)
        return stack[-1] if stack else None

    def instant(self, tid: int, ts: int, name: str, cat: str, args: dict | None = None,
                scope: str = "t") -> None:
        ev: dict[str, Any] = {"name": name, "cat": cat, "ph": "i", "s": scope, "ts": ts, "pid": PID}
        if scope == "t":
            ev["tid"] = tid
        if args:
            ev["args"] = args
        self.out.append(ev)

    def counter(self, ts: int, acked: int) -> None:
        if acked != self.acked:
            self.acked = acked
            self.out.append({"name": "CPUs acked", "cat": "lockstep", "ph": "C", "ts": ts, "pid": PID,
                             "args": {"acked": acked}})


def _state_name(detail: str) -> str:
    return detail.removeprefix("MODULE_UPDATE_")


def chrome_trace(trace: Trace, *, cpus: int, title: str = "tdxseam run", meta: dict | None = None) -> dict:
    """The trace-event JSON object (JSON Object Format) of `trace`, from a host of `cpus` CPUs."""
    b = _Builder()
    last = 0
    for i, (step, cpu, kind, detail) in enumerate(trace.events):
        last = step
        tid = tid_of(cpu)
        args = trace.args.get(i)
        if kind == "seamcall":
            b.open(tid, step, detail, "seamcall", {"in": (args or {}).get("in", {})})
        elif kind == "seamret":
            leaf = (args or {}).get("leaf", detail.split(" ", 1)[0])
            out = {k: v for k, v in (args or {}).items() if k in ("end", "status", "out")}
            b.close(tid, step, leaf, out)
        elif kind == "lock-spin":
            b.open(tid, step, f"spin {detail}", "spin")
        elif kind == "lock":
            b.close(tid, step, f"spin {detail}")
            b.open(tid, step, detail, "lock")
        elif kind == "unlock":
            b.close(tid, step, detail)
        elif kind == "irq-enter":
            b.open(tid, step, f"irq {detail}", "irq")
        elif kind == "irq-exit":
            b.close(tid, step, f"irq {detail}")
        elif kind == "update-state":
            top = b.top(tid)
            if top is not None and top[1] == "B":
                b.close(tid, step, top[0])
            if b.acked:
                b.counter(step, 0)  # a new state: nobody has acked it yet
            b.open(tid, step, _state_name(detail), "lockstep", ph="B")
        elif kind == "update-leave":
            top = b.top(tid)
            if top is not None and top[1] == "B":
                b.close(tid, step, top[0], {"ret": detail.removeprefix("ret=")})
        elif kind == "update-ack":
            if args:
                b.counter(step, args["acked"])
        elif kind in _SLICE_KINDS:
            continue  # inside the SEAMCALL slice of the same leaf
        elif kind == "sim-violation":
            b.instant(tid, step, "violation", "violation", {"what": detail}, scope="g")
        else:
            b.instant(tid, step, kind, _CATEGORY.get(kind, "seam"), {"detail": detail} if detail else None)
    for tid, stack in b.stacks.items():  # slices a run left open (a deadlock, or a trace limit)
        while stack:
            b._end(tid, last, stack.pop())
    used = sorted({tid_of(c) for _, c, _, _ in trace.events} | {tid_of(c) for c in range(cpus)})
    names = [{"name": "process_name", "ph": "M", "pid": PID, "args": {"name": title}}]
    for tid in used:
        names.append({"name": "thread_name", "ph": "M", "pid": PID, "tid": tid,
                      "args": {"name": "firmware" if tid == FIRMWARE_TID else f"cpu{tid - 1}"}})
        names.append({"name": "thread_sort_index", "ph": "M", "pid": PID, "tid": tid,
                      "args": {"sort_index": tid}})
    other = {"clock": "ts counts scheduler steps of the deterministic simulation (one step per "
                      "preemption point), not microseconds",
             "ts_unit": "scheduler step", "steps": last, "events": len(trace.events),
             "events_dropped": trace.dropped, "misnested_closed": b.misnested,
             "trace_digest": trace.digest()}
    other.update(meta or {})
    return {"traceEvents": names + b.out, "otherData": other}


def open_output(path: str | os.PathLike[str], mode: str = "w") -> IO[Any]:
    """Open `path` to write a new regular file, never through a symlink, FIFO or device."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    fd = os.open(path, flags, 0o644)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file")
        os.set_blocking(fd, True)
        os.ftruncate(fd, 0)
        return os.fdopen(fd, mode)
    except BaseException:
        os.close(fd)
        raise


def write_chrome_trace(path: str | os.PathLike[str], trace: Trace, *, cpus: int,
                       title: str = "tdxseam run", meta: dict | None = None) -> dict:
    """Write the trace as JSON to `path`; returns what was written."""
    doc = chrome_trace(trace, cpus=cpus, title=title, meta=meta)
    with open_output(path) as f:
        json.dump(doc, f, separators=(",", ":"))
        f.write("\n")
    return doc
