"""Run one scenario on an emulated host, with every invariant watching; report what broke.

`run_scenario(scenario)` boots the host the scenario describes, builds its prebuilt TDs, then
starts one task per actor (updater, TD builders, sysfs readers, interrupt raisers, hotplug) on
the simulated CPUs and runs them all under the deterministic scheduler. The seed of the scenario
seeds the host, so a run is a function of (scenario, mutations, schedule policy): run it again and
every step, every trace line and every verdict is the same. `run_seed(seed)` generates the
scenario first.

Actors call the kernel as userspace and KVM would: the update goes through the `tdx_module`
fw_upload files (loading/data/loading, then wait for idle, read `error` and `version`), readers call
the `tdx_host` attribute callbacks, TD builders call KVM-lite, hotplug calls `cpu_down`/`cpu_up`.
The only things the harness touches directly are the fault knobs the scenario names (a fault
plan on the SEAM door, the P-SEAMLDR's entropy knobs for one upload).

A scenario with `firmware="real"` boots Intel's binaries from the catalog instead of synthetic
modules (`sim/real.py`); the report lists the invariants that do not apply there, and a module
that stops inside a SEAMCALL is the run's outcome (`RunResult.stopped_in_seam`).
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from tdxseam.formats.leaves import SeamldrLeaf
from tdxseam.formats.version import ModuleVersion
from tdxseam.kernel.firmware_upload import FwUploadErr
from tdxseam.platform.cpu import SeamcallEnd
from tdxseam.platform.sched import StepBudgetExceeded, WaitQueue
from tdxseam.sim.invariants import Monitor, UpdateRecord, Violation, invariants_for
from tdxseam.sim.scenario import Scenario, generate

SCHEDULES = ("random", "pct")
PAGE = 4096


@lru_cache(maxsize=64)
def update_image(version: str, kind: str = "good", compat: bool = False) -> bytes:
    """A test-signed v2 update image of `version`, intact or broken in one chosen way; `compat`:
    the module offers Update Compatibility (TDX_FEATURES0 bit 47), as a v10 kernel needs."""
    from tdxseam.formats.metadata import TDX_FEATURES0_UPDATE_COMPAT
    from tdxseam.formats.testsign import DEFAULT_FEATURES0, make_image

    kw = {"features0": DEFAULT_FEATURES0 | TDX_FEATURES0_UPDATE_COMPAT} if compat else {}
    return break_image(make_image(ModuleVersion.parse(version), **kw), kind)


def break_image(image: bytes, kind: str = "good") -> bytes:
    """A v2 update image (header page, one sigstruct page, module pages), intact or broken in one
    chosen way: the synthetic modules' and Intel's releases alike."""
    img = bytearray(image)
    if kind == "bad-header":
        img[0:2] = (0x201).to_bytes(2, "little")  # header version: the kernel wants 0x200
    elif kind == "bad-sig":
        img[PAGE + 0x204 + 7] ^= 0x5A  # a byte of the RSA signature
    elif kind == "bad-hash":
        img[2 * PAGE + 1500] ^= 0xFF  # a byte of module page 0, past the identity header
    elif kind != "good":
        raise ValueError(f"unknown image kind {kind!r}")
    return bytes(img)


def default_budget(sc: Scenario) -> int:
    """Scheduler steps a scenario may take (after boot) before the run counts as a livelock."""
    return 100_000 + 6_000 * sc.cpus * (1 + sum(1 + u.retries for u in sc.updates))


@dataclass
class RunResult:
    seed: int
    cpus: int
    mutations: tuple[str, ...]
    schedule: str
    violations: list[Violation]
    updates: list[dict]
    steps: int
    schedule_digest: str
    trace_digest: str | None
    stats: dict = field(default_factory=dict)
    scenario: Scenario | None = None
    trace: Any = None  # the host's Trace when the run was traced
    firmware: str = "model"
    invariants: dict = field(default_factory=dict)  # invariants.invariants_for: checked, not applicable
    # real firmware: Intel's module stopped inside a SEAMCALL (ud2, hlt, an exception): the run's
    # outcome, not an invariant's verdict; the checks that need the host to go on did not run
    stopped_in_seam: str | None = None

    @property
    def ok(self) -> bool:
        return not self.violations and self.stopped_in_seam is None

    @property
    def first_kind(self) -> str | None:
        return self.violations[0].kind if self.violations else None

    def to_json(self) -> dict:
        return {
            "seed": self.seed, "cpus": self.cpus, "mutations": list(self.mutations),
            "schedule": self.schedule, "ok": self.ok,
            "violations": [v.to_json() for v in self.violations], "updates": self.updates,
            "steps": self.steps, "schedule_digest": self.schedule_digest,
            "trace_digest": self.trace_digest, "stats": self.stats,
            "firmware": self.firmware, "invariants": self.invariants, "stopped_in_seam": self.stopped_in_seam,
        }

    def report_lines(self) -> list[str]:
        muts = f", mutations {','.join(self.mutations)}" if self.mutations else ""
        fw = ", real firmware" if self.firmware == "real" else ""
        out = [f"seed {self.seed}: {self.cpus} CPUs{fw}, schedule {self.schedule}{muts}"]
        if self.scenario is not None:
            out += ["  " + line for line in self.scenario.describe()]
        for u in self.updates:
            how = "succeeded" if u["outcome"] == "none" else f"failed at {u['outcome']}"
            if u["outcome"] == "module-stopped":
                how = "did not finish: the module stopped inside a SEAMCALL"
            if u["expected"] == "none-stale" and u["outcome"] == "none":
                how += " (version re-read failed: WARN, version not refreshed)"
            elif u["expected"] not in (u["outcome"], "init-offline") and u["outcome"] != "module-stopped":
                how += f" (expected {u['expected']})"
            why = f" ({'; '.join(u['causes'])})" if u["causes"] else ""
            err = f"error {u['error']!r}" if u["error"] else "error file empty"
            out.append(f"upload {u['update']}.{u['attempt']} -> {u['to']} [{u['image']}]: {how}{why}; "
                       f"version {u['version_after']}; {err}")
        s = self.stats
        out.append(f"TDs built {s.get('tds_built', 0)}, reads {s.get('reads', 0)}, interrupts "
                   f"{s.get('irqs', 0)}, faults fired {s.get('faults_fired', 0)}, hotplug {s.get('hotplug', 0)}")
        if self.stopped_in_seam is not None:
            out.append(f"outcome: {self.stopped_in_seam}; the host hangs in stop_machine, the module is lost: "
                       "the checks after the stop did not run")
        inv = self.invariants
        if inv:
            out.append(f"invariants checked ({len(inv['checked'])}): {', '.join(inv['checked'])}")
            by_reason: dict[str, list[str]] = {}
            for name, why in inv["not_applicable"].items():
                by_reason.setdefault(why, []).append(name)
            for why, names in by_reason.items():
                out.append(f"invariants not applicable on real firmware: {', '.join(names)} ({why})")
        if self.violations:
            out.append(f"violations: {len(self.violations)}")
            out += [f"  {v}" for v in self.violations]
        else:
            out.append("violations: none")
        out.append(f"steps {self.steps}, schedule {self.schedule_digest}"
                   + (f", trace {self.trace_digest}" if self.trace_digest else ""))
        return out


class _WatchedOps:
    """The tdx_module upload ops, with write() reported to the monitor (begin and return)."""

    def __init__(self, inner: Any, sim: SimRun) -> None:
        self.inner = inner
        self.sim = sim

    def prepare(self, data: bytes, size: int) -> FwUploadErr:
        return self.inner.prepare(data, size)

    def write(self, data: bytes, offset: int, size: int) -> tuple[FwUploadErr, int]:
        sim = self.sim
        rec = sim.pending or UpdateRecord(-1, 0, "?", "?", False, False, sim.sched.steps)
        sim.pending = None
        sim.mon.records.append(rec)
        sim.mon.write_begins(rec)
        err, written = self.inner.write(data, offset, size)
        sim.mon.write_returns(rec, int(err))
        return err, written

    def poll_complete(self) -> FwUploadErr:
        return self.inner.poll_complete()

    def cancel(self) -> None:
        self.inner.cancel()


def _delay(cpu: Any, n: int) -> None:
    cpu.preempt_points(n)


class SimRun:
    """One scenario on one host: build, run, judge."""

    def __init__(self, scenario: Scenario, *, mutations: tuple[str, ...] | frozenset[str] = (),
                 schedule: str | Any = "random", trace: bool = False, max_steps: int | None = None,
                 catalog: Any = None) -> None:
        from tdxseam.host import DeclaredModule, EmulatedHost
        from tdxseam.kernel.tdx_host import tdx_host_init
        from tdxseam.seam.faults import FaultPlan, parse_fault_spec
        from tdxseam.seam.pseamldr import SeamldrBuild

        sc = scenario
        self.sc = sc
        self.mutations = tuple(sorted(mutations))
        self.schedule = schedule if isinstance(schedule, str) else getattr(schedule, "name", "custom")
        self.budget = max_steps or default_budget(sc)
        from dataclasses import replace as _replace

        from tdxseam.formats.metadata import TDX_FEATURES0_UPDATE_COMPAT

        # a v10 kernel always asks SHUTDOWN to avoid compat-sensitive work: boot modules that know how
        self.compat = sc.kernel == "v10"
        boot = DeclaredModule(ModuleVersion.parse(sc.module))
        if self.compat:
            boot = _replace(boot, features0=boot.features0 | TDX_FEATURES0_UPDATE_COMPAT)
        self.catalog = None
        if sc.firmware == "real":  # Intel's releases from the catalog (sim/real.py)
            from tdxseam.seam.real import require
            from tdxseam.sim.real import catalog_dir, real_host

            require()
            self.catalog = catalog_dir(catalog)
            self.host = real_host(sc, self.catalog, mutations=frozenset(self.mutations), trace=trace)
        else:
            self.host = EmulatedHost(
                sc.cpus, seed=sc.seed, module=boot,
                seamldr=SeamldrBuild(seamdb_capacity=sc.seamdb_capacity, max_lps=max(1024, sc.cpus)),
                mutations=frozenset(self.mutations), trace=trace, kernel=sc.kernel, sockets=sc.sockets)
        self.k = self.host.kernel
        self.m = self.host.machine
        self.fw = self.host.fw
        self.sched = self.m.sched
        self.dev = tdx_host_init(self.k)
        self.stats = {"tds_built": 0, "reads": 0, "irqs": 0, "faults_fired": 0, "hotplug": 0}
        self.versions = {f"{sc.module}\n"} | {f"{ModuleVersion.parse(u.to)}\n" for u in sc.updates}
        self.pending: UpdateRecord | None = None
        self.uploads_started = 0
        self.updater_done = False
        self.sig = WaitQueue(self.sched, "sim: uploads")
        self.idle = WaitQueue(self.sched, "sim: upload idle")
        self._prebuild()
        plan = FaultPlan([parse_fault_spec(f) for f in sc.faults]) if sc.faults else None
        self.mon = Monitor(self.host, plan, watch_online=bool(sc.hotplug))
        self.early: list[Violation] = []
        if self.dev.fw_upload is None:
            self.early.append(Violation("setup", self.sched.steps, "the host offers no runtime update"))
        else:
            self.dev.fw_upload.ops = _WatchedOps(self.dev.fw_upload.ops, self)
            self.dev.fw_upload.on_idle.append(self.idle.notify_all)
        # KCSAN on; in a third of the seeds every shared access is also a preemption point
        self.k.kcsan.enable(preempt=(sc.seed * 2654435761 >> 7) % 3 == 0)
        self._spawn_actors()
        self.sched.max_steps = self.sched.steps + self.budget  # the scenario's own steps, not boot's
        if isinstance(schedule, str):
            if schedule == "pct":
                from tdxseam.sim.schedules import PctPolicy, measured_horizon

                horizon = measured_horizon(sc, self.mutations, catalog=self.catalog)
                self.stats["pct_horizon"] = horizon
                self.pct = self.sched.pick = PctPolicy(sc.seed, horizon=horizon)
            elif schedule != "random":
                raise ValueError(f"unknown schedule {schedule!r} (random or pct)")
        else:
            self.sched.pick = schedule

    # ---- setup ----------------------------------------------------------------------------------

    def _prebuild(self) -> None:
        from tdxseam.kernel.kvm_tdx import tdx_td_create, tdx_vcpu_run

        self.td_handles: dict[int, Any] = {}
        for i, t in enumerate(self.sc.tds):
            if not t.prebuilt:
                continue

            def build(i=i, t=t) -> None:
                ret, td = tdx_td_create(self.k, nr_vcpus=t.vcpus, nr_pages=t.pages, seed=self._td_seed(i))
                if ret == 0:
                    self.td_handles[i] = td
                    tdx_vcpu_run(self.k, td)

            self.host.run_on(t.cpu, build)
            self.stats["tds_built"] += i in self.td_handles

    def _td_seed(self, i: int) -> int:
        return self.sc.seed * 100 + i

    def _spawn_actors(self) -> None:
        sc, sp, cpus = self.sc, self.sched.spawn, self.m.cpus
        if sc.updates and self.dev.fw_upload is not None:
            sp(cpus[sc.updater_cpu], self._updater, name="sim-updater")
        else:
            self.updater_done = True
        for i, t in enumerate(sc.tds):
            if t.prebuilt:
                if t.runs and i in self.td_handles:
                    sp(cpus[t.cpu], self._td_runner, i, t, self.td_handles[i], name=f"sim-td{i}")
            else:
                sp(cpus[t.cpu], self._td_builder, i, t, name=f"sim-td{i}")
        for i, r in enumerate(sc.readers):
            sp(cpus[r.cpu], self._reader, i, r, name=f"sim-reader{i}")
        for i, q in enumerate(sc.irqs):
            sp(cpus[q.cpu], self._irq_raiser, i, q, name=f"sim-irq{i}")
        for i, h in enumerate(sc.hotplug):
            sp(cpus[h.cpu], self._hotplug, i, h, name=f"sim-hotplug{i}")

    def _cpu(self) -> Any:
        return self.m.current_cpu()

    def _image(self, version: str, kind: str) -> bytes:
        """The update image the scenario uploads: a synthetic module, or Intel's release."""
        if self.catalog is not None:
            from tdxseam.sim.real import update_image as real_image

            return real_image(self.catalog, version, kind)
        return update_image(version, kind, self.compat)

    def _wait_upload(self, k: int) -> None:
        self._cpu().sleep_until(self.sig, lambda: self.uploads_started >= k or self.updater_done,
                                f"sim: upload {k} to begin")

    # ---- actors ---------------------------------------------------------------------------------

    def _updater(self) -> None:
        cpu, fwu, dev, mon = self._cpu(), self.dev.fw_upload, self.dev, self.mon
        pseamldr = self.fw.pseamldr
        try:
            for i, u in enumerate(self.sc.updates):
                _delay(cpu, u.delay)
                image = self._image(u.to, u.image)
                for attempt in range(u.retries + 1):
                    rec = UpdateRecord(i, attempt, str(ModuleVersion.parse(u.to)), u.image, u.aslr_entropy,
                                       u.seamdb_entropy, self.sched.steps, relocation=u.relocation,
                                       alloc_fail=u.alloc_fail)
                    rec.version_before = dev.version_show()
                    self.pending = rec
                    pseamldr.faults.aslr_entropy = u.aslr_entropy
                    pseamldr.faults.relocation = u.relocation
                    self.fw.seamdb.fail_next_inserts = 5 if u.seamdb_entropy else 0
                    self.uploads_started += 1
                    self.sig.notify_all()
                    self.m.emit("sim", f"upload {i}.{attempt}: {rec.target} ({u.image})")
                    fwu.loading_store("1\n")
                    n = fwu.data_write(0, image)
                    ret = fwu.loading_store("0\n")
                    if n != len(image) or ret < 0:
                        mon.violate("upload", f"upload {i}.{attempt}: data write {n}, loading 0 -> {ret}")
                        self.pending = None
                        return
                    cpu.sleep_until(self.idle, lambda: not fwu.busy, "sim: upload to finish")
                    pseamldr.faults.aslr_entropy = False
                    pseamldr.faults.relocation = False
                    self.fw.seamdb.fail_next_inserts = 0
                    rec.error_text = fwu.error_show()
                    rec.version_after = dev.version_show()
                    if not rec.returned:
                        mon.violate("upload", f"upload {i}.{attempt}: the driver's write() never ran")
                        return
                    mon.judge(rec)
                    self.m.emit("sim", f"upload {i}.{attempt} done: {rec.observed or '?'} "
                                       f"(expected {rec.expected}), error {rec.error_text!r}")
                    if rec.observed != "busy":
                        break
                    _delay(cpu, 40 * (attempt + 1))  # back off, as an operator would
        finally:
            self.updater_done = True
            self.sig.notify_all()

    def _td_builder(self, i: int, t: Any) -> None:
        from tdxseam.kernel.kvm_tdx import tdx_td_create

        cpu = self._cpu()
        if t.race:
            self._wait_upload(t.race)
        _delay(cpu, t.delay)
        ret, td = -errno.EBUSY, None
        for _attempt in range(4):
            lost = self.mon.lost
            ret, td = tdx_td_create(self.k, nr_vcpus=t.vcpus, nr_pages=t.pages, seed=self._td_seed(i))
            if ret != -errno.EBUSY:
                break
            _delay(cpu, 15)
        self.m.emit("sim", f"td{i} build: {ret}")
        if ret == 0:
            self.stats["tds_built"] += 1
            self._td_runner(i, t, td)
        elif ret != -errno.EBUSY and not (lost or self.mon.lost) and not self._faulted(cpu):
            self.mon.violate("td", f"td{i}: build failed with {ret} on a healthy module")

    def _td_runner(self, i: int, t: Any, td: Any) -> None:
        from tdxseam.kernel.kvm_tdx import tdx_vcpu_run

        cpu = self._cpu()
        for r in range(t.runs):
            _delay(cpu, 3)
            lost = self.mon.lost
            ret = tdx_vcpu_run(self.k, td, r % len(td.vcpus))
            if ret and not (lost or self.mon.lost) and not self._faulted(cpu):
                self.mon.violate("td", f"td{i}: vCPU run failed with {ret} on a healthy module")

    def _truth_version(self) -> str | int:
        """What `version` must read now, from the firmware: the running module's version when it
        is usable, else ENXIO."""
        from tdxseam.sim.real import module_version

        fw = self.fw
        mod = fw.module
        said = module_version(mod)  # real firmware: what the binary answered to TDH.SYS.RD
        if mod is None or not mod.ready or not fw.seamextend.seam_ready or said is None:
            return -errno.ENXIO
        return f"{said}\n"

    def _reader(self, i: int, r: Any) -> None:
        cpu = self._cpu()
        _delay(cpu, r.delay)
        last_remaining = None
        for j in range(r.reads):
            if j:
                _delay(cpu, r.gap)
            self.stats["reads"] += 1
            if r.attr == "version":
                v = self.dev.version_show()
                self.m.emit("sim", f"reader{i} version -> {v!r}")
                # the read has no preemption point: the firmware's truth is the one of this moment
                truth = self._truth_version()
                if v != truth and v not in self.mon.stale_versions:
                    self.mon.violate("reader-truth", f"reader{i} on cpu{cpu.id}: version read {v!r}, "
                                                     f"the running module says {truth!r}")
                continue
            before = self.fw.seamdb.remaining()
            v = self.dev.seamldr_version_show() if r.attr == "seamldr_version" else self.dev.num_remaining_updates_show()
            after = self.fw.seamdb.remaining()
            self.m.emit("sim", f"reader{i} {r.attr} -> {v!r}")
            if isinstance(v, int):
                self._info_failed(f"reader{i}", cpu, v)
                continue
            if r.attr == "seamldr_version":
                want = f"{self.fw.pseamldr.build.version_str}\n"
                if v != want:
                    self.mon.violate("reader", f"reader{i} on cpu{cpu.id}: seamldr_version {v!r}, expected {want!r}")
            else:
                n = int(v)
                if not 0 <= n <= self.sc.seamdb_capacity or (last_remaining is not None and n > last_remaining):
                    self.mon.violate("reader", f"reader{i} on cpu{cpu.id}: num_remaining_updates {n} "
                                               f"(before: {last_remaining})")
                # the SEAMDB's count while the read ran (it only goes down)
                if not after <= n <= before:
                    self.mon.violate("reader-truth", f"reader{i} on cpu{cpu.id}: num_remaining_updates {n}, "
                                                     f"the SEAMDB allows {before}"
                                                     + (f"..{after}" if after != before else ""))
                last_remaining = n

    def _faulted(self, cpu: Any) -> bool:
        """Did an injected fault hit this task's last SEAMCALL (the one that failed)?"""
        last = self.mon.last_call.get((self.sched.current, cpu.irq_depth))
        return last is not None and last[3] is not None

    def _info_failed(self, who: str, cpu: Any, ret: int) -> None:
        """A failed SEAMLDR.INFO is fine only if a fault was injected on that very call."""
        last = self.mon.last_call.get((self.sched.current, cpu.irq_depth))
        injected = last is not None and last[0] == SeamldrLeaf.P_SEAMLDR_INFO and last[3] is not None
        if not injected:
            how = ""
            if last is not None and last[1] is not SeamcallEnd.SEAMRET:
                how = f" (SEAMCALL ended with {last[1].value})"
            self.mon.violate("reader", f"{who} on cpu{cpu.id}: SEAMLDR.INFO failed with {ret}{how}, no fault injected")

    def _irq_raiser(self, i: int, q: Any) -> None:
        cpu = self._cpu()
        _delay(cpu, q.delay)
        target = self.m.cpus[q.target]
        if not target.online:
            self.m.emit("sim", f"irq{i}: cpu{q.target} offline, not raised")
            return
        self.stats["irqs"] += 1
        if q.handler == "nmi":
            self.m.irq.raise_nmi(target, self._nmi, i, name=f"sim-nmi{i}")
            return
        handler = self._irq_info if q.handler == "seamldr_info" else self._irq_nop
        self.m.irq.raise_irq(target, handler, i, name=f"sim-irq{i}")

    def _in_seamldr_lock(self, what: str) -> None:
        """Count interrupts and NMIs that arrive on a CPU holding seamldr_lock (coverage)."""
        if self.k.seamldr_lock.holder is self._cpu():
            self.stats[what] = self.stats.get(what, 0) + 1

    def _irq_nop(self, i: int) -> None:
        self._in_seamldr_lock("irq_in_seamldr_lock")
        self.m.emit("sim", f"irq{i} handled")

    def _nmi(self, i: int) -> None:
        """An NMI handler (perf, watchdog): it takes no lock, whatever the CPU it lands on holds."""
        self._in_seamldr_lock("nmi_in_seamldr_lock")
        self.m.emit("sim", f"nmi{i} handled")

    def _irq_info(self, i: int) -> None:
        from tdxseam.kernel.seamldr import seamldr_get_info

        cpu = self._cpu()
        ret, info = seamldr_get_info(self.k)
        if ret:
            self._info_failed(f"irq{i} handler", cpu, ret)
        elif info.version_str != self.fw.pseamldr.build.version_str:
            self.mon.violate("reader", f"irq{i} handler: SEAMLDR.INFO version {info.version_str}")

    def _offline_refusal_ok(self, victim: int, keyids_before: bool) -> bool | None:
        """tdx_offline_cpu: must cpu_down(victim) be refused? (None: either is right, KeyIDs
        came or went while it ran)."""
        from tdxseam.kernel.kvm_tdx import kvm_tdx

        m = self.m
        pkg = m.package_of(victim)
        last = not any(c.id != victim and m.package_of(c.id) == pkg for c in m.online_cpus())
        keyids_after = bool(kvm_tdx(self.k).keyids)
        if keyids_before != keyids_after:
            return None
        return last and keyids_after

    def _hotplug(self, i: int, h: Any) -> None:
        from tdxseam.kernel.cpu_hotplug import cpu_down, cpu_up
        from tdxseam.kernel.kvm_tdx import kvm_tdx

        cpu = self._cpu()
        if h.race:
            self._wait_upload(h.race)
        _delay(cpu, h.delay)
        self.stats["hotplug"] += 1
        down = []
        for victim in (h.victim, h.victim2) if h.victim2 else (h.victim,):
            keyids = bool(kvm_tdx(self.k).keyids)
            ret = cpu_down(self.k, victim)
            self.m.emit("sim", f"hotplug{i}: cpu_down({victim}) = {ret}")
            refuse = self._offline_refusal_ok(victim, keyids)
            if ret == -errno.EBUSY and refuse is not False:
                self.stats["hotplug_refused"] = self.stats.get("hotplug_refused", 0) + 1
                continue  # the last CPU of its package while TDs hold KeyIDs
            if ret or refuse:
                self.mon.violate("hotplug", f"hotplug{i}: cpu_down({victim}) = {ret}"
                                            + (" (the last CPU of its package while TDX KeyIDs are in use)"
                                               if refuse else ""))
                if ret:
                    return
            down.append(victim)
            _delay(cpu, h.gap)
        for victim in reversed(down):
            lost = self.mon.lost
            ret = cpu_up(self.k, victim)
            self.m.emit("sim", f"hotplug{i}: cpu_up({victim}) = {ret}")
            if ret and not (lost or self.mon.lost):
                self.mon.violate("hotplug", f"hotplug{i}: cpu_up({victim}) failed with {ret} on a healthy module")

    # ---- running --------------------------------------------------------------------------------

    def run(self) -> RunResult:
        mon, sched = self.mon, self.sched
        for v in self.early:
            mon.violations.append(v)
        boot_choices = len(sched.choices)
        ended = False
        try:
            dl = sched.run()
            ended = True
            for rep in self.k.kcsan.reports:  # found while the run went on: before its consequences
                mon.violate("data-race", rep.message)
            if dl is not None:
                mon.violate("deadlock", dl.describe(limit=4).replace("\n", " | "))
        except StepBudgetExceeded as e:
            for rep in self.k.kcsan.reports:
                mon.violate("data-race", rep.message)
            mon.violate("budget", f"the run did not end: {e}")
        from tdxseam.seam.stopped import ModuleStopped

        stopped = next((err for _t, err in sched.errors if isinstance(err, ModuleStopped)), None)
        if stopped is not None:
            # Intel's code never returned: that CPU stays in SEAM mode, the others wait for it in
            # stop_machine forever. The hang (a deadlock, or spinning past the step budget) and the
            # unfinished lockstep are its consequences, not findings of their own.
            self.m.emit("sim", f"the TDX module stopped: {stopped}")
            mon.violations = [v for v in mon.violations if v.kind not in ("deadlock", "budget")]
            for rec in mon.records:
                if not rec.observed:  # never judged: its write() never returned
                    rec.observed = "module-stopped"
        for task, err in sched.errors:
            if err is not stopped:
                mon.violate("model-error", f"{task.name} on cpu{task.cpu.id} raised {type(err).__name__}: {err}")
        sched.errors.clear()
        sched.pick = None  # the checks below use the seeded draw, whatever explored the run
        for rep in self.k.lockdep.reports:
            mon.violate("lockdep", rep.message)
        for rec in mon.records:
            if rec.started and not rec.ended and stopped is None:
                mon.violate("lockstep-exit", f"upload {rec.index}.{rec.attempt}: CPUs never left the lockstep")
        if ended and not sched.deadlock and not sched.live_tasks() and stopped is None:
            mon.quiescence()
        if ended and not sched.deadlock and stopped is None:
            self._final_checks()
            if self.sc.reboot and not sched.errors:
                self._reboot_checks()
        self.stats["faults_fired"] = len(mon.faults_fired)
        if getattr(self.k, "cpuhp_migrations", 0):
            self.stats["migrated"] = self.k.cpuhp_migrations
        if getattr(self, "pct", None) is not None:
            self.stats["pct_changes"] = self.pct.lowered
        tr = sched.trace
        digest = None
        if tr.enabled:
            digest = tr.digest()
        import hashlib

        return RunResult(
            seed=self.sc.seed, cpus=self.sc.cpus, mutations=self.mutations, schedule=self.schedule,
            violations=list(mon.violations), updates=[r.summary() for r in mon.records if r.index >= 0],
            steps=sched.steps, schedule_digest=hashlib.sha256(sched.choices[boot_choices:].tobytes()).hexdigest()[:16],
            trace_digest=digest, stats=dict(self.stats), scenario=self.sc, trace=tr if tr.enabled else None,
            firmware=self.sc.firmware, invariants=invariants_for(self.sc.firmware),
            stopped_in_seam=str(stopped) if stopped is not None else None,
        )

    def _reboot_checks(self) -> None:
        """A platform reset after the run: the host must come back with the BIOS's module and a
        fresh SEAMDB (num_remaining_updates at its boot value), whatever the run left (a lost
        module included), and take one more update as the SEAMDB allows."""
        from tdxseam.host import BootError
        from tdxseam.kernel.seamldr import seamldr_get_info, seamldr_install_module
        from tdxseam.kernel.tdx_host import tdx_host_init

        mon, sc = self.mon, self.sc
        lost = mon.lost
        try:
            h2 = self.host.reboot()
        except BootError as e:
            mon.violate("reboot", f"the host did not come back after a reboot: {e}")
            return
        self.stats["rebooted"] = 1 + lost
        k2 = h2.kernel
        try:
            dev = tdx_host_init(k2)
        except RuntimeError as e:
            mon.violate("reboot", f"no TDX after the reboot: {e}")
            return
        v = h2.run_on(0, dev.version_show)
        if v != _boot_version(sc):
            mon.violate("reboot", f"after the reboot version reads {v!r}, expected the boot module {sc.module}")
        ret, info = h2.run_on(0, seamldr_get_info, k2)
        left = sc.seamdb_capacity - 1
        if ret or info.num_remaining_updates != left:
            mon.violate("reboot", f"after the reboot num_remaining_updates is "
                                  f"{ret or info.num_remaining_updates}, expected {left} (a fresh SEAMDB)")
            return
        target = _reboot_update_target(sc)
        ret = h2.run_on(0, seamldr_install_module, k2, self._image(target, "good"))
        v = h2.run_on(0, dev.version_show)
        if left and (ret or v != f"{target}\n"):
            mon.violate("reboot", f"the update after the reboot failed ({ret}, version {v!r})")
        elif not left and not ret:
            mon.violate("reboot", "an update succeeded after the reboot with no updates left")

    def _final_checks(self) -> None:
        """After everything: every TD the kernel holds runs iff the module is usable."""
        from tdxseam.kernel.kvm_tdx import kvm_tdx, tdx_vcpu_run

        mon = self.mon
        tds = list(kvm_tdx(self.k).tds)
        if not tds:
            return
        results: list[int] = []

        def run_all() -> None:
            for td in tds:
                results.append(tdx_vcpu_run(self.k, td))

        self.m.emit("sim", "final check: run every TD once")
        self.fw.fault_hook = None  # the check verifies; the scenario's faults are over
        try:
            t = self.sched.spawn(self.m.cpus[0], run_all, name="sim-final")
            dl = self.sched.run()
        except StepBudgetExceeded as e:
            mon.violate("budget", f"final check did not end: {e}")
            return
        if dl is not None or not t.done or self.sched.errors:
            mon.violate("final", "the final TD runs did not complete")
            self.sched.errors.clear()
            return
        failed = sum(1 for r in results if r)
        if not mon.lost and failed:
            mon.violate("final", f"{failed} of {len(tds)} TD(s) cannot run on a usable module")
        if mon.lost and failed != len(tds):
            mon.violate("final", f"{len(tds) - failed} TD(s) still run after the module was lost")


