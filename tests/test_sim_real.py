"""`sim run --firmware real`: generated scenarios on Intel's TDX module binaries, every invariant
that applies checked, replay byte for byte, planted bugs caught; and the command's errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from _cli import run

from tdxseam.sim.invariants import INVARIANTS, REAL_NOT_APPLICABLE
from tdxseam.sim.scenario import Scenario, ScenarioError, TdSpec, generate

@pytest.fixture
def engine():
    """The real-firmware engine's packages (the `real` extra); skip without them."""
    pytest.importorskip("unicorn")
    pytest.importorskip("capstone")


# ---- generation (no engine, no Intel files needed) -------------------------------------------------


def test_real_scenarios_leave_out_what_the_binary_cannot_do_yet():
    for seed in range(200):
        sc = generate(seed, firmware="real")
        assert sc.firmware == "real" and sc.module == "1.5.06"
        assert not sc.tds and sc.sockets == 1
        assert all(u.to == "1.5.13" for u in sc.updates)
        assert not any(f.startswith(("TDH_MNG_CREATE", "TDH_VP_ENTER")) for f in sc.faults)
        assert Scenario.loads(sc.dumps()) == sc  # a file `sim run --scenario` runs on real firmware


def test_model_scenarios_are_unchanged_by_the_firmware_switch():
    for seed in range(50):
        a, b = generate(seed), generate(seed, firmware="model")
        assert a == b and "firmware" not in a.to_json()
    # the real scenario of a seed is the model's minus the parts left out
    for seed in range(50):
        m, r = generate(seed), generate(seed, firmware="real", module="1.5.08", to="1.5.09")
        assert (m.cpus, m.readers, m.irqs, m.hotplug, m.reboot) == (r.cpus, r.readers, r.irqs, r.hotplug, r.reboot)
        assert [f for f in m.faults if not f.startswith(("TDH_MNG", "TDH_VP"))] == r.faults
        assert r.module == "1.5.08" and {u.to for u in r.updates} == {"1.5.09"}


def test_a_real_scenario_with_tds_is_refused():
    sc = generate(1, firmware="real")
    sc.tds = [TdSpec(cpu=0)]
    with pytest.raises(ScenarioError, match="no TDs"):
        Scenario.loads(json.dumps(sc.to_json()))


def test_every_kind_of_violation_is_a_listed_invariant():
    """The report's list is the checks' list: a new kind of violation must be named there."""
    import re
    from pathlib import Path

    import tdxseam.sim

    src = "".join(p.read_text() for p in Path(tdxseam.sim.__file__).parent.glob("*.py"))
    kinds = set(re.findall(r'(?:violate|Violation)\(\s*"([a-z-]+)"', src))
    assert len(kinds) > 20 and kinds <= set(INVARIANTS), kinds - set(INVARIANTS)
    assert set(REAL_NOT_APPLICABLE) <= set(INVARIANTS)


# ---- runs on Intel's binaries ------------------------------------------------------------------------


def test_seeds_run_clean_on_real_firmware(engine, intel_dir):
    from tdxseam.sim.runner import run_seed

    outcomes = set()
    for seed in range(6):
        r = run_seed(seed, firmware="real", catalog=intel_dir)
        assert r.ok, (seed, [str(v) for v in r.violations], r.stopped_in_seam)
        assert r.firmware == "real"
        outcomes |= {u["outcome"] for u in r.updates}
        for u in r.updates:  # an update that went through installed Intel's 1.5.13
            if u["outcome"] == "none":
                assert u["version_after"] == "1.5.13"
    assert "none" in outcomes and outcomes - {"none"}  # successes and failures both met
    inv = r.invariants
    assert set(inv["not_applicable"]) == set(REAL_NOT_APPLICABLE)
    assert set(inv["checked"]) == set(INVARIANTS) - set(REAL_NOT_APPLICABLE)
    assert "TDH.SYS.RD" in inv["facts"]["reader-truth"]


@pytest.mark.parametrize("mutation,kind", [("skip-lp-init", "lp-init-missing"),
                                           ("ack-before-work", "lockstep-phase"),
                                           ("no-lock", "seamldr-overlap")])
def test_planted_bugs_without_tds_are_caught_on_real_firmware_as_on_the_model(engine, intel_dir, mutation, kind):
    from tdxseam.sim.runner import run_seed

    def first_caught(**kw) -> int | None:
        for seed in range(8):
            r = run_seed(seed, mutations=(mutation,), **kw)
            if any(v.kind == kind for v in r.violations):
                return seed
        return None

    assert first_caught() is not None  # the model catches it
    assert first_caught(firmware="real", catalog=intel_dir) is not None


def _cli(*args: str, hashseed: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONHASHSEED=hashseed)
    return subprocess.run([sys.executable, "-m", "tdxseam.cli", *args], capture_output=True, env=env,
                          timeout=300)


