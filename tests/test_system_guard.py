"""The suite stays out of /var, /run and /etc: tdxseam's defaults point into the session's
temporary directory, and the guard (tests/_system_guard.py) notices a write there."""

from __future__ import annotations

import os
from pathlib import Path

import _system_guard as system_guard
from _tool_host import make_root
from tdxseam.tool.history import history_path


def test_tool_state_defaults_are_in_a_temporary_directory():
    from tdxseam.tool.lock import lock_path

    for p in (history_path(), lock_path()):
        assert not str(p).startswith(("/var/", "/run/", "/etc/")), p
        assert Path(p).parent.name.startswith("tdxseam-test-state-"), p


def test_update_without_history_or_lock_options_writes_only_there(tmp_path, intel_dir):
    from tdxseam.tool.catalog import load_catalog
    from tdxseam.tool.hostinfo import SysfsRoot
    from tdxseam.tool.plan import PlanOptions
    from tdxseam.tool.lock import lock_path
    from tdxseam.tool.update import UpdateOptions, run_update

    root = make_root(tmp_path / "root")
    res = run_update(SysfsRoot(root), load_catalog(intel_dir), None, PlanOptions(),
                     UpdateOptions(poll_interval=0, history=history_path(), lock=lock_path()))
    assert res.history_path == str(history_path()) and Path(res.history_path).is_file()


def test_the_guard_sees_writes_under_system_prefixes():
    g = system_guard.Guard()
    g.armed = True
    g.check("open", ("/var/lib/tdxseam/history.jsonl", "a", os.O_WRONLY | os.O_APPEND | os.O_CREAT))
    g.check("open", ("/run/tdxseam/update.lock", None, os.O_RDWR | os.O_CREAT))
    g.check("os.rename", ("/tmp/x", "/etc/tdxseam.conf"))
    g.check("os.mkdir", ("/run/tdxseam", 0o755, -1))
    g.check("open", ("/etc/passwd", "r", os.O_RDONLY))  # reading is fine
    g.check("open", ("/tmp/x", "w", os.O_WRONLY))  # so is writing elsewhere
    assert [w.split(" (")[0] for w in g.writes] == [
        "open-for-write /var/lib/tdxseam/history.jsonl", "open-for-write /run/tdxseam/update.lock",
        "os.rename /etc/tdxseam.conf", "os.mkdir /run/tdxseam"]
    assert "test_the_guard_sees_writes_under_system_prefixes" in g.writes[0]


def test_the_snapshot_diff_names_created_changed_and_removed_files():
    before = {"/var/lib/tdxseam/history.jsonl": (10, 1), "/run/tdxseam/update.lock": (4, 1)}
    after = {"/var/lib/tdxseam/history.jsonl": (20, 2), "/etc/tdxseam/x": (1, 1)}
    assert system_guard.changes(before, after) == [
        "created /etc/tdxseam/x", "changed /var/lib/tdxseam/history.jsonl", "removed /run/tdxseam/update.lock"]
