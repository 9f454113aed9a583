"""The operator tool against the emulated host: in-process (the tree's file operations) and on the
FUSE mount (the unchanged tool, in a subprocess, doing plain file I/O under the mount point).

Must show: plan on a host running 1.5.06 with P-SEAMLDR 1.5.00 explains every release's verdict;
update installs the newest TD-preserving release (1.5.13) and the host then reports it; a second
update with num_remaining_updates at 0 is refused before anything is written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from _tool_host import tree_root_class

pytest.importorskip("tdxseam.sysfs.tree", reason="the emulated sysfs tree (tdxseam.sysfs) is not available")

from tdxseam.seam.pseamldr import SeamldrBuild  # noqa: E402
from tdxseam.sysfs import Emulation  # noqa: E402
from tdxseam.tool.catalog import load_catalog  # noqa: E402
from tdxseam.tool.hostinfo import read_host  # noqa: E402
from tdxseam.tool.plan import PlanOptions, make_plan  # noqa: E402
from tdxseam.tool.update import Outcome, UpdateOptions, run_update  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
VERSION = "sys/devices/faux/tdx_host/version"
EXPECTED_FAILS = {
    "2.0.05": {"td_line", "seamldr", "cpu", "svn"}, "2.0.04": {"td_line", "seamldr", "cpu", "svn"},
    "2.0.02": {"td_line", "seamldr", "cpu", "svn"}, "1.5.13": set(), "1.5.09": set(), "1.5.08": set(),
    "1.5.06": {"not_running"}, "1.5.05": {"td_order", "svn"}, "1.5.01": {"td_order", "svn"},
}


def _emulation(intel_dir: Path, *, threaded: bool = False) -> Emulation:
    from tdxseam.tool.catalog import catalog_identities

    blob = intel_dir / "joined_files" / "1.5" / "tdx_module_1.5.06.blob"
    # seamdb_capacity 2: the boot install takes one entry, so exactly one update is left; the
    # platform is told what the catalog's binaries are, as `tdxseam emulate --catalog` does
    return Emulation(4, module=blob, seamldr=SeamldrBuild(seamdb_capacity=2), threaded=threaded,
                     known_modules=catalog_identities(load_catalog(intel_dir)))


def _failed(plan) -> dict[str, set[str]]:
    return {str(c.version): {x.name for x in c.failed} for c in plan.candidates}


def test_in_process_plan_update_and_refusal(intel_dir, tmp_path):
    catalog = load_catalog(intel_dir)
    with _emulation(intel_dir) as emu:
        fs = tree_root_class()(emu.tree)
        host = read_host(fs)
        assert (str(host.version), str(host.seamldr), host.remaining_updates) == ("1.5.06", "1.5.00", 1)
        assert host.layout.value == "tdx_module" and host.cpu.cpuid_1_eax == 0x806F8 and host.all_cpus_online

        plan = make_plan(host, catalog)
        assert _failed(plan) == EXPECTED_FAILS
        assert str(plan.selected.version) == "1.5.13"
        assert all(x.reason for c in plan.candidates for x in c.checks)

        seen = []
        hist = tmp_path / "history.jsonl"
        res = run_update(fs, catalog, None, PlanOptions(),
                         UpdateOptions(poll_interval=0, history=hist, progress=seen.append))
        assert res.outcome is Outcome.UPDATED, res.message
        assert fs.read_text(VERSION).strip() == "1.5.13" and res.version_after == "1.5.13"
        assert res.remaining_after == 0
        assert max(fs.writes) <= 4096 and len(fs.writes) > 100  # the image went in page-sized writes
        assert emu.on_machine(lambda: [r.err_code for r in emu.tree.fw.history]) == [0]
        assert json.loads(hist.read_text())["outcome"] == "updated"
        assert seen[-1].phase == "done"

        # second update: num_remaining_updates is 0, refused before anything is written
        fs.writes.clear()
        res2 = run_update(fs, catalog, "1.5.13", PlanOptions(), UpdateOptions(poll_interval=0, history=hist))
        assert res2.outcome is Outcome.REFUSED  # 1.5.13 is running now
        res3 = run_update(fs, catalog, None, PlanOptions(), UpdateOptions(poll_interval=0, history=hist))
        assert res3.outcome is Outcome.UP_TO_DATE
        assert fs.writes == [] and emu.on_machine(lambda: len(emu.tree.fw.history)) == 1
        assert len(hist.read_text().splitlines()) == 1


def test_in_process_blocked_when_no_updates_left(intel_dir):
    """Pin the target below the running module's line end: 1.5.08 then 1.5.09; the second is
    blocked by num_remaining_updates = 0 and nothing reaches the upload files."""
    catalog = load_catalog(intel_dir)
    with _emulation(intel_dir) as emu:
        fs = tree_root_class()(emu.tree)
        res = run_update(fs, catalog, "1.5.08", PlanOptions(), UpdateOptions(poll_interval=0))
        assert res.outcome is Outcome.UPDATED and fs.read_text(VERSION).strip() == "1.5.08"
        fs.writes.clear()
        res = run_update(fs, catalog, None, PlanOptions(), UpdateOptions(poll_interval=0))
        assert res.outcome is Outcome.BLOCKED and "num_remaining_updates is 0" in res.message
        assert str(res.plan.best.version) == "1.5.13"
        assert fs.writes == [] and emu.on_machine(lambda: len(emu.tree.fw.history)) == 1
        assert fs.read_text(VERSION).strip() == "1.5.08"


def test_in_process_kernel_rejects_v1_blob(intel_dir):
    """What Intel's tool does on the merged kernel: upload the v1 blob as is. The tool's own
    upload path with that image gets the kernel's answer in `error`."""
    from tdxseam.tool.upload import UploadOutcome, upload_image

    blob = (intel_dir / "joined_files" / "1.5" / "tdx_module_1.5.13.blob").read_bytes()
    with _emulation(intel_dir) as emu:
        fs = tree_root_class()(emu.tree)
        res = upload_image(fs, "sys/class/firmware/tdx_module", blob, poll_interval=0)
        assert res.outcome is UploadOutcome.KERNEL_ERROR and res.error == "transferring:firmware-invalid"
        assert fs.read_text(VERSION).strip() == "1.5.06"


