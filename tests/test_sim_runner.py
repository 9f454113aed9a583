"""The simulator's runs: fixed seeds pass, every row of the §5.7 oracle is reached, invariants fire."""

from __future__ import annotations

import pytest

from tdxseam.sim.invariants import OUTCOMES
from tdxseam.sim.runner import default_budget, replay_command, run_scenario, run_seed
from tdxseam.sim.scenario import HotplugSpec, ReaderSpec, Scenario, TdSpec, UpdateSpec, generate


@pytest.mark.parametrize("schedule", ["random", "pct"])
def test_fixed_seeds_pass(schedule):
    for seed in range(150):
        r = run_seed(seed, schedule=schedule)
        assert r.ok, "\n".join(r.report_lines())
        assert r.updates, f"seed {seed}: no upload happened"


def test_same_seed_same_result():
    a, b = run_seed(21), run_seed(21)
    assert a.to_json() == b.to_json()
    assert a.schedule_digest == b.schedule_digest
    assert run_seed(22).schedule_digest != a.schedule_digest


def test_tracing_does_not_change_the_run():
    quiet, traced = run_seed(9), run_seed(9, trace=True)
    assert quiet.schedule_digest == traced.schedule_digest and quiet.steps == traced.steps
    assert traced.trace_digest and traced.trace is not None and quiet.trace_digest is None


def test_generated_runs_cover_the_outcomes():
    seen = set()
    for seed in range(60):
        for u in run_seed(seed, kernel="v4").updates:
            seen.add(u["expected"])
    assert {"none", "busy", "install", "shutdown"} <= seen, seen


# ---- every row of the oracle, reached on purpose ------------------------------------------------------


def _one(cpus=3, *, faults=(), image="good", cap=64, tds=None, hotplug=(), delay=0, kernel="merged",
         **upd) -> Scenario:
    return Scenario(seed=1, cpus=cpus, module="1.5.06", seamdb_capacity=cap, kernel=kernel,
                    tds=tds if tds is not None else [TdSpec(cpu=1, prebuilt=True, pages=2, runs=1)],
                    readers=[ReaderSpec(cpu=cpus - 1, attr="version", reads=2, delay=5, gap=40)],
                    hotplug=list(hotplug), updates=[UpdateSpec("1.5.08", image=image, delay=delay, retries=0, **upd)],
                    faults=list(faults))


def _outcome(sc: Scenario) -> dict:
    r = run_scenario(sc)
    assert r.ok, "\n".join(r.report_lines())
    assert len(r.updates) == 1
    return r.updates[0]