def _reboot_update_target(sc: Scenario) -> str:
    """A version above every one the scenario installs (the update after the reboot); on real
    firmware the scenario's own target, an Intel release."""
    if sc.firmware == "real":
        return str(max(ModuleVersion.parse(u.to) for u in sc.updates))
    top = max([ModuleVersion.parse(sc.module)] + [ModuleVersion.parse(u.to) for u in sc.updates])
    return str(ModuleVersion(top.major, top.minor, top.update + 1))


def _boot_version(sc: Scenario) -> str:
    return f"{ModuleVersion.parse(sc.module)}\n"


def run_scenario(scenario: Scenario, *, mutations: tuple[str, ...] | frozenset[str] = (),
                 schedule: str | Any = "random", trace: bool = False,
                 max_steps: int | None = None, catalog: Any = None) -> RunResult:
    """`catalog`: Intel's binaries for a real-firmware scenario (default: found as demo finds them)."""
    return SimRun(scenario, mutations=mutations, schedule=schedule, trace=trace, max_steps=max_steps,
                  catalog=catalog).run()


def run_seed(seed: int, *, cpus: int | None = None, mutations: tuple[str, ...] | frozenset[str] = (),
             schedule: str = "random", trace: bool = False, kernel: str = "merged",
             firmware: str = "model", module: str | None = None, to: str | None = None,
             catalog: Any = None) -> RunResult:
    sc = generate(seed, cpus=cpus, kernel=kernel, firmware=firmware, module=module, to=to)
    return run_scenario(sc, mutations=mutations, schedule=schedule, trace=trace, catalog=catalog)


def replay_command(seed: int, *, cpus: int | None = None, mutations: tuple[str, ...] | frozenset[str] = (),
                   schedule: str = "random", kernel: str = "merged", firmware: str = "model",
                   module: str | None = None, to: str | None = None) -> str:
    """The command line that reproduces a seed's run. A negative seed goes after `--`, where it
    cannot be taken for an option."""
    opts: list[str] = []
    if cpus is not None:
        opts += ["--cpus", str(cpus)]
    if kernel != "merged":
        opts += ["--kernel", kernel]
    for m in sorted(mutations):
        opts += ["--mutate", m]
    if schedule != "random":
        opts += ["--schedule", schedule]
    if firmware == "real":  # the releases too: the same seed on other releases is another run
        from tdxseam.sim.scenario import REAL_DEFAULT

        opts += ["--firmware", "real", "--module", module or REAL_DEFAULT[0], "--to", to or REAL_DEFAULT[1]]
    seed_arg = [str(seed)] + opts if seed >= 0 else opts + ["--", str(seed)]
    return " ".join(["tdxseam", "sim", "replay", *seed_arg])
