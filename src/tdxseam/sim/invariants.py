"""What must hold in every run, checked while it runs and when each update ends.

Checked at every SEAMCALL, through an observer set in front of the SEAM door (`machine.seam`: the
CPU's SEAMCALL instruction enters it, it passes the call on to the firmware unchanged):
- never two CPUs inside the P-SEAMLDR (hardware would fail the second with VMfailInvalid);
- while the lockstep runs, no SEAMCALL but the lockstep's own, and each of those belongs to the
  shared state of the moment (TDH.SYS.SHUTDOWN in SHUTDOWN, SEAMLDR.INSTALL in CPU_INSTALL, ...);
- at TDH.SYS.SHUTDOWN no TD is mid-build (on the SEAM side: `Td.in_build`);
- at TDH.SYS.UPDATE every CPU of the update has run TDH.SYS.LP.INIT on the new module.
Checked at every scheduler step (`Scheduler.on_step`; run at the steps after something they read
changed, which finds what running at every step finds), for the update in flight:
- the set of online CPUs does not change between the lockstep's creation and the update's return;
- every CPU that enters the lockstep leaves it; the shared state never moves past a state in
  which a CPU reported failure (the abort rule).
Checked when an update ends, against the table of spec-linux.md §5.7 (`OUTCOMES`):
- the update failed exactly where its causes say it must (an injected fault that fired, no
  updates left, a broken image, P-SEAMLDR entropy failures, an offline CPU, a module already
  lost, a TD build in flight) and nowhere else; a failure without a cause is a violation;
- afterwards the module, `version`, the TDs (pages and measurement included), the `error` file and
  `num_remaining_updates` are what the table gives for that step.
The runner adds: readers see only sane values, no lock-checker report, no exception in kernel
code, and the run ends (no deadlock, within its step budget).
`INVARIANTS` names them all by the kind of violation each reports; on real firmware
(`REAL_NOT_APPLICABLE`, `REAL_FACTS`) the TD ones do not apply and the module's version comes from
the binary's TDH.SYS.RD answers; every run's report lists which ran (`invariants_for`).
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from tdxseam.formats.leaves import SEAMLDR_LEAF_BIT, SeamldrLeaf, TdxLeaf, leaf_name
from tdxseam.formats.status import TdxStatus, status_text
from tdxseam.kernel.firmware_upload import FwUploadErr
from tdxseam.kernel.seamldr import ModuleUpdateState as S
from tdxseam.platform.cpu import SEAMRET, SeamcallEnd

if TYPE_CHECKING:
    from tdxseam.host import EmulatedHost
    from tdxseam.platform.cpu import Cpu, Regs
    from tdxseam.platform.sched import Scheduler
    from tdxseam.seam.faults import FaultPlan


@dataclass(frozen=True)
class Violation:
    kind: str
    step: int
    message: str

    def __str__(self) -> str:
        return f"[{self.kind}] step {self.step}: {self.message}"

    def to_json(self) -> dict:
        return {"kind": self.kind, "step": self.step, "message": self.message}


# ---- which invariants a run checks ---------------------------------------------------------------

# Every invariant by the kind of violation it reports, with what it checks.
INVARIANTS: dict[str, str] = {
    "seamldr-overlap": "never two CPUs inside the P-SEAMLDR",
    "seamcall-during-update": "no SEAMCALL but the lockstep's own while it runs",
    "lockstep-phase": "each lockstep SEAMCALL belongs to the shared state of the moment",
    "td-build-at-shutdown": "no TD mid-build at TDH.SYS.SHUTDOWN",
    "lp-init-missing": "TDH.SYS.LP.INIT on every CPU of the update before TDH.SYS.UPDATE",
    "online-changed": "the online CPUs do not change during an update",
    "lockstep-abort": "the shared state never moves past a state a CPU failed",
    "lockstep-exit": "every CPU that enters the lockstep leaves it",
    "update-untracked": "no lockstep outside an upload's write()",
    "outcome": "each update fails exactly where its causes say (spec-linux §5.7) and nowhere else",
    "aftermath": "module, version, error file, num_remaining_updates and TDs after each update as §5.7 says",
    "leak": "no page of an update held after write() returns",
    "liveness": "the TD-build gate released after every update",
    "lock-held": "no lock held after an update and at quiescence",
    "quiescence": "no preemption or interrupt-disable count left",
    "reader": "sysfs readers and SEAMLDR.INFO callers see sane values",
    "reader-truth": "`version` and `num_remaining_updates` read what SEAM holds at that moment",
    "hotplug": "cpu_down/cpu_up fail only where the kernel must refuse",
    "td": "TD builds and vCPU runs fail only on a lost module or an injected fault",
    "final": "every TD runs after the run iff the module is usable",
    "reboot": "after a reboot: the boot module, a fresh SEAMDB, and one more update",
    "upload": "the upload's files take the whole image and its write() runs",
    "lockdep": "lock order and interrupt safety (lockdep)",
    "data-race": "no data race on the update's shared state (KCSAN)",
    "deadlock": "the run ends without a deadlock",
    "budget": "the run ends within its step budget",
    "model-error": "no exception in kernel code or the SEAM side",
    "setup": "the host offers a runtime update",
}
# On real firmware (Intel's binary behind the door): what cannot be checked, and why.
NO_TDS = "no TDs on real firmware: the TD leaves on Intel's binary are not driven by the emulated host"
REAL_NOT_APPLICABLE: dict[str, str] = {
    "td-build-at-shutdown": NO_TDS,
    "td": NO_TDS,
    "final": NO_TDS,
}
# On real firmware: where an invariant that reads the SEAM side gets its facts instead.
REAL_FACTS: dict[str, str] = {
    "reader-truth": "the module's version is what Intel's binary answered to TDH.SYS.RD; the SEAMDB is the P-SEAMLDR model's",
    "aftermath": "the new module's version from its TDH.SYS.RD answers, readiness from its SEAMRET statuses, "
                 "the rest from the kernel's files; the TD part does not apply (no TDs)",
    "reboot": "the boot release comes back (kernel's `version`), a fresh SEAMDB, one more update to the target",
    "model-error": "also the real-firmware engine's own errors (a platform value it lacks, a runaway SEAMCALL)",
}


def invariants_for(firmware: str) -> dict:
    """Which invariants a run on `firmware` checks, which do not apply (and why), and where the
    real-firmware ones get their facts: the report's `invariants`."""
    if firmware != "real":
        return {"checked": list(INVARIANTS), "not_applicable": {}}
    return {"checked": [k for k in INVARIANTS if k not in REAL_NOT_APPLICABLE],
            "not_applicable": dict(REAL_NOT_APPLICABLE), "facts": dict(REAL_FACTS)}


