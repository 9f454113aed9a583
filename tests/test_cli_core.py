"""The real `tdxseam` command, run as a subprocess: the foundation's Must-show runs, info, bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

TIMEOUT = 120  # a run that does not end by itself fails here instead of hanging the suite
# interrupt-context callers of the P-SEAMLDR exist only with v4's irqsave lock
MUST_SHOW = ["stress", "--cpus", "64", "--calls", "1000", "--irq-calls", "--seed", "1", "--kernel", "v4"]
DEADLOCK_EXIT = 4


def _start(*args: str, hashseed: str = "0") -> subprocess.Popen:
    env = dict(os.environ, PYTHONHASHSEED=hashseed)
    return subprocess.Popen([sys.executable, "-m", "tdxseam.cli", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=env)


def _finish(proc: subprocess.Popen) -> subprocess.CompletedProcess:
    try:
        out, err = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def tdxseam(*args: str, hashseed: str = "0") -> subprocess.CompletedProcess:
    return _finish(_start(*args, hashseed=hashseed))


@pytest.fixture(scope="module")
def runs() -> dict[str, subprocess.CompletedProcess]:
    """Each Must-show configuration once per module (the 64 x 1000 runs take seconds each),
    started side by side."""
    procs = {
        "serialized": _start(*MUST_SHOW, "--json"),
        "serialized-again": _start(*MUST_SHOW, "--json", hashseed="12345"),
        "unserialized": _start(*MUST_SHOW, "--unserialized", "--json"),
        "no-irqsave": _start(*MUST_SHOW, "--no-irqsave", "--json"),
    }
    return {name: _finish(p) for name, p in procs.items()}


def _json(p: subprocess.CompletedProcess) -> dict:
    return json.loads(p.stdout)


def test_serialized_run_is_clean(runs):
    p = runs["serialized"]
    assert p.returncode == 0, p.stderr.decode()
    r = _json(p)
    assert r["failed"] == 0
    assert r["max_inside"] == 1
    assert r["lock_reports"] == []
    assert r["deadlock"] is False and r["deadlock_report"] is None
    assert r["calls"] == 64 * 1000
    assert 0 < r["irq_calls"] < r["calls"]
    assert r["refused"] == 0
    assert (r["cpus"], r["seed"]) == (64, 1)
    assert p.stderr == b""


def test_unserialized_run_fails_with_overlap(runs):
    p = runs["unserialized"]
    assert p.returncode == 0, p.stderr.decode()
    r = _json(p)
    assert r["failed"] > 0
    assert r["max_inside"] >= 2
    assert r["refused"] == r["failed"]  # every failure is a VMfailInvalid at the door
    assert r["deadlock"] is False
    assert r["calls"] == 64 * 1000


def test_no_irqsave_run_is_caught_and_ends_by_itself(runs):
    p = runs["no-irqsave"]
    r = _json(p)
    assert r["lock_reports"] or r["deadlock"]
    kinds = {x["kind"] for x in r["lock_reports"]}
    assert kinds <= {"irq-inversion", "recursion"}
    for x in r["lock_reports"]:
        assert x["lock"] == "seamldr_lock" and "cpu" in x["message"]
    if r["deadlock"]:
        assert p.returncode == DEADLOCK_EXIT
        assert r["deadlock_report"].startswith("deadlock at step ")
        assert "(held by itself)" in r["deadlock_report"]
    else:
        assert p.returncode == 0
    assert r["calls"] < 64 * 1000  # the run stopped early, it did not hang
    assert b"Traceback" not in p.stderr


def test_same_seed_same_output_byte_for_byte(runs):
    a, b = runs["serialized"], runs["serialized-again"]
    assert a.stdout == b.stdout
    assert a.returncode == b.returncode == 0


def test_same_seed_same_text_output_including_deadlock_report():
    args = ["stress", "--cpus", "16", "--calls", "100", "--irq-calls", "--seed", "3", "--no-irqsave",
            "--kernel", "v4"]
    a = tdxseam(*args)
    b = tdxseam(*args, hashseed="999")
    assert a.stdout == b.stdout and a.returncode == b.returncode
    text = a.stdout.decode()
    assert text.startswith("seed 3: kernel v4, 16 CPUs, ")
    assert "schedule digest: " in text and "lock reports: " in text


def test_different_seeds_give_different_interleavings():
    digests = {}
    for seed in ("1", "2", "3"):
        p = tdxseam("stress", "--cpus", "8", "--calls", "50", "--irq-calls", "--seed", seed, "--json",
                    "--kernel", "v4")
        assert p.returncode == 0
        r = _json(p)
        assert r["failed"] == 0 and r["max_inside"] == 1
        digests[seed] = r["schedule_digest"]
    assert len(set(digests.values())) == 3
    assert all(len(d) == 16 for d in digests.values())


def test_text_summary_agrees_with_json():
    args = ["stress", "--cpus", "8", "--calls", "50", "--irq-calls", "--seed", "5", "--kernel", "v4"]
    t = tdxseam(*args).stdout.decode().splitlines()
    r = _json(tdxseam(*args, "--json"))
    assert t[0] == (f"seed 5: kernel v4, 8 CPUs, {r['calls']} P-SEAMLDR calls ({r['irq_calls']} from interrupt "
                    f"handlers), {r['steps']} scheduler steps")
    assert f"schedule digest: {r['schedule_digest']}" in t
    assert "lock reports: 0" in t and "deadlock: none" in t


def test_trace_option_prints_events():
    p = tdxseam("stress", "--cpus", "2", "--calls", "2", "--seed", "1", "--trace")
    assert p.returncode == 0
    out = p.stdout.decode()
    assert "seamldr-enter" in out and "seamldr-exit" in out and "lock" in out


def test_info_json():
    p = tdxseam("info", "--json")
    assert p.returncode == 0, p.stderr.decode()
    r = _json(p)
    assert set(r) == {"cpus", "module_version", "num_remaining_updates", "seamldr_version", "tdx_features0",
                      "module_identity"}
    ident = r["module_identity"]
    assert ident["summary"].startswith("1.5.06 build 744 (2024-04-07): identity from the synthetic")
    assert ident["sources"]["update"] == "synthetic" and ident["gaps"] == [] and ident["build_num"] == 744
    assert r["cpus"] == 8
    assert r["seamldr_version"] == "1.5.00"
    assert r["module_version"] == "1.5.06"
    assert int(r["tdx_features0"], 16) & 0x2  # TD-preserving
    assert isinstance(r["num_remaining_updates"], int) and r["num_remaining_updates"] > 0


def test_info_cpus_option():
    r = _json(tdxseam("info", "--cpus", "3", "--json"))
    assert r["cpus"] == 3


@pytest.mark.parametrize("cmd,value", [("stress", "0"), ("stress", "4097"), ("stress", "-5"),
                                       ("info", "0"), ("info", "5000")])
def test_bad_cpus_is_one_clear_line_exit_2(cmd, value):
    p = tdxseam(cmd, f"--cpus={value}")
    assert p.returncode == 2
    err = p.stderr.decode()
    assert b"Traceback" not in p.stderr
    assert err.splitlines() == [f"tdxseam: error: --cpus must be between 1 and 4096, not {value}"]
    assert p.stdout == b""


def test_negative_calls_is_one_clear_line_exit_2():
    p = tdxseam("stress", "--calls", "-1")
    assert p.returncode == 2
    assert p.stderr.decode().splitlines() == ["tdxseam: error: --calls must be between 0 and 1000000, not -1"]


def test_help_lists_the_commands():
    p = tdxseam("--help")
    assert p.returncode == 0
    out = p.stdout.decode()
    assert "info" in out and "stress" in out


def test_the_console_script_is_the_same_command():
    script = os.path.join(os.path.dirname(sys.executable), "tdxseam")
    if not os.path.exists(script):
        pytest.skip("console script not installed beside this interpreter")
    args = ["stress", "--cpus", "4", "--calls", "10", "--seed", "2", "--json"]
    a = subprocess.run([script, *args], capture_output=True, timeout=TIMEOUT)
    b = tdxseam(*args)
    assert a.returncode == 0 and a.stdout == b.stdout


def test_merged_kernel_with_interrupt_callers_is_caught():
    """The merged lock is not irqsave: an interrupt handler calling the P-SEAMLDR (which no merged
    code path does) is reported and spins on its own CPU's lock."""
    p = tdxseam("stress", "--cpus", "8", "--calls", "60", "--irq-calls", "--seed", "1", "--json")
    r = _json(p)
    assert r["kernel"] == "merged"
    assert r["deadlock"] or {x["kind"] for x in r["lock_reports"]} & {"irq-inversion", "recursion"}


def test_unknown_kernel_profile_is_a_usage_error():
    p = tdxseam("stress", "--cpus", "2", "--calls", "1", "--kernel", "v7")
    assert p.returncode == 2
    assert p.stderr.decode().strip() == "tdxseam: error: --kernel must be one of merged, v10, v4, not 'v7'"
