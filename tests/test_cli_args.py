"""Arguments: every count bounded, durations finite, replay commands that parse, nothing empty
taken for a default. A bad value is exit 2 with one line naming the option, never exit 70."""

from __future__ import annotations

import json
import resource
import shlex
import subprocess
import sys

import pytest

from _cli import run
from tdxseam.cli import exits


def usage(capsys, *argv: str, word: str) -> None:
    code, _, err = run(capsys, *argv)
    lines = err.strip().splitlines()
    assert code == exits.USAGE, (code, err)
    assert len(lines) == 1 and lines[0].startswith("tdxseam: error: ") and word in lines[0], err


@pytest.mark.parametrize("argv,word", [
    (["sim", "campaign", "--runs", str(10**13)], "--runs must be between 0 and"),
    (["sim", "campaign", "--runs", "-1"], "--runs"),
    (["sim", "campaign", "--jobs", str(10**6)], "--jobs must be between 1 and"),
    (["sim", "explore", "--preemptions", "-1"], "--preemptions"),
    (["sim", "explore", "--depth", "-5"], "--depth"),
    (["sim", "explore", "--max-schedules", "-3"], "--max-schedules"),
    (["sim", "explore", "--max-schedules", "0"], "--max-schedules"),
    (["stress", "--calls", str(10**9)], "--calls must be between 0 and"),
    (["update", "--timeout", "nan", "--dry-run", "--catalog", "/nonexistent"], "--timeout"),
    (["update", "--timeout", "-1", "--dry-run", "--catalog", "/nonexistent"], "--timeout"),
    (["update", "--timeout", "inf", "--dry-run", "--catalog", "/nonexistent"], "--timeout"),
    (["emulate", "--mount", "/nonexistent", "--step-delay", "nan"], "--step-delay"),
    (["emulate", "--mount", "/nonexistent", "--step-delay", "-1"], "--step-delay"),
    (["emulate", "--mount", "/tmp", "--module", ""], "--module"),
])
def test_bad_counts_and_durations_are_named_usage_errors(capsys, argv, word):
    usage(capsys, *argv, word=word)


def test_negative_seed_replay_command_parses_and_replays(capsys):
    code, out, _ = run(capsys, "sim", "run", "--seed", "-5", "--cpus", "3", "--json")
    r = json.loads(out)
    assert r["seed"] == -5 and r["replay"] == "tdxseam sim replay --cpus 3 -- -5"
    argv = shlex.split(r["replay"])
    assert argv[0] == "tdxseam"
    code2, out2, err2 = run(capsys, *argv[1:3], "--json", *argv[3:])
    again = json.loads(out2)
    assert code2 == code and again["seed"] == -5 and again["trace_digest"] == r["trace_digest"], err2


def test_campaign_generates_seeds_lazily():
    """10**12 seeds are fine: stopping at the first failure returns at once; the old code built the
    whole seed list first (here under a 1 GiB memory cap: exit 70 or killed)."""
    def cap() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    r = subprocess.run([sys.executable, "-m", "tdxseam.cli", "sim", "campaign", "--runs", str(10**12), "--jobs", "1",
                        "--cpus", "4", "--mutate", "no-lock", "--stop-at-first", "--json"],
                       capture_output=True, text=True, timeout=300, preexec_fn=cap)
    assert r.returncode == exits.FAILED, r.stderr
    doc = json.loads(r.stdout)
    assert doc["failing_seeds"] and doc["runs"] == doc["failing_seeds"][0] + 1
