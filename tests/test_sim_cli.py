"""`tdxseam sim ...`: outputs, JSON keys, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from _cli import run as _run
from tdxseam.kernel.kernel import MUTATIONS


def test_mutations_lists_every_planted_bug(capsys):
    code, out, _ = _run(capsys, "sim", "mutations", "--json")
    assert code == 0 and json.loads(out) == MUTATIONS
    code, out, _ = _run(capsys, "sim", "mutations")
    assert code == 0 and all(name in out for name in MUTATIONS)


def test_run_is_deterministic_and_prints_its_seed(capsys):
    a = _run(capsys, "sim", "run", "--seed", "3")
    b = _run(capsys, "sim", "run", "--seed", "3")
    assert a == b and a[0] == 0
    assert a[1].startswith("seed 3: ") and "violations: none" in a[1] and "replay: tdxseam sim replay 3" in a[1]


def test_run_with_a_mutation_fails_with_exit_1(capsys):
    code, out, _ = _run(capsys, "sim", "run", "--seed", "0", "--cpus", "4", "--mutate", "no-lock", "--json")
    r = json.loads(out)
    assert code == 1 and not r["ok"] and r["violations"][0]["kind"] == "seamldr-overlap"
    assert r["replay"] == "tdxseam sim replay 0 --cpus 4 --mutate no-lock"


def test_campaign_json_keys(capsys):
    code, out, _ = _run(capsys, "sim", "campaign", "--runs", "12", "--jobs", "1", "--seed", "100", "--json")
    r = json.loads(out)
    assert code == 0
    assert {"runs", "violation_count", "failing_seeds", "seconds"} <= r.keys()
    assert r["runs"] == 12 and r["violation_count"] == 0 and r["failing_seeds"] == []


def test_campaign_prints_failing_seeds_with_their_replay_command(capsys):
    code, out, _ = _run(capsys, "sim", "campaign", "--runs", "6", "--jobs", "1", "--cpus", "4",
                        "--mutate", "skip-lp-init")
    assert code == 1
    assert "\n  tdxseam sim replay 0 --cpus 4 --mutate skip-lp-init  # [" in out
    assert "first caught after 1 seed(s)" in out


def test_campaign_in_worker_processes():
    out = subprocess.run([sys.executable, "-m", "tdxseam.cli", "sim", "campaign", "--runs", "40", "--jobs", "2",
                          "--json"], capture_output=True, timeout=300)
    r = json.loads(out.stdout)
    assert out.returncode == 0 and r["runs"] == 40 and r["jobs"] == 2 and r["violation_count"] == 0


def test_explore_json(capsys):
    code, out, _ = _run(capsys, "sim", "explore", "--no-reader", "--preemptions", "0", "--json")
    r = json.loads(out)
    assert code == 0 and r["exhausted"] and r["schedules"] >= 1 and r["cpus"] == 2


@pytest.mark.parametrize("argv", [
    ["sim", "run", "--mutate", "nope"], ["sim", "run", "--cpus", "0"], ["sim", "run", "--schedule", "x"],
    ["sim", "campaign", "--runs", "-1"], ["sim", "campaign", "--jobs", "0"], ["sim", "explore", "--cpus", "9"],
    ["sim", "explore", "--fault", "BOGUS"], ["sim", "explore", "--choices", "x:y"],
])
def test_usage_errors_exit_2(capsys, argv):
    code, _, err = _run(capsys, *argv)
    assert code == 2 and err.startswith("tdxseam: error:")


def test_bad_scenario_file_exits_3(capsys, tmp_path):
    f = tmp_path / "s.json"
    f.write_text('{"seed": 1}')
    code, _, err = _run(capsys, "sim", "run", "--scenario", str(f))
    assert code == 3 and "not a scenario" in err


# ---- kernel profiles, coverage, explore --scenario ----------------------------------------------------


def test_kernel_profile_is_carried_into_the_run_and_its_replay_command(capsys):
    code, out, _ = _run(capsys, "sim", "run", "--seed", "6", "--cpus", "4", "--kernel", "v4",
                        "--mutate", "no-irqsave", "--json")
    r = json.loads(out)
    assert code == 1 and r["replay"] == "tdxseam sim replay 6 --cpus 4 --kernel v4 --mutate no-irqsave"
    code, out, _ = _run(capsys, "sim", "replay", "6", "--cpus", "4", "--kernel", "v4", "--mutate", "no-irqsave")
    assert code == 1 and "kernel v4" in out


@pytest.mark.parametrize("cmd", [["sim", "run"], ["sim", "campaign", "--runs", "1"], ["sim", "explore"],
                                 ["sim", "replay", "1"], ["stress"], ["demo"]])
def test_unknown_kernel_profile_is_refused_everywhere(capsys, cmd):
    code, _, err = _run(capsys, *cmd, "--kernel", "v5")
    assert code == 2 and "tdxseam: error: --kernel must be one of merged, v10, v4, not 'v5'" in err


def test_campaign_reports_coverage_per_outcome(capsys):
    code, out, _ = _run(capsys, "sim", "campaign", "--runs", "40", "--jobs", "1", "--json")
    r = json.loads(out)
    assert code == 0 and r["kernel"] == "merged" and r["missing_sometimes"] == []  # too short to assert
    cov = r["coverage"]
    assert cov["none"] > 0 and sum(v for k, v in cov.items() if not k.startswith("event")) >= 40
    code, out, _ = _run(capsys, "sim", "campaign", "--runs", "40", "--jobs", "1")
    assert "coverage:" in out and "  none " in out


def test_sometimes_assertion_names_an_outcome_never_reached():
    from tdxseam.sim.coverage import SOMETIMES_MIN_RUNS, coverage_lines, missing

    cov = {"none": 5000, "install": 10}
    miss = missing(cov, "merged", SOMETIMES_MIN_RUNS)
    assert "update" in miss and "none" not in miss and "install" not in miss
    assert missing(cov, "merged", SOMETIMES_MIN_RUNS - 1) == []
    assert "  sometimes-assertion failed: 'update' never reached" in coverage_lines(cov, miss)


def test_explore_takes_a_scenario_file(capsys, tmp_path):
    from tdxseam.sim.scenario import tiny

    f = tmp_path / "sc.json"
    f.write_text(tiny(cpus=2, reader=False, kernel="v10").dumps())
    code, out, _ = _run(capsys, "sim", "explore", "--scenario", str(f), "--max-schedules", "20", "--json")
    r = json.loads(out)
    assert code == 0 and r["cpus"] == 2 and r["schedules"] == 20
    bad = tmp_path / "bad.json"
    bad.write_text('{"seed": 1, "cpus": 2, "kernel": "v9"}')
    code, _, err = _run(capsys, "sim", "explore", "--scenario", str(bad))
    assert code == 3 and "kernel must be one of merged, v10, v4" in err
