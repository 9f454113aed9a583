"""Every genuine Intel release works from its files alone (Intel's releases are test data only).

Must show:
- for every real release, removed from every table in the code, demo (8 and 64 CPUs, TDs
  running), plan, update, verify and mrseam (in process) and emulate + update over FUSE (a
  subprocess pair per release line) give the same versions, verdicts, TDs preserved and MRSEAM
  as when it is known;
- the same release renamed `module.blob`: refused before any SEAMCALL with the one-line error
  naming --module-version; with --module-version it updates and keeps its TDs;
- a file named for one release holding another: a named error, nothing written.
(The TDX_SYS_INCOMPATIBLE_SIGSTRUCT check for synthetic modules: tests/test_seam_module.py.)
"""

from __future__ import annotations

import json
import os
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from _formats_data import VERSIONS
from _releases import forget_releases
from _tool_host import tree_root_class

from tdxseam.demo import run_demo
from tdxseam.formats.errors import FormatError
from tdxseam.formats.identity import IdentityError
from tdxseam.formats.releases import KNOWN_RELEASES, known_release, known_version
from tdxseam.formats.version import ModuleVersion
from tdxseam.seam.pseamldr import SeamldrBuild
from tdxseam.sysfs import Emulation
from tdxseam.probe import firmware_probe
from tdxseam.tool.catalog import catalog_identities, load_catalog, load_module_file
from tdxseam.tool.errors import ToolError
from tdxseam.tool.hostinfo import read_host
from tdxseam.tool.mrseam import measurement_json
from tdxseam.tool.plan import PlanOptions, make_plan
from tdxseam.tool.update import UpdateOptions, run_update
from tdxseam.tool.verify import verify_module

TESTS = Path(__file__).resolve().parent
SRC = TESTS.parent / "src" / "tdxseam"
VERSION = "sys/devices/faux/tdx_host/version"
# every release is the running or the new module of one pair
PAIRS = [("1.5.01", "1.5.05"), ("1.5.06", "1.5.08"), ("1.5.09", "1.5.13"), ("2.0.02", "2.0.04"),
         ("2.0.04", "2.0.05")]
# 2.0.04 cannot take 2.0.02's shorter handoff data: Intel's binary stops in TDH.SYS.UPDATE, and so
# does the model once the engine has measured both handoff sizes (no file states them); known or
# forgotten, the outcome must be the same
STOPS = {("2.0.02", "2.0.04")}
# the host each release line's plan and update run on
LINE_HOST = {"1.5": ("1.5.06", SeamldrBuild(seamdb_capacity=4), 0x806F8),
             "2.0": ("2.0.04", SeamldrBuild(major=2, minor=0, seamdb_capacity=4), 0xA06D0)}


def blob(intel_dir: Path, v: str) -> Path:
    return intel_dir / "joined_files" / v[:3] / f"tdx_module_{v}.blob"


def test_release_data_lives_in_one_table():
    """No other module holds per-release data, so emptying `formats.releases` removes a release
    from every table in the code (what `forget_releases` does)."""
    for r in KNOWN_RELEASES:
        token = r.mrseam.hex()[:24]
        holders = [p.relative_to(SRC).as_posix() for p in SRC.rglob("*.py") if token in p.read_text()]
        assert holders == ["formats/releases.py"], (str(r.version), holders)


def test_measured_release_data_is_read_by_no_code_path():
    """What running the binaries measured (handoff sizes, TDX_FEATURES0) is test data: the model
    learns a binary's from the engine, never by recognising its version."""
    for table in ("HANDOFF_DATA_SIZE", "TDX_FEATURES0_REPORTED"):
        readers = [p.relative_to(SRC).as_posix() for p in SRC.rglob("*.py")
                   if p.name != "releases.py" and re.search(rf"(?<![.\w]){table}\b(?!\s*=\s*0x)", p.read_text())]
        assert readers == [], (table, readers)


def test_forgetting_empties_the_tables(monkeypatch):
    gone = forget_releases(monkeypatch)
    assert gone == VERSIONS
    from tdxseam.formats import releases

    assert releases.KNOWN_RELEASES == () and not releases.RELEASES_BY_SEAMHASH and not releases.RELEASES_BY_VERSION
    assert known_version(ModuleVersion(1, 5, 13)) is None


# -- demo ------------------------------------------------------------------------------------------------


def _demo_facts(r) -> dict:
    return {k: getattr(r, k) for k in ("ok", "error", "version_before", "version_after", "tds_before",
                                       "tds_preserved", "td_runs_after", "remaining_updates_before",
                                       "remaining_updates_after", "mrseam_after", "from_identity",
                                       "to_identity", "steps")}


