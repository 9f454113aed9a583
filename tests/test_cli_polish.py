"""What users asked for: progress on a terminal (and only there), short campaign failure lists,
--stop-at-first counts that agree, --version, help that names metavars and exit codes without
cut-off summaries, a demo that says when it falls back, and the packaging bits."""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from _cli import run
from tdxseam.cli import exits

REPO = Path(__file__).resolve().parent.parent


# -- progress --------------------------------------------------------------------------------------------


def test_progress_line_has_count_rate_and_eta():
    from tdxseam.cli.progress import Progress

    t = iter([0.0, 10.0, 10.1, 20.0, 40.0])
    s = io.StringIO()
    p = Progress("campaign", "runs", stream=s, enabled=True, clock=lambda: next(t))
    p(100, 400)  # at 10 s
    p(101, 400)  # 0.1 s later: not redrawn
    p(200, 400)  # at 20 s
    assert s.getvalue().split("\r\x1b[K")[1:] == [
        "campaign: 100/400 runs (25%), 10.0/s, ETA 30s", "campaign: 200/400 runs (50%), 10.0/s, ETA 20s"]
    p(400, 400)
    p.close()
    assert s.getvalue().endswith("campaign: 400/400 runs (100%), 10.0/s\r\x1b[K")


def test_progress_is_silent_when_stderr_is_not_a_terminal():
    from tdxseam.cli.progress import Progress

    s = io.StringIO()
    p = Progress("stress", "calls", stream=s)
    assert not p.enabled
    p(1, 2)
    p.close()
    assert s.getvalue() == ""


@pytest.mark.parametrize("argv,label", [
    (["stress", "--cpus", "2", "--calls", "400"], "stress: "),
    (["sim", "campaign", "--runs", "6", "--jobs", "1", "--cpus", "2"], "campaign: "),
    (["sim", "explore", "--max-schedules", "20"], "explore: "),
])
def test_progress_on_a_terminal_only(argv, label):
    """stderr a pty: a progress line with rate; stderr a pipe: not a byte of it."""
    cmd = [sys.executable, "-m", "tdxseam.cli", *argv]
    master, slave = os.openpty()
    try:
        r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=slave, timeout=300, text=True)
        os.close(slave)
        chunks = []
        while True:
            try:
                b = os.read(master, 65536)
            except OSError:
                break
            if not b:
                break
            chunks.append(b)
    finally:
        os.close(master)
    tty_err = b"".join(chunks).decode()
    assert r.returncode in (0, 1) and label in tty_err and "/s" in tty_err, tty_err
    piped = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert label not in piped.stderr and "\r" not in piped.stderr


# -- campaign output ---------------------------------------------------------------------------------------


def test_failing_campaign_prints_ten_replay_lines_and_a_count(capsys):
    code, out, _ = run(capsys, "sim", "campaign", "--runs", "30", "--jobs", "1", "--cpus", "4", "--mutate", "no-lock")
    assert code == exits.FAILED
    replays = [ln for ln in out.splitlines() if ln.startswith("  tdxseam sim replay ")]
    assert len(replays) == 10 and all("# [" in ln for ln in replays)
    failing = int(re.search(r"in (\d+) failing seed", out).group(1))
    assert failing > 10 and f"... and {failing - 10} more failing seed(s) ({failing} in all" in out


def test_stop_at_first_counts_agree_with_the_totals(capsys):
    code, out, _ = run(capsys, "sim", "campaign", "--runs", "40", "--jobs", "2", "--cpus", "4",
                       "--mutate", "skip-lp-init", "--stop-at-first", "--json")
    r = json.loads(out)
    assert code == exits.FAILED and len(r["failing"]) == 1
    low = r["failing_seeds"][0]
    assert r["runs"] == low + 1 == r["seeds_to_catch"]
    assert r["violation_count"] == r["failing"][0]["violation_count"] == sum(r["violation_kinds"].values())


# -- version, help -----------------------------------------------------------------------------------------


def test_version(capsys):
    from tdxseam import __version__

    code, out, _ = run(capsys, "--version")
    assert code == 0 and out == f"tdxseam {__version__}\n"


COMMANDS = [["info"], ["stress"], ["demo"], ["emulate"], ["verify"], ["mrseam"], ["plan"], ["update"],
            ["convert"], ["history"], ["sim", "run"], ["sim", "replay"], ["sim", "campaign"],
            ["sim", "explore"], ["sim", "mutations"], ["explain"], ["doctor"], ["firmware", "probe"],
            ["firmware", "compare"]]


@pytest.mark.parametrize("cmd", COMMANDS, ids=" ".join)
def test_every_help_names_its_exit_codes_and_real_metavars(capsys, cmd):
    code, out, _ = run(capsys, *cmd, "--help")
    assert code == 0 and "Exit codes: 0" in out
    assert not re.search(r"\b(INTEGER|TEXT|FLOAT)\b", out), out


def test_command_lists_are_not_cut_off(capsys):
    for argv in (["--help"], ["sim", "--help"]):
        _, out, _ = run(capsys, *argv)
        listing = out.split("Commands:")[1]
        assert "..." not in listing, listing


# -- demo, packaging ----------------------------------------------------------------------------------------


def test_demo_says_when_it_falls_back_to_synthetic_modules(capsys, monkeypatch):
    import tdxseam.demo

    monkeypatch.setattr(tdxseam.demo, "find_intel_catalog", lambda explicit=None: None)
    code, out, _ = run(capsys, "demo", "--cpus", "2", "--tds", "0")
    assert code == 0 and out.startswith("note: Intel's release files were not found")
    assert "synthetic modules signed with the test key" in out.splitlines()[0]
    code, out, _ = run(capsys, "demo", "--cpus", "2", "--tds", "0", "--synthetic")
    assert code == 0 and "note:" not in out  # asked for: nothing to say


def test_pyproject_license_and_fuse_dependency():
    meta = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert meta["project"]["license"] == "MIT"  # an SPDX string: no setuptools deprecation banner
    assert any(r.startswith("setuptools>=77") for r in meta["build-system"]["requires"])
    assert any(d.startswith("mfusepy") for d in meta["project"]["dependencies"])  # emulate is a main command
