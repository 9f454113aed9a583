"""A data-race detector for shared kernel data, in the spirit of KCSAN (with a lockset rule).

Kernel code that touches a shared field calls `kcsan_access(k, obj, field, write=..., marked=...)`
(`marked` for READ_ONCE/WRITE_ONCE). Each access is recorded with its CPU and the raw spinlocks
that CPU holds. Two accesses to the same field race when they come from different CPUs, at least
one writes, at least one is plain (unmarked), and the two locksets have no lock in common; the
first such pair per field is reported, naming both CPUs, sites and locksets.

The detector is off until `enable()` (the simulator turns it on); when `preempt` is set, every
recorded access is also a preemption point, so a schedule can interleave CPUs between a plain
read and the write that depends on it and the race can also show as a wrong outcome.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tdxseam.platform.sched import call_site

if TYPE_CHECKING:
    from tdxseam.kernel.kernel import Kernel


@dataclass(frozen=True)
class Access:
    cpu: int
    write: bool
    marked: bool
    locks: frozenset[str]
    site: str

    def describe(self) -> str:
        kind = ("WRITE_ONCE" if self.write else "READ_ONCE") if self.marked else ("write" if self.write else "read")
        held = ", ".join(sorted(self.locks)) or "no lock"
        return f"{kind} on cpu{self.cpu} at {self.site} holding {held}"


@dataclass
class RaceReport:
    field: str
    first: Access
    second: Access

    @property
    def message(self) -> str:
        return (f"data race on {self.field}: {self.second.describe()}, "
                f"racing with {self.first.describe()}")


@dataclass
class Kcsan:
    enabled: bool = False
    preempt: bool = False
    reports: list[RaceReport] = field(default_factory=list)
    accesses: int = 0
    # per field, for writes and for reads: the two latest accesses from distinct CPUs
    # ("v" counts changes; "seen" is the last access checked, to skip a spin's repeats)
    _last: dict[str, dict] = field(default_factory=dict)
    _reported: set[str] = field(default_factory=set)

    def enable(self, *, preempt: bool = False) -> None:
        self.enabled = True
        self.preempt = preempt

    def forget(self, obj: str) -> None:
        """A new object under this name (e.g. the next update's control data): start afresh."""
        for key in [k for k in self._last if k.startswith(obj + ".")]:
            del self._last[key]


def kcsan_access(k: Kernel, obj: str, name: str, *, write: bool, marked: bool = False) -> None:
    """Record one access of `obj.name` by the running CPU (see the module docstring)."""
    kc = k.kcsan
    if not kc.enabled:
        return
    cpu = k.machine.sched.current.cpu
    if kc.preempt and not marked:  # only a plain access can be half of a race
        cpu.preempt_point()
    kc.accesses += 1
    key = obj + "." + name
    held = k.lockdep.held.get(cpu.id)
    locks = frozenset(lock.name for lock in held) if held else _NO_LOCKS
    last = kc._last.get(key)
    if last is None:
        last = kc._last[key] = {True: [], False: [], "v": 0, "seen": None}
    cid = cpu.id
    me = (cid, write, marked, locks, last["v"])
    if last["seen"] == me:
        return  # the same access again (a spin), and nothing recorded since: already checked
    last["seen"] = me
    if key not in kc._reported:
        # the two most recent accesses of each kind from distinct CPUs: O(1) per access however
        # many CPUs there are (KCSAN, too, only sees accesses that meet in time)
        for prev in (last[True] + last[False]) if write else last[True]:
            if prev.cpu == cid or (prev.marked and marked) or prev.locks & locks:
                continue
            acc = Access(cid, write, marked, locks, call_site(2))
            kc._reported.add(key)
            kc.reports.append(RaceReport(key, prev, acc))
            k.printk(40, f"BUG: KCSAN: {kc.reports[-1].message}")
            break
    recent = last[write]
    if recent and recent[0].cpu == cid and recent[0].marked == marked and recent[0].locks == locks:
        return  # the same kind of access from here again: the record (and its site) stands
    acc = Access(cid, write, marked, locks, call_site(2))
    last[write] = [acc] + [a for a in recent if a.cpu != cid][:1]
    last["v"] += 1
    last["seen"] = (cid, write, marked, locks, last["v"])


_NO_LOCKS: frozenset[str] = frozenset()