@pytest.mark.parametrize("sc,key,version", [
    (_one(), "none", "1.5.08"),
    (_one(image="bad-header"), "image", "1.5.06"),
    (_one(faults=["TDH_SYS_SHUTDOWN=TDX_SYS_BUSY"]), "shutdown", "1.5.06"),
    (_one(faults=["TDH_SYS_SHUTDOWN=0xc000010000000001"]), "shutdown", "1.5.06"),
    (_one(faults=["P_SEAMLDR_INSTALL@1=EBADSIG"]), "install", "ENXIO"),
    (_one(faults=["P_SEAMLDR_INSTALL@2=vmfailinvalid"]), "install", "ENXIO"),
    (_one(cap=1), "install", "ENXIO"),
    (_one(image="bad-sig"), "install", "ENXIO"),
    (_one(image="bad-hash"), "install", "ENXIO"),
    (_one(aslr_entropy=True), "install", "ENXIO"),
    (_one(seamdb_entropy=True), "install", "ENXIO"),
    (_one(faults=["TDH_SYS_LP_INIT@2=gp"]), "init", "ENXIO"),
    (_one(faults=["TDH_SYS_INIT#*=TDX_RND_NO_ENTROPY"]), "init", "ENXIO"),
    (_one(faults=["TDH_SYS_LP_INIT@1=TDX_RND_NO_ENTROPY"]), "none", "1.5.08"),  # retried
    (_one(faults=["TDH_SYS_UPDATE=TDX_SYS_INVALID_HANDOFF"]), "update", "ENXIO"),
    # the handoff-version read: merged refuses to shut down, v10 and v4 only WARN
    (_one(faults=["TDH_SYS_RD@0#1=TDX_METADATA_FIELD_ID_INCORRECT"]), "shutdown", "1.5.06"),
    (_one(faults=["TDH_SYS_RD@0#1=TDX_METADATA_FIELD_ID_INCORRECT"], kernel="v10"), "none", "1.5.08"),
    (_one(faults=["TDH_SYS_RD@0#1=TDX_METADATA_FIELD_ID_INCORRECT"], kernel="v4"), "none", "1.5.08"),
    # v4's pre-checks refuse before the lockstep
    (_one(cap=1, kernel="v4"), "image", "1.5.06"),
    (_one(hotplug=[HotplugSpec(cpu=1, victim=2, gap=600)], delay=60, kernel="v4"), "image", "1.5.06"),
    # the P-SEAMLDR's relocation fault switch, and a failed page allocation (-ENOMEM)
    (_one(relocation=True), "install", "ENXIO"),
    (_one(alloc_fail=2), "image", "1.5.06"),
    (_one(faults=["TDH_SYS_RD@0#2=TDX_METADATA_FIELD_ID_INCORRECT"]), "none-stale", "1.5.06"),
    (_one(hotplug=[HotplugSpec(cpu=1, victim=2, gap=600)], delay=60), "init-offline", "ENXIO"),
], ids=lambda x: x if isinstance(x, str) else None)
def test_oracle_rows(sc, key, version):
    u = _outcome(sc)
    assert u["expected"] == key, u
    assert u["version_after"] == version, u
    exp = OUTCOMES[key]
    assert u["error"] == exp.error.strip()


@pytest.mark.parametrize("kernel", ["v4", "v10"])  # the kernel gate; the module's compat refusal
def test_busy_row_when_a_build_races_the_upload(kernel):
    for seed in range(80):
        sc = Scenario(seed=seed, cpus=3, tds=[TdSpec(cpu=1, race=1, pages=2)], kernel=kernel,
                      updates=[UpdateSpec("1.5.08", retries=2)])
        r = run_scenario(sc)
        assert r.ok, "\n".join(r.report_lines())
        if r.updates[0]["expected"] == "busy":
            assert r.updates[0]["error"] == "transferring:device-busy"
            assert {u["expected"] for u in r.updates} <= {"busy", "none"}, r.updates
            return
    pytest.fail("no seed raced a TD build against the upload")


def test_merged_lets_the_update_race_a_build_and_records_the_hazard():
    for seed in range(80):
        sc = Scenario(seed=seed, cpus=3, tds=[TdSpec(cpu=1, race=1, pages=2)],
                      updates=[UpdateSpec("1.5.08", retries=2)])
        r = run_scenario(sc)
        assert r.ok, "\n".join(r.report_lines())
        assert all(u["expected"] != "busy" for u in r.updates)
        if any("td-build-raced" in u["coverage_outcome"] for u in r.updates):
            return
    pytest.fail("no seed raced a TD build against the update's shutdown")


def test_a_second_update_after_a_lost_module_fails_at_shutdown():
    sc = _one(faults=["TDH_SYS_UPDATE=ud"])
    sc.updates.append(UpdateSpec("1.5.09", retries=0))
    r = run_scenario(sc)
    assert r.ok, "\n".join(r.report_lines())
    assert [u["expected"] for u in r.updates] == ["update", "shutdown"]


def test_two_good_updates_preserve_tds():
    sc = _one(tds=[TdSpec(cpu=1, prebuilt=True, pages=2, runs=2), TdSpec(cpu=2, prebuilt=True, vcpus=2)])
    sc.updates.append(UpdateSpec("1.5.10", retries=0))
    r = run_scenario(sc)
    assert r.ok and [u["version_after"] for u in r.updates] == ["1.5.08", "1.5.10"]
    assert r.stats["tds_built"] == 2


# ---- the invariants bite -------------------------------------------------------------------------------


