"""Replay reproduces a seed's trace byte for byte (in fresh processes); shrinking keeps the failure."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tdxseam.sim.replay import replay, shrink
from tdxseam.sim.runner import run_seed
from tdxseam.sim.scenario import generate


def _cli(*args: str, hashseed: str = "0") -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONHASHSEED=hashseed)
    return subprocess.run([sys.executable, "-m", "tdxseam.cli", *args], capture_output=True, env=env,
                          timeout=120)


def test_replay_trace_is_byte_identical_across_processes():
    # seed 23 runs 4 CPUs with TDs, readers and an update; different hash seeds shuffle set/dict
    # orders of anything hashed by string, which must not leak into a run
    a = _cli("sim", "replay", "23", "--trace", hashseed="1")
    b = _cli("sim", "replay", "23", "--trace", hashseed="2")
    assert a.returncode == b.returncode == 0, a.stderr.decode()
    assert a.stdout == b.stdout
    assert b"-- trace --" in a.stdout and a.stdout.count(b"\n") > 100
    # and the in-process replay prints the same trace
    r = replay(23)
    assert r.trace.text().encode() in a.stdout


def test_failing_replay_is_byte_identical_and_exits_1():
    args = ("sim", "replay", "6", "--cpus", "4", "--mutate", "no-irqsave", "--kernel", "v4", "--trace")
    a = _cli(*args, hashseed="3")
    b = _cli(*args, hashseed="4")
    assert a.returncode == b.returncode == 1
    assert a.stdout == b.stdout and b"[lockdep]" in a.stdout


def test_run_and_replay_agree():
    run = _cli("sim", "run", "--seed", "5", "--json")
    rep = _cli("sim", "replay", "5", "--json")
    a, b = json.loads(run.stdout), json.loads(rep.stdout)
    assert a["trace_digest"] == b["trace_digest"] and a["schedule_digest"] == b["schedule_digest"]
    assert a["violations"] == b["violations"] == []


def test_campaign_run_is_the_replayed_run():
    """A campaign runs untraced; replay traces; the interleaving is the same."""
    assert run_seed(33).schedule_digest == replay(33).schedule_digest


def test_shrink_gives_a_smaller_scenario_that_still_fails(tmp_path):
    sc = generate(12)
    s = shrink(sc, mutations=("no-hotplug-lock",))
    assert s.kind == "online-changed"
    assert s.scenario.size() < sc.size() // 2, (sc.size(), s.scenario.size())
    assert any(v.kind == s.kind for v in s.result.violations)
    assert s.scenario.hotplug and not s.scenario.readers and not s.scenario.faults
    # the shrunk scenario is a file `sim run --scenario` runs, and it still fails
    f = tmp_path / "shrunk.json"
    f.write_text(s.scenario.dumps())
    out = _cli("sim", "run", "--scenario", str(f), "--mutate", "no-hotplug-lock")
    assert out.returncode == 1 and b"[online-changed]" in out.stdout


def test_replay_shrink_cli(tmp_path):
    f = tmp_path / "small.json"
    out = _cli("sim", "replay", "3", "--cpus", "4", "--mutate", "skip-lp-init", "--shrink", "--shrink-out", str(f))
    assert out.returncode == 1
    assert b"shrunk:" in out.stdout and b"still fails with lp-init-missing" in out.stdout
    small = json.loads(f.read_text())
    assert small["cpus"] <= 4 and len(small["updates"]) == 1


def test_shrink_refuses_a_passing_scenario():
    import pytest

    with pytest.raises(ValueError, match="does not fail"):
        shrink(generate(3))
