"""A data-race detector for shared kernel data, in the spirit of KCSAN (with a lockset rule).

Kernel code names each shared field once (`SharedField("update_ctrl", "num_ack")`) and calls
`kcsan_access(k, field, write=..., marked=...)` at every access (`marked` for
READ_ONCE/WRITE_ONCE). Each access is recorded with its CPU and the raw spinlocks that CPU holds.
Two accesses to the same field race when they come from different CPUs, at least one writes, at
least one is plain (unmarked), and the two locksets have no lock in common; the first such pair
per field is reported, naming both CPUs, sites and locksets.

The detector is off until `enable()` (the simulator turns it on); when `preempt` is set, every
recorded access is also a preemption point, so a schedule can interleave CPUs between a plain
read and the write that depends on it and the race can also show as a wrong outcome.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tdxseam.platform.sched import Site

if TYPE_CHECKING:
    from tdxseam.kernel.kernel import Kernel


class SharedField:
    """A shared kernel field the detector watches, named once where the kernel declares it: an
    access finds the field's records by this object's identity, with no name to build or hash.
    One object per name (a pickled host's records still find theirs when loaded)."""

    __slots__ = ("obj", "name")
    _declared: dict[tuple[str, str], SharedField] = {}

    def __new__(cls, obj: str, name: str) -> SharedField:
        fld = cls._declared.get((obj, name))
        if fld is None:
            fld = cls._declared[(obj, name)] = super().__new__(cls)
            fld.obj = obj
            fld.name = name
        return fld

    def __reduce__(self) -> tuple:
        return (SharedField, (self.obj, self.name))

    def __str__(self) -> str:
        return f"{self.obj}.{self.name}"

    def __repr__(self) -> str:
        return f"SharedField({self.obj!r}, {self.name!r})"


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
    # per field, (reads, writes): each the two latest accesses of that kind from distinct CPUs
    _last: dict[SharedField, tuple[list[tuple], list[tuple]]] = field(default_factory=dict)
    _reported: set[SharedField] = field(default_factory=set)

    def enable(self, *, preempt: bool = False) -> None:
        self.enabled = True
        self.preempt = preempt

    def forget(self, obj: str) -> None:
        """A new object under this name (e.g. the next update's control data): start afresh."""
        for fld in [f for f in self._last if f.obj == obj]:
            del self._last[fld]


def _site(code, lasti: int) -> str:
    return str(Site(code, lasti))


def kcsan_access(k: Kernel, fld: SharedField, *, write: bool, marked: bool = False) -> None:
    """Record one access of `fld` by the running CPU (see the module docstring)."""
    kc = k.kcsan
    if not kc.enabled:
        return
    cpu = k.machine.sched.current.cpu
    if kc.preempt and not marked:  # only a plain access can be half of a race
        cpu.preempt_point()
    kc.accesses += 1
    cid = cpu.id
    locks = k.lockdep.held_names.get(cid, _NO_LOCKS)  # the names of the raw spinlocks it holds
    shadow = kc._last.get(fld)
    if shadow is None:
        shadow = kc._last[fld] = ([], [])
    # records are plain tuples (cpu, marked, locks, code, instruction offset): Access objects and
    # site strings are made only for a report
    if fld not in kc._reported:
        # the two most recent accesses of each kind from distinct CPUs: O(1) per access however
        # many CPUs there are (KCSAN, too, only sees accesses that meet in time); a read races
        # only with writes, a write with both
        for prev in shadow[1]:
            if prev[0] != cid and not (prev[1] and marked) and prev[2].isdisjoint(locks):
                _report(k, kc, fld, prev, True, cid, write, marked, locks)
                break
        else:
            if write:
                for prev in shadow[0]:
                    if prev[0] != cid and not (prev[1] and marked) and prev[2].isdisjoint(locks):
                        _report(k, kc, fld, prev, False, cid, write, marked, locks)
                        break
    recent = shadow[write]
    r0 = recent[0] if recent else None
    if r0 is not None and r0[0] == cid and r0[1] == marked and r0[2] == locks:
        return  # the same kind of access from here again: the record stands
    f = sys._getframe(1)
    rec = (cid, marked, locks, f.f_code, f.f_lasti)
    if r0 is None:
        recent.append(rec)
    elif r0[0] == cid:
        recent[0] = rec
    else:
        recent[:] = (rec, r0)


def _report(k: Kernel, kc: Kcsan, fld: SharedField, prev: tuple, w: bool, cid: int, write: bool, marked: bool,
            locks: frozenset[str]) -> None:
    """Report this access (in kcsan_access's caller) racing with `prev`, an earlier one of kind `w`."""
    f = sys._getframe(2)
    first = Access(prev[0], w, prev[1], prev[2], _site(prev[3], prev[4]))
    second = Access(cid, write, marked, locks, _site(f.f_code, f.f_lasti))
    kc._reported.add(fld)
    kc.reports.append(RaceReport(str(fld), first, second))
    k.printk(40, f"BUG: KCSAN: {kc.reports[-1].message}")


_NO_LOCKS: frozenset[str] = frozenset()