@pytest.mark.parametrize("cpus", [8, 64])
@pytest.mark.parametrize("pair", PAIRS, ids=["-".join(p) for p in PAIRS])
def test_demo_is_the_same_without_release_data(intel_dir, monkeypatch, pair, cpus):
    probe = None
    if pair in STOPS:
        pytest.importorskip("unicorn")
        pytest.importorskip("capstone")
        probe = firmware_probe("on")
    known = run_demo(cpus=cpus, tds=4, from_=pair[0], to=pair[1], catalog=str(intel_dir), seed=7, probe=probe)
    if pair in STOPS:
        assert not known.ok and "stopped in TDH_SYS_UPDATE" in known.error and known.tds_preserved == 0
    else:
        assert known.ok, known.error
        assert (known.version_before, known.version_after, known.tds_preserved, known.td_runs_after) == (*pair, 4, 4)
        assert known.mrseam_after == known_version(ModuleVersion.parse(pair[1])).mrseam.hex()
    forget_releases(monkeypatch, pair)
    assert all(known_version(ModuleVersion.parse(v)) is None for v in pair)
    r = run_demo(cpus=cpus, tds=4, from_=pair[0], to=pair[1], catalog=str(intel_dir), seed=7, probe=probe)
    assert _demo_facts(r) == _demo_facts(known)
    said = "firmware" if probe else "sigstruct" if pair[1] >= "2" else "file-name"
    assert r.to_identity["sources"]["update"] == said


# -- plan, update, verify, mrseam (in process) ----------------------------------------------------------


def _plan_update_verify(intel_dir: Path, line: str) -> dict:
    """Everything the operator tool says about the catalog on a host of `line`, then an update."""
    boot, ldr, cpuid = LINE_HOST[line]
    cat = load_catalog(intel_dir)
    out: dict = {}
    with Emulation(4, module=blob(intel_dir, boot), seamldr=ldr, cpuid_1_eax=cpuid,
                   known_modules=catalog_identities(cat)) as emu:
        fs = tree_root_class()(emu.tree)
        plan = make_plan(read_host(fs), cat)
        out["plan"] = plan.to_json()
        res = run_update(fs, cat, None, PlanOptions(), UpdateOptions(poll_interval=0))
        out["update"] = {k: v for k, v in res.to_json(with_plan=False).items() if k not in ("duration_s", "upload")}
        out["version_read"] = fs.read_text(VERSION).strip()
    files = [load_module_file(blob(intel_dir, v)) for v in VERSIONS]
    files += [load_module_file(p) for p in sorted((intel_dir / "separate_files").glob("*/*/*.bin"))]
    out["verify"] = [verify_module(f).to_json() for f in files]
    out["mrseam"] = [measurement_json(verify_module(f)) for f in files]
    return out


@pytest.mark.parametrize("line", ["1.5", "2.0"])
def test_plan_update_verify_mrseam_are_the_same_without_release_data(intel_dir, monkeypatch, line):
    known = _plan_update_verify(intel_dir, line)
    newest = {"1.5": "1.5.13", "2.0": "2.0.05"}[line]
    assert known["update"]["outcome"] == "updated" and known["version_read"] == newest
    assert known["update"]["mrseam"] == known_version(ModuleVersion.parse(newest)).mrseam.hex()
    assert all(v["ok"] for v in known["verify"]) and len(known["verify"]) == len(VERSIONS) + 2
    forget_releases(monkeypatch)
    assert known_release(bytes.fromhex(known["update"]["mrseam"])) is None
    forgotten = _plan_update_verify(intel_dir, line)
    assert forgotten == known
    verdicts = {r["version"]: (r["verdict"], r["reasons"]) for r in forgotten["plan"]["releases"]}
    assert set(verdicts) == set(VERSIONS) and verdicts[newest][0] == "selected"


# -- the file-level must-shows ---------------------------------------------------------------------------


def test_a_renamed_release_is_refused_before_any_seamcall(intel_dir, tmp_path, monkeypatch):
    forget_releases(monkeypatch)
    renamed = tmp_path / "module.blob"
    shutil.copyfile(blob(intel_dir, "1.5.13"), renamed)
    booted = []
    import tdxseam.demo as demo

    real_host = demo.EmulatedHost
    monkeypatch.setattr(demo, "EmulatedHost", lambda *a, **k: booted.append(1) or real_host(*a, **k))
    with pytest.raises(IdentityError, match="--module-version 1.5.NN") as exc:
        run_demo(cpus=8, tds=2, from_="1.5.06", to=str(renamed), catalog=str(intel_dir))
    assert booted == [] and exc.value.code == "unknown"  # refused before the host existed
    r = run_demo(cpus=8, tds=2, from_="1.5.06", to=str(renamed), catalog=str(intel_dir),
                 module_version=ModuleVersion(1, 5, 13))
    assert r.ok and r.version_after == "1.5.13" and r.tds_preserved == 2 and booted == [1]
    assert r.to_identity["summary"] == ("1.5.13 build 864 (2025-02-07): build constants from the binary (the "
                                        "TDH.SYS.INFO immediates), update number from --module-version, "
                                        "TDX_FEATURES0 from the mapping file")