# -- FUSE -----------------------------------------------------------------------------------------------


def _fuse_reason() -> str | None:
    try:
        from tdxseam.sysfs.fuse import fuse_unavailable_reason
    except ImportError as e:
        return f"tdxseam.sysfs.fuse not importable: {e}"
    return fuse_unavailable_reason()


def _cli(*args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run([sys.executable, "-m", "tdxseam.cli", *args], capture_output=True, text=True,
                          timeout=60, env=env, cwd=REPO)


@pytest.mark.skipif(_fuse_reason() is not None, reason=f"FUSE: {_fuse_reason()}")
def test_fuse_mount_cli_end_to_end(intel_dir, tmp_path):
    from tdxseam.sysfs.fuse import FuseMount

    mnt = tmp_path / "mnt"
    mnt.mkdir()
    hist = tmp_path / "history.jsonl"
    emu = _emulation(intel_dir, threaded=True)
    mount = FuseMount(emu.tree, str(mnt))
    try:
        mount.start()
        common = ["--catalog", str(intel_dir), "--sysfs-root", str(mnt)]
        r = _cli("plan", "--json", *common)
        assert r.returncode == 0, r.stderr
        plan = json.loads(r.stdout)
        assert plan["host"]["module_version"] == "1.5.06" and plan["host"]["num_remaining_updates"] == 1
        got = {x["version"]: {c["name"] for c in x["checks"] if c["ok"] is False} for x in plan["releases"]}
        assert got == EXPECTED_FAILS and plan["selected"]["version"] == "1.5.13"

        r = _cli("update", "--yes", "--json", "--history", str(hist), *common)
        assert r.returncode == 0, r.stderr
        res = json.loads(r.stdout)
        assert res["outcome"] == "updated" and res["version_after"] == "1.5.13"
        assert (mnt / VERSION).read_text().strip() == "1.5.13"

        # second update: nothing left to install; with a pinned target and 0 updates left: refused
        r = _cli("update", "--yes", *common)
        assert r.returncode == 10, r.stderr  # up to date
        r = _cli("update", "1.5.09", "--yes", "--json", *common)
        assert r.returncode == 11 and json.loads(r.stdout)["outcome"] == "refused"
        r = _cli("history", "--json", "--history", str(hist))
        assert r.returncode == 0 and [h["outcome"] for h in json.loads(r.stdout)] == ["updated"]
        assert emu.on_machine(lambda: len(emu.tree.fw.history)) == 1
    finally:
        mount.unmount()
        emu.close()


@pytest.mark.skipif(_fuse_reason() is not None, reason=f"FUSE: {_fuse_reason()}")
def test_fuse_blocked_second_update_writes_nothing(intel_dir, tmp_path):
    from tdxseam.sysfs.fuse import FuseMount

    mnt = tmp_path / "mnt"
    mnt.mkdir()
    emu = _emulation(intel_dir, threaded=True)
    mount = FuseMount(emu.tree, str(mnt))
    try:
        mount.start()
        common = ["--catalog", str(intel_dir), "--sysfs-root", str(mnt), "--yes"]
        r = _cli("update", "1.5.08", *common)
        assert r.returncode == 0, r.stderr
        r = _cli("update", *common)
        assert r.returncode == 12, r.stdout + r.stderr
        assert "num_remaining_updates is 0" in r.stderr and "Traceback" not in r.stderr
        assert emu.on_machine(lambda: len(emu.tree.fw.history)) == 1
        assert (mnt / VERSION).read_text().strip() == "1.5.08"
    finally:
        mount.unmount()
        emu.close()
