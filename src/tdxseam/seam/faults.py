"""Fault plans: make any SEAMCALL on any CPU fail with a chosen status, on purpose.

A plan is a list of rules, each matching a leaf (or any), a CPU (or any) and which occurrence of
that match to hit (or every one); the action is a status to answer in RAX instead of running the
leaf, or a different end of the instruction (VMfailInvalid, #GP, #UD). The door consults the plan
before a leaf runs, so an injected failure leaves the SEAM side untouched, like a leaf that
rejected its inputs. Plans are plain data so the simulator can generate, print and shrink them.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from tdxseam.formats.leaves import SeamldrLeaf, TdxLeaf, leaf_name
from tdxseam.formats.status import SeamldrStatus, TdxStatus, status_text
from tdxseam.platform.cpu import Cpu, Regs, SeamcallEnd

_ENDS = {"vmfailinvalid": SeamcallEnd.VMFAILINVALID, "gp": SeamcallEnd.GP, "ud": SeamcallEnd.UD}


@dataclass
class FaultRule:
    leaf: int | None  # full RAX leaf value (P-SEAMLDR leaves with bit 63); None = any leaf
    cpu: int | None = None  # None = any CPU
    nth: int | None = 1  # the n-th matching call (1-based); None = every matching call
    status: int | str = 0  # a RAX status, or "vmfailinvalid" / "gp" / "ud"
    # output registers the failing leaf leaves behind with a RAX status (e.g. TDH.SYS.INIT's CPUID
    # details in RCX, RDX, R8-R10), by name: {"rcx": ..., "r8": ...}
    outputs: dict[str, int] = field(default_factory=dict)
    seen: int = field(default=0, compare=False)
    fired: int = field(default=0, compare=False)

    def describe(self) -> str:
        what = leaf_name(self.leaf) if self.leaf is not None else "any leaf"
        where = f"cpu{self.cpu}" if self.cpu is not None else "any CPU"
        when = f"call #{self.nth}" if self.nth is not None else "every call"
        act = self.status if isinstance(self.status, str) else status_text(self.status)
        return f"{what} on {where}, {when} -> {act}"


@dataclass
class FaultPlan:
    rules: list[FaultRule] = field(default_factory=list)
    log: list[str] = field(default_factory=list)

    def add(self, leaf: int | None, status: int | str, *, cpu: int | None = None,
            nth: int | None = 1, outputs: dict[str, int] | None = None) -> FaultPlan:
        self.rules.append(FaultRule(leaf, cpu, nth, status, outputs=dict(outputs or {})))
        return self

    def __call__(self, cpu: Cpu, regs: Regs) -> int | SeamcallEnd | None:
        for r in self.rules:
            if r.leaf is not None and regs.rax != r.leaf:
                continue
            if r.cpu is not None and cpu.id != r.cpu:
                continue
            r.seen += 1
            if r.nth is not None and r.seen != r.nth:
                continue
            r.fired += 1
            self.log.append(f"cpu{cpu.id}: {r.describe()}")
            cpu.machine.emit("fault", r.describe())
            if isinstance(r.status, str):
                return _ENDS[r.status]
            for reg, value in r.outputs.items():
                setattr(regs, reg, value)
            return r.status
        return None

    @property
    def fired(self) -> int:
        return sum(r.fired for r in self.rules)


def install_fault_plan(fw, plan: FaultPlan | None) -> None:
    """Attach `plan` to a machine's SEAM firmware (None removes it)."""
    fw.fault_hook = plan


class FaultSpecError(ValueError):
    """A fault spec that does not parse; the message names the bad part."""


def _leaf_value(name: str) -> int:
    key = name.strip().upper().replace(".", "_")
    for enum in (SeamldrLeaf, TdxLeaf):
        if key in enum.__members__:
            return int(enum[key])
    raise FaultSpecError(f"unknown leaf {name!r} (e.g. P_SEAMLDR_INSTALL, TDH_SYS_SHUTDOWN)")


def _status_value(text: str) -> int | str:
    t = text.strip()
    if t.lower() in _ENDS:
        return t.lower()
    for enum in (SeamldrStatus, TdxStatus):
        if t.upper() in enum.__members__:
            return int(enum[t.upper()])
    try:
        v = int(t, 0)
    except ValueError:
        raise FaultSpecError(f"unknown status {text!r} (a name such as EBADHASH, a hex value, "
                             "or vmfailinvalid/gp/ud)") from None
    if not 0 < v < 1 << 64:
        raise FaultSpecError(f"status {text!r} is not a non-zero 64-bit value")
    return v


def parse_fault_spec(spec: str) -> FaultRule:
    """`LEAF[@CPU][#N]=STATUS`, e.g. `P_SEAMLDR_INSTALL@1=EBADHASH`, `TDH_SYS_SHUTDOWN=0xc000010000000001`.

    N is the n-th matching call (default 1); `#*` fails every matching call.
    """
    if "=" not in spec:
        raise FaultSpecError(f"{spec!r}: expected LEAF[@CPU][#N]=STATUS")
    lhs, status = spec.split("=", 1)
    nth: int | None = 1
    if "#" in lhs:
        lhs, n = lhs.split("#", 1)
        if n == "*":
            nth = None
        elif n.isdigit() and int(n) >= 1:
            nth = int(n)
        else:
            raise FaultSpecError(f"{spec!r}: #N must be a call number from 1, or *")
    cpu = None
    if "@" in lhs:
        lhs, c = lhs.split("@", 1)
        if not c.isdigit():
            raise FaultSpecError(f"{spec!r}: @CPU must be a CPU number")
        cpu = int(c)
    return FaultRule(_leaf_value(lhs), cpu, nth, _status_value(status))