def test_a_file_named_for_another_release_writes_nothing(intel_dir, tmp_path):
    liar = tmp_path / "tdx_module_1.5.09.blob"
    shutil.copyfile(blob(intel_dir, "1.5.08"), liar)
    cat = load_catalog(intel_dir)
    with Emulation(4, module=blob(intel_dir, "1.5.06"), known_modules=catalog_identities(cat)) as emu:
        fs = tree_root_class()(emu.tree)
        with pytest.raises(ToolError, match="release data says this MRSEAM is 1.5.08 build 784"):
            run_update(fs, cat, str(liar), PlanOptions(), UpdateOptions(poll_interval=0, history=tmp_path / "h"))
        assert fs.writes == [] and emu.on_machine(lambda: len(emu.tree.fw.history)) == 0
        assert fs.read_text(VERSION).strip() == "1.5.06" and not (tmp_path / "h").exists()
    with pytest.raises(FormatError, match="identified as 1.5.09"):
        run_demo(cpus=2, tds=1, from_="1.5.06", to=str(liar), catalog=str(intel_dir))
    # a catalog holding such a file is refused as a whole: plan names it
    fake = tmp_path / "catalog"
    (fake / "joined_files" / "1.5").mkdir(parents=True)
    (fake / "mapping_file.json").symlink_to(intel_dir / "mapping_file.json")
    (fake / "joined_files" / "1.5" / liar.name).symlink_to(blob(intel_dir, "1.5.08"))
    with Emulation(4, module=blob(intel_dir, "1.5.06")) as emu:
        with pytest.raises(ToolError, match="tdx_module_1.5.09.blob: release data"):
            make_plan(read_host(tree_root_class()(emu.tree)), load_catalog(fake))


def _tdxseam(*args: str, forget: bool) -> list[str]:
    if forget:
        return [sys.executable, str(TESTS / "_forgetful.py"), *args]
    return [sys.executable, "-m", "tdxseam.cli", *args]


def _cli(*args: str, forget: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(_tdxseam(*args, forget=forget), capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "TDXSEAM_HISTORY": os.devnull})


def test_cli_names_the_missing_fact_and_the_option(intel_dir, tmp_path):
    renamed = tmp_path / "module.blob"
    shutil.copyfile(blob(intel_dir, "1.5.13"), renamed)
    for cmd in (["verify", str(renamed)], ["demo", "--to", str(renamed), "--catalog", str(intel_dir)],
                ["emulate", "--mount", str(tmp_path), "--module", str(renamed)]):
        p = _cli(*cmd)
        assert p.returncode == 3, (cmd, p.stderr)
        assert p.stderr.count("\n") == 1 and p.stderr.startswith("tdxseam: error: ") and "--module-version" in p.stderr
    # mrseam: the measurement does not need the version; it says what is missing and shows it
    p = _cli("mrseam", str(renamed))
    assert p.returncode == 0 and known_version(ModuleVersion(1, 5, 13)).mrseam.hex() in p.stdout
    assert "identity.unknown" in p.stdout and "--module-version 1.5.NN" in p.stdout
    p = _cli("verify", "-v", str(renamed), "--module-version", "1.5.13")
    assert p.returncode == 0 and "identity: 1.5.13 build 864 (2025-02-07): build constants from the binary" in p.stdout
    p = _cli("verify", "--json", str(blob(intel_dir, "1.5.08")))
    assert json.loads(p.stdout)[0]["identity"]["sources"]["update"] == "file-name"
    liar = tmp_path / "tdx_module_2.0.05.blob"
    shutil.copyfile(blob(intel_dir, "2.0.04"), liar)
    p = _cli("verify", str(liar))
    assert p.returncode == 3 and "the sigstruct says 2.0.04 build 859, the file name says 2.0.05" in p.stderr


# -- emulate + update over FUSE ----------------------------------------------------------------------------


def _fuse_or_skip() -> None:
    from tdxseam.sysfs.fuse import fuse_unavailable_reason

    reason = fuse_unavailable_reason()
    if reason:
        pytest.skip(f"FUSE unavailable: {reason}")