# ---- the lockstep's own SEAMCALLs, by shared state ------------------------------------------------

# the leaves the door's checks compare every SEAMCALL with, bound once (see platform.cpu.SEAMRET)
TDH_SYS_SHUTDOWN = TdxLeaf.TDH_SYS_SHUTDOWN
TDH_SYS_UPDATE = TdxLeaf.TDH_SYS_UPDATE
TDH_SYS_LP_INIT = TdxLeaf.TDH_SYS_LP_INIT

PHASE_LEAVES: dict[int, frozenset[int]] = {
    S.MODULE_UPDATE_SHUTDOWN: frozenset({TdxLeaf.TDH_SYS_RD, TdxLeaf.TDH_SYS_SHUTDOWN}),
    S.MODULE_UPDATE_CPU_INSTALL: frozenset({SeamldrLeaf.P_SEAMLDR_INSTALL}),
    S.MODULE_UPDATE_CPU_INIT: frozenset({TdxLeaf.TDH_SYS_INIT, TdxLeaf.TDH_SYS_LP_INIT}),
    S.MODULE_UPDATE_RUN_UPDATE: frozenset({TdxLeaf.TDH_SYS_UPDATE, TdxLeaf.TDH_SYS_RD}),
}
STEP_OF_STATE = {
    S.MODULE_UPDATE_SHUTDOWN: "shutdown", S.MODULE_UPDATE_CPU_INSTALL: "install",
    S.MODULE_UPDATE_CPU_INIT: "init", S.MODULE_UPDATE_RUN_UPDATE: "update",
}
STEP_ORDER = ("image", "busy", "shutdown", "install", "init", "update", "none")

# ---- the oracle: spec-linux.md §5.7, one row per failing step ---------------------------------------

FW_INVALID = "transferring:firmware-invalid\n"
DEVICE_BUSY = "transferring:device-busy\n"


@dataclass(frozen=True)
class Expect:
    module: str  # "old" (the same module, as usable as before), "new-ready", "new-not-ready", "unusable"
    version: str  # what `version` reads after: "unchanged", "new", "ENXIO"
    tds: str  # "intact" (untouched), "lost"; "-" when no lockstep ran
    error: str  # the `error` file
    remaining: int | None  # change of num_remaining_updates; None: no lockstep ran


OUTCOMES: dict[str, Expect] = {
    # rejected before any SEAMCALL
    "busy": Expect("old", "unchanged", "-", DEVICE_BUSY, None),  # a TD build in flight (tdxseam's guard)
    "image": Expect("old", "unchanged", "-", FW_INVALID, None),  # image validation / -ENOMEM
    # failed in the lockstep
    "shutdown": Expect("old", "unchanged", "intact", FW_INVALID, 0),
    "install": Expect("unusable", "ENXIO", "lost", FW_INVALID, 0),
    "init": Expect("new-not-ready", "ENXIO", "lost", FW_INVALID, -1),
    "init-offline": Expect("unusable", "ENXIO", "lost", FW_INVALID, 0),  # INSTALL never completed
    "update": Expect("new-not-ready", "ENXIO", "lost", FW_INVALID, -1),
    # succeeded
    "none": Expect("new-ready", "new", "intact", "", -1),
    "none-stale": Expect("new-ready", "unchanged", "intact", "", -1),  # version re-read failed: WARN only
}


