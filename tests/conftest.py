"""Shared test fixtures: where Intel's real release files live, if they do; and the guard that
keeps the suite out of /var, /run and /etc."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

import _system_guard as system_guard
from hypothesis import settings

# Property tests are reproducible: derandomized (the seed is fixed by the test's own source), no
# wall-clock deadline (a loaded CI machine must not turn slowness into failures), and a failing
# example is printed with the blob that replays it.
settings.register_profile("tdxseam", derandomize=True, deadline=None, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "tdxseam"))

REPO = Path(__file__).resolve().parent.parent

# Identity from the files alone unless a test asks for the real-firmware engine's answers (the
# tests of that source set it themselves); subprocesses inherit this.
os.environ.setdefault("TDXSEAM_PROBE", "off")
# History, lock and any other state of the tool live in this session's temporary directory, for
# this process and every subprocess it starts (the CLI, emulators, Ansible), never in /var or /run.
_STATE = Path(tempfile.mkdtemp(prefix="tdxseam-test-state-"))
os.environ["TDXSEAM_HISTORY"] = str(_STATE / "history.jsonl")
os.environ["TDXSEAM_LOCK"] = str(_STATE / "update.lock")


@pytest.fixture(scope="session", autouse=True)
def no_system_writes():
    """Fail the suite if anything was written under /var, /run or /etc (tests/_system_guard.py)."""
    before = system_guard.snapshot()
    system_guard.GUARD.armed = True
    yield
    system_guard.GUARD.armed = False
    problems = system_guard.GUARD.writes + system_guard.changes(before, system_guard.snapshot())
    shutil.rmtree(_STATE, ignore_errors=True)
    if problems:
        pytest.fail("tests wrote outside their temporary directories:\n  " + "\n  ".join(problems[:20]),
                    pytrace=False)


def intel_fixture_dir() -> Path | None:
    """Intel's signed releases are test data kept beside the repo, never inside it."""
    env = os.environ.get("TDXSEAM_INTEL_BINARIES")
    candidates = [Path(env)] if env else []
    candidates.append(REPO.parent / "shared" / "fixtures" / "intel-tdx-module-binaries")
    for c in candidates:
        if (c / "mapping_file.json").is_file():
            return c
    return None


@pytest.fixture(scope="session")
def intel_dir() -> Path:
    d = intel_fixture_dir()
    if d is None:
        pytest.skip("Intel release fixtures not found (set TDXSEAM_INTEL_BINARIES or place ../shared/fixtures)")
    return d