class _Emulate:
    """`tdxseam emulate --json` (optionally with the release data forgotten) in the background."""

    def __init__(self, *args: str, forget: bool) -> None:
        self.mnt = Path(tempfile.mkdtemp(prefix="tdxseam-ident-"))
        self.proc = subprocess.Popen(_tdxseam("emulate", "--mount", str(self.mnt), "--json", *args, forget=forget),
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.ready = self._line(60)

    def _line(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if select.select([self.proc.stdout], [], [], 0.1)[0]:
                line = self.proc.stdout.readline()
                if line:
                    return json.loads(line)
                break
            if self.proc.poll() is not None:
                break
        err = self.proc.stderr.read() if self.proc.poll() is not None else ""
        if "fuse" in err.lower() or "mount" in err.lower():
            self.close()
            pytest.skip(f"FUSE cannot mount here: {err.strip().splitlines()[-1]}")
        raise AssertionError(f"emulate gave no line (exit {self.proc.poll()}): {err}")

    def stop(self) -> dict:
        self.proc.send_signal(signal.SIGTERM)
        out, err = self.proc.communicate(timeout=60)
        assert self.proc.returncode == 0, err
        return json.loads(out.strip().splitlines()[-1])

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        from tdxseam.sysfs.fuse import is_mounted

        if is_mounted(str(self.mnt)):
            subprocess.run(["fusermount3", "-u", "-z", str(self.mnt)], check=False)
        try:
            self.mnt.rmdir()
        except OSError:
            pass


def _fuse_run(intel_dir: Path, old: str, new: str, *, forget: bool, extra_emulate=(), target=None,
              update_args=()) -> dict:
    args = ["--module", str(blob(intel_dir, old)), "--catalog", str(intel_dir), "--tds", "2", "--cpus", "4",
            *extra_emulate]
    emu = _Emulate(*args, forget=forget)
    try:
        p = _cli("update", target or new, "--catalog", str(intel_dir), "--sysfs-root", str(emu.mnt), "--yes",
                 "--json", *update_args, forget=forget)
        upd = json.loads(p.stdout) if p.stdout.strip() else None
        final = emu.stop()
    finally:
        emu.close()
    keep = ("outcome", "from_version", "to_version", "mrseam", "version_after", "num_remaining_updates_after")
    return {"ready": emu.ready, "code": p.returncode, "stderr": p.stderr,
            "update": {k: upd[k] for k in keep} if upd else None, "final": final}


FUSE_PAIRS = [("1.5.06", "1.5.13"), ("2.0.04", "2.0.05")]


@pytest.mark.parametrize("pair", FUSE_PAIRS, ids=["-".join(p) for p in FUSE_PAIRS])
def test_emulate_and_update_over_fuse_are_the_same_without_release_data(intel_dir, pair):
    _fuse_or_skip()
    extra = ("--seamldr", "2.0.00", "--cpuid", "0xA06D0") if pair[0] >= "2" else ()
    known = _fuse_run(intel_dir, *pair, forget=False, extra_emulate=extra)
    assert known["code"] == 0, known["stderr"]
    assert known["update"]["outcome"] == "updated" and known["update"]["version_after"] == pair[1]
    assert known["final"]["tds"] == 2 and "td_problems" not in known["final"]
    forgotten = _fuse_run(intel_dir, *pair, forget=True, extra_emulate=extra)
    for k in ("ready", "final"):
        for d in (known, forgotten):
            d[k].pop("mount")
    assert forgotten == known
    ident = known["ready"]["module_identity"]
    assert ident["summary"].startswith(f"{pair[0]} build ") and ident["version"] == pair[0] and ident["gaps"] == []
    assert ident["sources"]["update"] == ("sigstruct" if pair[0] >= "2" else "file-name")
    assert known["final"]["module_identity"]["version"] == pair[1]


def test_a_renamed_release_over_fuse_needs_module_version(intel_dir, tmp_path):
    """Intel's tool flow on a host: the renamed file is refused before anything is written; with
    --module-version it installs and the host keeps its TDs."""
    _fuse_or_skip()
    renamed = tmp_path / "module.blob"
    shutil.copyfile(blob(intel_dir, "1.5.13"), renamed)
    emu = _Emulate("--module", str(blob(intel_dir, "1.5.06")), "--catalog", str(intel_dir), "--tds", "2",
                   "--cpus", "4", forget=True)
    try:
        root = ("--catalog", str(intel_dir), "--sysfs-root", str(emu.mnt), "--yes")
        refused = _cli("update", str(renamed), *root, forget=True)
        assert refused.returncode == 3 and refused.stdout == ""
        assert refused.stderr.count("\n") == 1 and "--module-version 1.5.NN" in refused.stderr
        assert (emu.mnt / VERSION).read_text().strip() == "1.5.06"
        ok = _cli("update", str(renamed), "--module-version", "1.5.13", *root, forget=True)
        assert ok.returncode == 0, ok.stderr
        assert (emu.mnt / VERSION).read_text().strip() == "1.5.13"
        final = emu.stop()
    finally:
        emu.close()
    assert final["uploads"] == 1 and final["last_upload"] == "ok"  # the refused attempt wrote nothing
    assert final["tds"] == 2 and "td_problems" not in final