@dataclass
class FaultHit:
    step: int
    cpu: int
    leaf: int
    status: Any
    task: str
    nth: int | None
    state: int | None  # the lockstep's shared state when it fired (None: outside the lockstep)

    @property
    def fatal(self) -> bool:
        """Does the kernel give up on this call? sc_retry retries TDX_RND_NO_ENTROPY (any leaf,
        P-SEAMLDR leaves included) up to 10 times, so a one-shot entropy failure is absorbed."""
        return not (self.status == TdxStatus.TDX_RND_NO_ENTROPY and self.nth is not None)

    def describe(self) -> str:
        st = self.status if isinstance(self.status, str) else status_text(self.status)
        return f"{leaf_name(self.leaf)} on cpu{self.cpu} -> {st}"


@dataclass
class UpdateRecord:
    """One upload attempt, from the kernel's write() to the error file."""

    index: int
    attempt: int
    target: str
    image: str
    aslr: bool
    seamdb: bool
    start_step: int
    builders: int = 0
    online_at_write: tuple[int, ...] = ()
    module_ok: bool = True
    version_before: str | int | None = None  # what `version` read before the upload
    remaining_before: int = 0
    result: int | None = None  # FwUploadErr of the write
    returned: bool = False
    ctrl: Any = None
    online_at_ctrl: tuple[int, ...] = ()
    started: bool = False
    ended: bool = False
    td_before: dict = field(default_factory=dict)
    td_after: dict = field(default_factory=dict)
    module_before: Any = None
    ready_before: bool = False
    module_after: Any = None
    seam_ready_after: int = 0
    remaining_after: int = 0
    lp_init_ok: set[int] = field(default_factory=set)
    log_seen: int = 0  # entries of ctrl.log looked at
    first_fail: int | None = None  # the first state a CPU acked with a failure
    faults: list[FaultHit] = field(default_factory=list)
    observed: str = ""
    expected: str = ""
    causes: list[str] = field(default_factory=list)
    error_text: str | int = ""
    version_after: str | int | None = None
    relocation: bool = False  # the P-SEAMLDR's ELF relocation fails for this upload
    alloc_fail: int = 0  # the k-th page the upload allocates fails (failslab)
    writer: Any = None  # the task running the driver's write()
    online_at_return: tuple[int, ...] = ()
    build_at_shutdown: list[int] = field(default_factory=list)  # TDRs mid-build at TDH.SYS.SHUTDOWN
    shutdown_faulted: bool = False  # a fault was injected on that TDH.SYS.SHUTDOWN
    cpu_state_at_write: Any = None  # (preempt_count, irq_enabled) of the writer's CPU at write()
    info_faulted: bool = False  # an injected fault hit a SEAMLDR.INFO of the writer (v4 pre-check)
    hazard: str = ""  # a known hazard of the profile that this upload met (merged: td-build-raced)

    @property
    def coverage_key(self) -> str:
        """The outcome as the coverage table counts it."""
        key = self.expected if self.expected == self.observed or self.expected in OUTCOMES else self.observed
        if self.expected in ("none-stale", "init-offline"):
            key = self.expected
        if self.hazard:
            key += f" ({self.hazard})"
        return key
    @property
    def active(self) -> bool:
        return self.started and not self.ended

    def summary(self) -> dict:
        va = self.version_after
        return {
            "update": self.index, "attempt": self.attempt, "to": self.target, "image": self.image,
            "outcome": self.observed, "expected": self.expected, "causes": list(self.causes),
            "version_after": va.strip() if isinstance(va, str) else ("ENXIO" if va is not None else None),
            "error": self.error_text.strip() if isinstance(self.error_text, str) else self.error_text,
            "cpus": len(self.online_at_ctrl) if self.ctrl is not None else None,
            "coverage_outcome": self.coverage_key,  # the outcome as the coverage table counts it
        }


class Door:
    """Stands in front of the SEAM firmware on the machine: sees every SEAMCALL, changes none."""

    def __init__(self, fw: Any, monitor: Monitor) -> None:
        self.fw = fw
        self.monitor = monitor

    def seamcall(self, cpu: Cpu, regs: Regs) -> SeamcallEnd:
        mon = self.monitor
        leaf = regs.rax
        mon.on_entry(cpu, leaf)
        end = self.fw.seamcall(cpu, regs)
        mon.on_exit(cpu, leaf, end, regs)
        return end

    def __getattr__(self, name: str) -> Any:  # anything else is the firmware's
        return getattr(self.fw, name)


