"""`tdxseam sim ...`: outputs, JSON keys, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tdxseam.cli import main
from tdxseam.kernel.kernel import MUTATIONS


def _run(capsys, *argv: str) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as e:
        main(list(argv))
    out = capsys.readouterr()
    return e.value.code, out.out, out.err


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
    assert "\n  tdxseam sim replay 1 --cpus 4 --mutate skip-lp-init  # [" in out
    assert "first caught after 2 seed(s)" in out


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