def test_step_budget_hit_is_a_violation():
    r = run_scenario(_one(), max_steps=60)
    assert r.first_kind == "budget"


def test_no_irqsave_on_its_own_cpu_deadlocks_and_is_reported():
    sc = Scenario(seed=2, cpus=2, readers=[ReaderSpec(cpu=1, attr="seamldr_version", reads=3)],
                  irqs=[], updates=[UpdateSpec("1.5.08", retries=0)])
    from tdxseam.sim.scenario import IrqSpec

    kinds = set()
    for seed in range(40):
        sc2 = Scenario(seed=seed, cpus=2, readers=sc.readers,
                       irqs=[IrqSpec(cpu=0, target=1, handler="seamldr_info", delay=d) for d in (0, 3, 6)],
                       updates=sc.updates)
        r = run_scenario(sc2, mutations=("no-irqsave",))
        kinds |= {v.kind for v in r.violations}
        if "deadlock" in kinds:
            break
    assert {"lockdep", "deadlock"} <= kinds, kinds


def test_default_budget_grows_with_the_scenario():
    small, big = generate(1, cpus=2), generate(1, cpus=8)
    assert default_budget(big) > default_budget(small) > 0


def test_replay_command():
    assert replay_command(7) == "tdxseam sim replay 7"
    assert replay_command(7, cpus=4, mutations=("no-lock",), schedule="pct") == \
        "tdxseam sim replay 7 --cpus 4 --mutate no-lock --schedule pct"


# ---- reboot after the run ----------------------------------------------------------------------------


def test_a_lost_module_is_recovered_by_a_reboot():
    sc = _one(faults=["TDH_SYS_UPDATE=ud"])
    sc.reboot = True
    r = run_scenario(sc)
    assert r.ok, "\n".join(r.report_lines())
    assert r.updates[0]["expected"] == "update" and r.stats["rebooted"] == 2  # it had been lost


def test_a_reboot_that_kept_seam_state_is_caught(monkeypatch):
    """If a reboot behaved like kexec (SEAM state kept), the reboot check fails the run."""
    from tdxseam.host import EmulatedHost

    def kexec_instead(self):
        self.kexec()
        return self

    monkeypatch.setattr(EmulatedHost, "reboot", kexec_instead)
    sc = _one()
    sc.reboot = True
    r = run_scenario(sc)
    assert [v.kind for v in r.violations] == ["reboot"], r.violations


def test_a_hotplug_read_lock_kept_after_the_update_is_caught(monkeypatch):
    from tdxseam.kernel.stop_machine import CpuHotplugLock

    monkeypatch.setattr(CpuHotplugLock, "read_unlock", lambda self: None)
    r = run_scenario(_one())
    kinds = [v.kind for v in r.violations]
    assert kinds[0] == "lock-held" and "cpu_hotplug_lock still read-held" in r.violations[0].message, kinds


def test_step_checks_run_on_changes_find_what_checks_at_every_step_find(monkeypatch):
    """The monitor's per-step checks run only at the steps after something they read changed
    (`Monitor._arm`); run at every step instead, they report the same violations at the same
    steps, and the runs are the same."""
    from tdxseam.sim.invariants import Monitor

    def runs() -> list:
        out = []
        for mutation, kernel in (("no-abort", "merged"), ("no-hotplug-lock", "merged"),
                                 ("skip-lp-init", "merged"), ("ack-before-work", "v10")):
            for seed in range(30):
                r = run_seed(seed, mutations=(mutation,), kernel=kernel)
                out.append((r.steps, r.schedule_digest, [str(v) for v in r.violations], r.updates))
        return out

    on_changes = runs()
    step_checks = Monitor.on_step

    def every_step(self, sched):
        step_checks(self, sched)
        self._arm()  # look again at the next step, whatever changes

    monkeypatch.setattr(Monitor, "on_step", every_step)
    assert runs() == on_changes
    kinds = {v.split("]")[0][1:] for r in on_changes for v in r[2]}
    assert {"lockstep-abort", "online-changed"} <= kinds