def test_replay_on_real_firmware_is_byte_identical(engine, intel_dir):
    cat = ["--catalog", str(intel_dir)]
    a = _cli("sim", "replay", "9", "--firmware", "real", *cat, "--trace", hashseed="1")
    b = _cli("sim", "replay", "9", "--firmware", "real", *cat, "--trace", hashseed="2")
    assert a.returncode == b.returncode == 0, a.stderr.decode()
    assert a.stdout == b.stdout
    assert b"-- trace --" in a.stdout and b"module-call" in a.stdout  # Intel's code ran
    # `sim run` prints the replay line, and the replayed run is the run
    r = _cli("sim", "run", "--seed", "9", "--firmware", "real", *cat, "--json", hashseed="3")
    out = json.loads(r.stdout)
    assert out["replay"] == "tdxseam sim replay 9 --firmware real --module 1.5.06 --to 1.5.13"
    p = _cli("sim", "replay", "9", "--firmware", "real", *cat, "--json", hashseed="4")
    rep = json.loads(p.stdout)
    assert (out["trace_digest"], out["schedule_digest"]) == (rep["trace_digest"], rep["schedule_digest"])
    assert out["firmware"] == "real" and out["invariants"]["not_applicable"]


def test_a_module_that_stops_is_the_runs_outcome(engine, intel_dir, capsys):
    """Intel's 2.0.04 stops with ud2 in TDH.SYS.UPDATE after 2.0.02's short handoff data: the run
    says so, and the hang it leaves (CPUs in stop_machine) is not reported as a deadlock."""
    code, out, _ = run(capsys, "sim", "run", "--seed", "1", "--firmware", "real", "--module", "2.0.02",
                       "--to", "2.0.04", "--catalog", str(intel_dir), "--json")
    assert code == 1
    d = json.loads(out)
    assert "2.0.04 stopped in TDH_SYS_UPDATE" in d["stopped_in_seam"] and "ud2" in d["stopped_in_seam"]
    assert d["violations"] == [] and d["ok"] is False
    assert d["updates"][0]["outcome"] == "module-stopped"
    code, out, _ = run(capsys, "sim", "run", "--seed", "1", "--firmware", "real", "--module", "2.0.02",
                       "--to", "2.0.04", "--catalog", str(intel_dir))
    assert code == 1 and "outcome: TDX module 2.0.04 stopped in TDH_SYS_UPDATE" in out


def test_text_report_names_what_does_not_apply(engine, intel_dir, capsys):
    code, out, _ = run(capsys, "sim", "run", "--seed", "4", "--cpus", "2", "--firmware", "real",
                       "--catalog", str(intel_dir))
    assert code == 0, out
    assert "Intel's binaries (real firmware), no TDs" in out
    assert "invariants not applicable on real firmware: td-build-at-shutdown, td, final (no TDs" in out


# ---- the command's errors --------------------------------------------------------------------------


def test_cli_errors_are_one_line(engine, intel_dir, capsys, tmp_path):
    cases = [
        (["--module", "1.5.06"], 2, "--module, --to and --catalog go with --firmware real"),
        (["--firmware", "real", "--to", "1.5"], 2, "--to:"),
        (["--firmware", "firm"], 2, "--firmware is 'model' or 'real'"),
        (["--firmware", "real", "--kernel", "v10", "--catalog", str(intel_dir)], 2, "--kernel v10"),
        (["--firmware", "real", "--module", "1.5.07", "--catalog", str(intel_dir)], 3, "1.5.07 is not in the catalog"),
        (["--firmware", "real", "--catalog", str(tmp_path)], 3, "not a catalog"),
    ]
    for args, want, text in cases:
        code, out, err = run(capsys, "sim", "run", "--seed", "1", *args)
        lines = err.strip().splitlines()
        assert code == want and len(lines) == 1 and text in lines[0], (args, code, err)


def test_without_intels_files_the_command_names_where_to_put_them(engine, capsys, monkeypatch):
    import tdxseam.demo

    monkeypatch.delenv("TDXSEAM_INTEL_BINARIES", raising=False)
    monkeypatch.setattr(tdxseam.demo, "find_intel_catalog", lambda explicit=None: None)
    for argv in (["sim", "run", "--seed", "1"], ["sim", "replay", "1"]):
        code, _, err = run(capsys, *argv, "--firmware", "real")
        assert code == 3
        assert err.strip().splitlines() == [
            "tdxseam: error: --firmware real runs Intel's binaries: give --catalog DIR or set $TDXSEAM_INTEL_BINARIES"]


def test_without_the_engine_packages_sim_names_the_extra(tmp_path):
    code = ("import sys; sys.modules['unicorn'] = None; from tdxseam.cli import main; "
            "main(['sim', 'run', '--seed', '1', '--firmware', 'real'])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "tdxseam: error: the real-firmware engine needs unicorn: pip install 'tdxseam[real]'"]
