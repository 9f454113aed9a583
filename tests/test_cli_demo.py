"""`tdxseam demo`, the main job, as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

KEYS = {"ok", "cpus", "version_before", "version_after", "tds_before", "tds_preserved",
        "remaining_updates_before", "remaining_updates_after", "error", "status", "details"}


def demo(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tdxseam.cli", "demo", *args],
                          capture_output=True, text=True, timeout=120)


def test_synthetic_update_json():
    r = demo("--synthetic", "--cpus", "4", "--tds", "2", "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert set(out) == KEYS
    assert out["ok"] is True and out["error"] is None and out["status"] is None
    assert (out["version_before"], out["version_after"]) == ("1.5.06", "1.5.08")
    assert out["tds_before"] == out["tds_preserved"] == 2
    assert out["remaining_updates_after"] == out["remaining_updates_before"] - 1


def test_failed_update_reports_status_and_exit_1():
    r = demo("--synthetic", "--cpus", "2", "--tds", "1", "--from", "1.5.08", "--to", "1.5.06", "--json")
    assert r.returncode == 1
    out = json.loads(r.stdout)
    assert out["ok"] is False and out["version_after"] is None and out["tds_preserved"] == 0
    assert out["status"] == "EBADSIG (0x8000000000020000)"  # the minor SVN would go down: by name, hex beside
    assert "ENXIO" in out["error"]


def test_text_output_names_versions_and_tds():
    r = demo("--synthetic", "--cpus", "2", "--tds", "1")
    assert r.returncode == 0, r.stderr
    assert "version: 1.5.06 -> 1.5.08" in r.stdout and "TDs preserved: 1/1" in r.stdout


@pytest.mark.parametrize("args,code,msg", [
    (["--to", "/nonexistent/x.blob"], 3, "No such file"),
    (["--cpus", "0"], 2, "--cpus"),
    (["--tds", "99"], 2, "--tds"),
    (["--to", "1.x"], 3, "not a version"),
])
def test_bad_input_is_one_line(args, code, msg):
    r = demo("--synthetic", *args)
    assert r.returncode == code
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tdxseam: error:") and msg in lines[0]