class Monitor:
    """The in-run invariants (see the module docstring). `violations` collects what broke."""

    def __init__(self, host: EmulatedHost, plan: FaultPlan | None, *, watch_online: bool = True) -> None:
        self.host = host
        self.k = host.kernel
        self.profile = host.kernel.profile
        self.mutations = host.kernel.mutations
        self.m = host.machine
        self.fw = host.fw
        self.sched = host.machine.sched
        self.violations: list[Violation] = []
        self.records: list[UpdateRecord] = []
        self.current: UpdateRecord | None = None  # the upload whose write() runs
        self.lockstep: UpdateRecord | None = None  # the record whose lockstep runs
        self._seen_ctrl = getattr(self.k, "last_update_ctrl", None)
        self._seamldr_inside: list[int] = []
        self._injected: dict[int, FaultHit] = {}
        # the last SEAMCALL of each (task, interrupt depth): neither another task on the CPU nor
        # an interrupt handler's call may hide the result of the call a task made
        self.last_call: dict[tuple[Any, int], tuple[int, SeamcallEnd, int, FaultHit | None]] = {}
        self.faults_fired: list[FaultHit] = []
        self.lost = False  # the kernel has no usable module (a failed update)
        self.stale_versions: set[Any] = set()  # `version` values a WARNed re-read left behind
        self._kinds_reported: set[tuple[str, int]] = set()
        self.plan = plan
        # compare the online set at every step of an update (O(CPUs) each); the runner turns it
        # off for scenarios without hotplug, where the set is still compared at the update's
        # start, lockstep start and end, and return
        self.watch_online = watch_online
        self._door = Door(self.fw, self)
        self.m.seam = self._door
        if plan is not None:
            self.fw.fault_hook = self._fault_hook
        # the per-step checks run at the steps after something they read changed (`_arm`)
        self.k.update_watch = self._arm
        self._set_online = self.m.set_cpu_online
        self.m.set_cpu_online = self._set_cpu_online
        self._online_now = self._online_ids()  # kept by `_set_cpu_online`, the one place it changes
        self._arm()
        # kmemleak and failslab in one: who allocated each host page still held, and an
        # allocation failure armed for one upload's write()
        self.page_owner: dict[int, Any] = {}
        self.alloc_fail_in = 0
        self.alloc_fail_task: Any = None
        mem = self.m.mem
        self._alloc, self._free = mem.alloc_page, mem.free_page
        mem.alloc_page, mem.free_page = self._alloc_page, self._free_page

    def _alloc_page(self) -> int:
        task = self.sched.current
        if self.alloc_fail_in and task is self.alloc_fail_task:
            self.alloc_fail_in -= 1
            if self.alloc_fail_in == 0:
                from tdxseam.platform.memory import MemoryError_

                self.m.emit("sim", "failslab: allocation fails")
                raise MemoryError_("injected allocation failure")
        pa = self._alloc()
        self.page_owner[pa] = task
        return pa

    def _free_page(self, pa: int) -> None:
        self._free(pa)
        self.page_owner.pop(pa, None)

    # ---- reporting ------------------------------------------------------------------------------

    def violate(self, kind: str, message: str, *, once_per: int | None = None) -> None:
        """Record a violation; `once_per` (e.g. a record index) keeps one of a kind per key."""
        if once_per is not None:
            key = (kind, once_per)
            if key in self._kinds_reported:
                return
            self._kinds_reported.add(key)
        v = Violation(kind, self.sched.steps, message)
        self.violations.append(v)
        self.m.emit("sim-violation", str(v))

    # ---- faults ---------------------------------------------------------------------------------

    def _fault_hook(self, cpu: Cpu, regs: Regs) -> Any:
        plan = self.plan
        before = [r.fired for r in plan.rules]
        out = plan(cpu, regs)
        if out is None:
            return None
        nth = None
        for r, b in zip(plan.rules, before):
            if r.fired != b:
                nth = r.nth
                break
        status = out.value if isinstance(out, SeamcallEnd) else out
        task = self.sched.current
        rec = self.lockstep
        state = rec.ctrl.state if rec is not None and rec.active and _is_stopper(task) else None
        hit = FaultHit(self.sched.steps, cpu.id, regs.rax, status, task.name if task else "?", nth, state)
        self.faults_fired.append(hit)
        self._injected[cpu.id] = hit
        if state is not None:
            rec.faults.append(hit)
        cur = self.current
        if (cur is not None and task is cur.writer and regs.rax == SeamldrLeaf.P_SEAMLDR_INFO
                and not cpu.irq_depth and not cpu.in_nmi):  # the writer's own call, not a handler's
            cur.info_faulted = True
        return out

    # ---- the door -------------------------------------------------------------------------------

    def on_entry(self, cpu: Cpu, leaf: int) -> None:
        if leaf & SEAMLDR_LEAF_BIT:
            if self._seamldr_inside:
                inside = ", ".join(f"cpu{c}" for c in self._seamldr_inside)
                self.violate("seamldr-overlap",
                             f"cpu{cpu.id} enters the P-SEAMLDR ({leaf_name(leaf)}) while {inside} is inside")
            self._seamldr_inside.append(cpu.id)
        self._poll_ctrl()
        rec = self.lockstep
        if rec is None or not rec.active:
            return
        task = self.sched.current
        state = rec.ctrl.state
        if not _is_stopper(task):
            if not leaf & SEAMLDR_LEAF_BIT:
                self.violate("seamcall-during-update",
                             f"{leaf_name(leaf)} from {task.name if task else '?'} on cpu{cpu.id} while the "
                             f"update's lockstep runs", once_per=rec.start_step)
            return
        allowed = PHASE_LEAVES.get(state, frozenset())
        if leaf not in allowed:
            name = S(state).name if state in S._value2member_map_ else str(state)
            self.violate("lockstep-phase",
                         f"cpu{cpu.id} issues {leaf_name(leaf)} while the shared state is {name}",
                         once_per=rec.start_step)
        if leaf == TDH_SYS_SHUTDOWN:
            mod = self.fw.module
            # real firmware: not applicable (REAL_NOT_APPLICABLE), its TDs are in its own memory
            if mod is not None and not getattr(mod, "real", False):
                building = sorted(td.tdr_pa for td in mod.tds.tds.values() if td.in_build)
                rec.build_at_shutdown = building
                guard = self.profile.td_build_guard
                if "update-during-td-build" in self.mutations and guard != "none":
                    guard = "none-planted"
                if building and guard == "none":
                    # merged: nothing guards the build; a hazard the outcome records, its TDs are
                    # left out of the preservation check
                    rec.hazard = "td-build-raced"
                elif building and guard != "module":
                    self.violate("td-build-at-shutdown",
                                 "TDH.SYS.SHUTDOWN while TD(s) " + ", ".join(f"0x{t:x}" for t in building)
                                 + " are mid-build (MNG.INIT done, MR.FINALIZE not)")
        elif leaf == TDH_SYS_UPDATE:
            missing = sorted(set(rec.online_at_ctrl) - rec.lp_init_ok)
            if missing:
                self.violate("lp-init-missing",
                             "TDH.SYS.UPDATE before TDH.SYS.LP.INIT on " + ", ".join(f"cpu{c}" for c in missing))

    def on_exit(self, cpu: Cpu, leaf: int, end: SeamcallEnd, regs: Regs) -> None:
        if leaf & SEAMLDR_LEAF_BIT and cpu.id in self._seamldr_inside:
            self._seamldr_inside.remove(cpu.id)
        hit = self._injected.pop(cpu.id, None)
        status = regs.rax if end is SEAMRET else -1
        if leaf == TDH_SYS_SHUTDOWN and hit is not None and self.lockstep is not None:
            self.lockstep.shutdown_faulted = True
        self.last_call[(self.sched.current, cpu.irq_depth)] = (leaf, end, status, hit)
        rec = self.lockstep
        if (rec is not None and rec.active and leaf == TDH_SYS_LP_INIT
                and end is SEAMRET and status == 0):
            rec.lp_init_ok.add(cpu.id)

    # ---- every step -----------------------------------------------------------------------------

    def _poll_ctrl(self) -> None:
        ctrl = getattr(self.k, "last_update_ctrl", None)
        if ctrl is not self._seen_ctrl:
            self._seen_ctrl = ctrl
            rec = self.current
            if rec is None:
                self.violate("update-untracked", "a lockstep was created outside an upload's write()")
                return
            rec.ctrl = ctrl
            rec.online_at_ctrl = self._online()
            self.lockstep = rec
        rec = self.lockstep
        if rec is None or rec.ctrl is None:
            return
        ctrl = rec.ctrl
        if not rec.started and ctrl.entered:
            self._lockstep_start(rec)
        if rec.started and not rec.ended and len(ctrl.left) >= ctrl.num_cpus:
            self._lockstep_end(rec)

    def _arm(self) -> None:
        """Something `on_step` reads changed: the upload in flight, the kernel's lockstep control
        (the kernel calls this after each change of it, `Kernel.update_watch`), or the online
        CPUs. The checks run at the next step, as if they ran at every step: with nothing changed
        since their last run they find nothing new (a violation is reported once per update)."""
        self.sched.on_step = self.on_step

    def _set_cpu_online(self, cpu: Cpu, online: bool) -> None:
        self._set_online(cpu, online)
        self._online_now = self._online_ids()
        self._arm()

    def on_step(self, sched: Scheduler) -> None:
        sched.on_step = None  # until something changes again (`_arm`)
        if self.current is None and (self.lockstep is None or self.lockstep.returned):
            return  # no update's write() in flight: nothing to watch at this step
        self._poll_ctrl()
        rec = self.lockstep
        if rec is None or rec.returned or rec.ctrl is None:
            return
        if self.watch_online and self._online() != rec.online_at_ctrl:
            self.violate("online-changed",
                         f"online CPUs changed during the update: {_cpus(rec.online_at_ctrl)} -> "
                         f"{_cpus(self._online())}", once_per=rec.start_step)
        if rec.started and not rec.ended:
            ctrl = rec.ctrl
            log = ctrl.log
            while rec.first_fail is None and rec.log_seen < len(log):  # only the new entries
                _c, st, ev, r = log[rec.log_seen]
                rec.log_seen += 1
                if ev == "ack" and r:
                    rec.first_fail = st
            if rec.first_fail is not None and rec.first_fail < ctrl.state <= S.MODULE_UPDATE_DONE:
                self.violate("lockstep-abort",
                             f"the shared state moved to {S(ctrl.state).name} after a CPU failed "
                             f"{S(rec.first_fail).name}", once_per=rec.start_step)

    def _check_online(self, rec: UpdateRecord) -> None:
        now = self._online()
        if now != rec.online_at_ctrl:
            self.violate("online-changed", f"online CPUs changed during the update: "
                                           f"{_cpus(rec.online_at_ctrl)} -> {_cpus(now)}", once_per=rec.start_step)

    def _online(self) -> tuple[int, ...]:
        """The online CPUs' ids, as the machine has them now."""
        return self._online_now

    def _online_ids(self) -> tuple[int, ...]:
        return tuple([c.id for c in self.m.cpus if c.online])

    def _lockstep_start(self, rec: UpdateRecord) -> None:
        from tdxseam.seam.td import td_snapshot

        rec.started = True
        self._check_online(rec)
        rec.td_before = td_snapshot(self.fw)
        rec.module_before = self.fw.module
        rec.ready_before = _usable(self.fw)
        self.m.emit("sim", f"lockstep of upload {rec.index}.{rec.attempt} starts on {len(rec.online_at_ctrl)} CPUs")

    def _lockstep_end(self, rec: UpdateRecord) -> None:
        from tdxseam.kernel.tdx import tdx_get_sysinfo
        from tdxseam.seam.td import td_snapshot

        rec.ended = True
        self._check_online(rec)
        fw = self.fw
        rec.td_after = td_snapshot(fw)
        rec.module_after = fw.module
        rec.seam_ready_after = fw.seamextend.seam_ready
        rec.remaining_after = fw.pseamldr.num_remaining_updates
        ctrl = rec.ctrl
        if sorted(ctrl.left) != sorted(ctrl.entered) or len(ctrl.entered) != len(rec.online_at_ctrl):
            self.violate("lockstep-exit", f"CPUs entered {sorted(ctrl.entered)}, left {sorted(ctrl.left)}, "
                                          f"online at start {list(rec.online_at_ctrl)}")
        self.lost = tdx_get_sysinfo(self.k) is None
        if any(f.fatal and f.leaf == TdxLeaf.TDH_SYS_RD and f.state == S.MODULE_UPDATE_RUN_UPDATE
               for f in rec.faults):
            self.stale_versions.add(rec.version_before)  # the re-read failed: WARN, version kept
        self.m.emit("sim", f"lockstep of upload {rec.index}.{rec.attempt} ends"
                           + (": no usable module" if self.lost else ""))

    # ---- write() of the tdx_module upload --------------------------------------------------------

    def write_begins(self, rec: UpdateRecord) -> None:
        from tdxseam.kernel.kvm_tdx import kvm_tdx
        from tdxseam.kernel.tdx import tdx_get_sysinfo

        fw = self.fw
        rec.builders = kvm_tdx(self.k).build_lock.builders
        rec.online_at_write = self._online()
        mod = fw.module
        rec.module_ok = (mod is not None and mod.ready and bool(fw.seamextend.seam_ready)
                         and tdx_get_sysinfo(self.k) is not None)
        rec.remaining_before = fw.pseamldr.num_remaining_updates
        rec.writer = self.sched.current
        cpu = rec.writer.cpu if rec.writer is not None else None
        rec.cpu_state_at_write = (cpu.preempt_count, cpu.irq_enabled) if cpu is not None else None
        if rec.alloc_fail:
            self.alloc_fail_in, self.alloc_fail_task = rec.alloc_fail, rec.writer
        self.current = rec
        self._arm()

    def write_returns(self, rec: UpdateRecord, result: int) -> None:
        self._poll_ctrl()
        rec.result = result
        if rec.ctrl is not None:
            self._check_online(rec)
            if not rec.ended:
                self.violate("lockstep-exit", "the update returned while CPUs were still in its lockstep")
        rec.returned = True
        rec.online_at_return = self._online()
        self.alloc_fail_in, self.alloc_fail_task = 0, None
        self.current = None
        self._arm()
        self.after_update(rec)

    # ---- resources come back ----------------------------------------------------------------------

    def after_update(self, rec: UpdateRecord) -> None:
        """When the driver's write() has returned: nothing of the update is still held, and TD
        builds are possible again (liveness), whatever the outcome."""
        from tdxseam.kernel.kvm_tdx import kvm_tdx

        where = f"upload {rec.index}.{rec.attempt}"
        held = sorted(pa for pa, t in self.page_owner.items() if t is rec.writer)
        if held:
            self.violate("leak", f"{where}: {len(held)} page(s) the update allocated are still held after "
                                 f"write() returned (first 0x{held[0]:x})")
        if kvm_tdx(self.k).build_lock.updating:
            self.violate("liveness", f"{where}: the TD-build gate is still held after the update returned: "
                                     "TD builds get -EBUSY forever")
        if rec.ctrl is not None and rec.ctrl.lock.holder is not None:
            self.violate("lock-held", f"{where}: update_ctrl.lock still held by cpu{rec.ctrl.lock.holder.id}")
        if self.k.cpu_hotplug_lock.readers:
            self.violate("lock-held", f"{where}: cpu_hotplug_lock still read-held after the update returned")
        cpu = rec.writer.cpu if rec.writer is not None else None
        if cpu is not None and rec.cpu_state_at_write != (cpu.preempt_count, cpu.irq_enabled):
            self.violate("quiescence", f"{where}: write() returned with preempt_count {cpu.preempt_count}, "
                                       f"interrupts {'on' if cpu.irq_enabled else 'off'} (entered with "
                                       f"{rec.cpu_state_at_write})")

    def quiescence(self) -> None:
        """At the end of a run (every task done): no lock held, no preemption or interrupt-disable
        count left, the hotplug lock free, no upload running, no page of an upload left."""
        from tdxseam.kernel.kvm_tdx import kvm_tdx
        from tdxseam.kernel.tdx import tdx_of

        k = self.k
        for cpu_id, locks in sorted(k.lockdep.held.items()):
            if locks:
                self.violate("lock-held", f"at quiescence cpu{cpu_id} holds {', '.join(l.name for l in locks)}")
        for c in self.m.cpus:
            if c.preempt_count or not c.irq_enabled or c.irq_depth:
                self.violate("quiescence", f"cpu{c.id} ends with preempt_count {c.preempt_count}, "
                                           f"interrupts {'on' if c.irq_enabled else 'off'}, irq depth {c.irq_depth}")
        hp = k.cpu_hotplug_lock
        if hp.readers or hp.writer:
            self.violate("lock-held", f"cpu_hotplug_lock held at quiescence ({hp.readers} reader(s), "
                                      f"writer {hp.writer})")
        gate = kvm_tdx(k).build_lock
        if gate.updating or gate.builders:
            self.violate("liveness", f"TD-build gate held at quiescence (update {gate.updating}, "
                                     f"{gate.builders} builder(s))")
        sl = tdx_of(k).sysinit_lock
        if k.seamldr_lock.holder is not None or (sl is not None and sl.holder is not None):
            self.violate("lock-held", "seamldr_lock or sysinit_lock held at quiescence")
        writers = {r.writer for r in self.records if r.writer is not None}
        held = sorted(pa for pa, t in self.page_owner.items() if t in writers)
        if held:
            self.violate("leak", f"{len(held)} page(s) allocated by uploads still held at quiescence")

    # ---- the oracle -----------------------------------------------------------------------------

    def judge(self, rec: UpdateRecord) -> None:
        """Where the update failed, where it should have, and whether the aftermath fits §5.7."""
        observed = self._observed_step(rec)
        expected, causes, stale = self._expected_step(rec)
        rec.causes = causes
        key = expected
        if expected == "init" and any(c.startswith("offline") for c in causes) and not any(
                c.startswith("fault") for c in causes):
            key = "init-offline"
        if expected == "none" and stale:
            key = "none-stale"
            self.stale_versions.add(rec.version_before)
        rec.observed, rec.expected = observed, key
        if observed != expected:
            why = "; ".join(causes) if causes else "no cause"
            self.violate("outcome", f"upload {rec.index}.{rec.attempt} to {rec.target}: failed at "
                                    f"{observed!r}, expected {expected!r} ({why})")
            return
        exp = OUTCOMES[key]
        problems = self._aftermath(rec, exp)
        for p in problems:
            self.violate("aftermath", f"upload {rec.index}.{rec.attempt} to {rec.target} ({key}): {p}")

    def _observed_step(self, rec: UpdateRecord) -> str:
        if rec.result == FwUploadErr.FW_UPLOAD_ERR_BUSY:
            return "busy"
        if rec.ctrl is None:
            return "image" if rec.result else "none"
        fail = next((st for (_c, st, ev, r) in rec.ctrl.log if ev == "ack" and r), None)
        if fail is None:
            if rec.result:
                self.violate("outcome", f"upload {rec.index}.{rec.attempt}: the update failed but no CPU "
                                        "reported a failure in the lockstep")
            return "none"
        if not rec.result:
            self.violate("outcome", f"upload {rec.index}.{rec.attempt}: a CPU failed "
                                    f"{S(fail).name} but the update reported success")
        return STEP_OF_STATE.get(fail, f"state{fail}")

    def _expected_step(self, rec: UpdateRecord) -> tuple[str, list[str], bool]:
        prof = self.profile
        # the kernel checks the image (and allocates) before anything else
        if rec.alloc_fail:
            return "image", ["a page allocation for seamldr_params fails (-ENOMEM)"], False
        if rec.image == "bad-header":
            return "image", ["the image header is invalid"], False
        gate = prof.td_build_guard
        if "update-during-td-build" in self.mutations:
            gate = "none"
        if gate == "kernel" and rec.builders:
            return "busy", [f"{rec.builders} TD build(s) in flight"], False
        if prof.precheck_remaining and rec.remaining_before == 0:
            return "image", ["v4 pre-check: no updates left (-ENOSPC)"], False
        if prof.precheck_remaining and rec.info_faulted:
            return "image", ["v4 pre-check: SEAMLDR.INFO failed (injected)"], False
        if prof.refuse_offline_cpus and rec.ctrl is None and rec.result:
            if min(len(rec.online_at_write), len(rec.online_at_return)) < self.m.ncpus:
                return "image", ["v4 pre-check: a CPU is offline"], False
        if gate == "module" and rec.build_at_shutdown and not rec.shutdown_faulted:
            return "busy", [f"{len(rec.build_at_shutdown)} TD build(s) in flight at TDH.SYS.SHUTDOWN "
                            "(TDX_UPDATE_COMPAT_SENSITIVE)"], False
        causes: list[tuple[str, str]] = []
        if not rec.module_ok:
            causes.append(("shutdown", "no usable module before the update"))
        stale = False
        for f in rec.faults:
            if not f.fatal:
                continue
            if f.leaf == TdxLeaf.TDH_SYS_RD:
                if f.state == S.MODULE_UPDATE_RUN_UPDATE:
                    stale = True  # the version re-read: WARN, version not refreshed
                elif prof.shutdown_needs_handoff:
                    causes.append(("shutdown", f"fault {f.describe()}: no handoff version, shutdown refused"))
                continue  # v10/v4: the handoff-version read only WARNs, shutdown goes on with version 0
            step = _STEP_OF_LEAF.get(f.leaf)
            if step is not None:
                causes.append((step, f"fault {f.describe()}"))
        offline = rec.ctrl is not None and len(rec.online_at_ctrl) < self.m.ncpus
        if not offline:  # checks of the session's last LP, which never comes with a CPU offline
            if rec.remaining_before == 0:
                causes.append(("install", "no updates left (num_remaining_updates 0)"))
            if rec.image == "bad-sig":
                causes.append(("install", "the sigstruct's signature is wrong"))
            if rec.image == "bad-hash":
                causes.append(("install", "the module pages do not match SEAMHASH"))
            if rec.aslr:
                causes.append(("install", "the P-SEAMLDR's RDRAND for ASLR fails"))
            if rec.seamdb:
                causes.append(("install", "SEAMDB_INSERT fails on every try"))
            if rec.relocation:
                causes.append(("install", "the P-SEAMLDR's ELF relocation fails"))
        if offline:
            causes.append(("init", f"offline CPU(s) {_cpus(tuple(sorted(set(range(self.m.ncpus)) - set(rec.online_at_ctrl))))}: "
                                   "INSTALL never completes"))
        if not causes:
            return "none", [], stale
        first = min(STEP_ORDER.index(s) for s, _ in causes)
        step = STEP_ORDER[first]
        return step, [why for s, why in causes if s == step], stale

    def _aftermath(self, rec: UpdateRecord, exp: Expect) -> list[str]:
        out = []
        if rec.error_text != exp.error:
            out.append(f"error file reads {rec.error_text!r}, expected {exp.error!r}")
        va = rec.version_after
        if exp.version == "unchanged" and va != rec.version_before:
            out.append(f"version reads {_v(va)}, expected it unchanged ({_v(rec.version_before)})")
        elif exp.version == "new" and va != f"{rec.target}\n":
            out.append(f"version reads {_v(va)}, expected {rec.target}")
        elif exp.version == "ENXIO" and va != -errno.ENXIO:
            out.append(f"version reads {_v(va)}, expected ENXIO")
        if exp.tds == "-" or not rec.ended:
            return out
        before, after = rec.td_before, rec.td_after
        if rec.hazard == "td-build-raced":
            raced = set(rec.build_at_shutdown)
            before = {t: v for t, v in before.items() if t not in raced}
            after = {t: v for t, v in after.items() if t not in raced}
        if exp.tds == "intact" and after != before:
            from tdxseam.seam.td import compare_tds

            diff = compare_tds(before, after)
            out.append("TDs not preserved: " + "; ".join(diff[:4]) + (" ..." if len(diff) > 4 else ""))
        elif exp.tds == "lost" and rec.td_after:
            out.append(f"{len(rec.td_after)} TD(s) still usable after a failed update")
        mod = rec.module_after
        ready = mod is not None and mod.ready and bool(rec.seam_ready_after)
        if exp.module == "old" and (mod is not rec.module_before or ready != rec.ready_before):
            out.append("the module before the update is not left as it was")
        elif exp.module == "new-ready":
            if mod is None or mod is rec.module_before or not ready:
                out.append("no new usable module")
            else:
                from tdxseam.sim.real import module_version

                said = module_version(mod)  # a binary: its TDH.SYS.RD answers
                unasked = said is None and exp.version == "unchanged"  # the re-read failed: never asked
                if said != rec.target and not unasked:
                    out.append(f"module {said or '?'} runs, expected {rec.target}")
        elif exp.module == "new-not-ready":
            if mod is None or mod is rec.module_before or ready:
                out.append("expected the new module loaded but not initialised")
        elif exp.module == "unusable" and ready:
            out.append("a usable module remains after a failed INSTALL")
        if exp.remaining is not None:
            delta = rec.remaining_after - rec.remaining_before
            if delta != exp.remaining:
                out.append(f"num_remaining_updates changed by {delta}, expected {exp.remaining}")
        return out


_STEP_OF_LEAF = {
    TdxLeaf.TDH_SYS_SHUTDOWN: "shutdown",
    SeamldrLeaf.P_SEAMLDR_INSTALL: "install",
    TdxLeaf.TDH_SYS_INIT: "init",
    TdxLeaf.TDH_SYS_LP_INIT: "init",
    TdxLeaf.TDH_SYS_UPDATE: "update",
}


def _usable(fw: Any) -> bool:
    mod = fw.module
    return mod is not None and mod.ready and bool(fw.seamextend.seam_ready)


def _is_stopper(task: Any) -> bool:
    return task is not None and task.name.startswith("migration/")


def _cpus(ids: tuple[int, ...]) -> str:
    return "{" + ",".join(str(i) for i in ids) + "}"


def _v(v: Any) -> str:
    if isinstance(v, str):
        return v.strip()
    if v == -errno.ENXIO:
        return "ENXIO"
    return repr(v)
