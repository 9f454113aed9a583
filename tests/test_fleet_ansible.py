"""Fleet rollout with Ansible: the tdxseam.tdx collection and playbooks/rolling-update.yml, run by
real `ansible-playbook` against emulated TDX hosts on this machine.

Six `tdxseam emulate --mount DIR` processes (FUSE), each its own host in the inventory (local
connection, its own sysfs root); tdx05 is made to fail its update (a fault at P_SEAMLDR.INSTALL:
the old module is already shut down, the new one does not come up: the module is lost). Batches
are [tdx01] [tdx02 tdx03] [tdx04 tdx05] [tdx06] with max_fail_percentage 25, so the rollout must
stop after the third batch and never touch tdx06.

The catalog is test-signed: 1.5.06 runs; 1.5.08 and 1.5.09 are acceptable; 1.5.10 is built for
another CPU (refused here, so `latest` is 1.5.09); 2.0.05 is another line.

Must show: check mode changes nothing and says what would change (and the pre-check refuses a
host with no updates left); the rollout updates the healthy hosts batch by batch, reports tdx05
with the tool's one-line error and stops; the same command again changes nothing (and refuses the
broken host before touching it); with the broken host left out and the release pinned, the
rollout finishes. Each run's PLAY RECAP is checked, and every task result through a recording
callback.
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

from _tool_host import make_root, synthetic_catalog

REPO = Path(__file__).resolve().parent.parent
PLAYBOOK = REPO / "playbooks" / "rolling-update.yml"
BIN = Path(sys.executable).parent
VERSION = "sys/devices/faux/tdx_host/version"
REMAINING = "sys/devices/faux/tdx_host/num_remaining_updates"

HOSTS = ["tdx01", "tdx02", "tdx03", "tdx04", "tdx05", "tdx06"]
FAILING = "tdx05"
FAULT = "P_SEAMLDR_INSTALL=EBADHASH"  # after SHUTDOWN: the update fails and the module is lost
SERIAL = [1, 2, 2]
MAX_FAIL = 25  # one failure in a batch of two (50 %) stops the rollout
OLD, NEW = "1.5.06", "1.5.09"
LOST_MSG = ("tdxseam: the update failed (transferring:firmware-invalid) after the old module was shut down: "
            "version reads ENXIO, TDs are lost; reboot the host")


def _ansible_playbook() -> str:
    """The venv's ansible-playbook; $TDXSEAM_TEST_ANSIBLE_PLAYBOOK runs another ansible-core."""
    if os.environ.get("TDXSEAM_TEST_ANSIBLE_PLAYBOOK"):
        return os.environ["TDXSEAM_TEST_ANSIBLE_PLAYBOOK"]
    p = BIN / "ansible-playbook"
    return str(p) if p.exists() else shutil.which("ansible-playbook")


def _skip_reason() -> str | None:
    if not Path("/dev/fuse").exists():
        return "FUSE: /dev/fuse is missing"
    if shutil.which("fusermount3") is None:
        return "FUSE: fusermount3 is not installed (apt-get install fuse3)"
    try:
        from tdxseam.sysfs.fuse import fuse_unavailable_reason
    except ImportError as e:
        return f"FUSE: tdxseam.sysfs.fuse is not importable: {e}"
    reason = fuse_unavailable_reason()
    if reason:
        return f"FUSE: {reason}"
    ap = _ansible_playbook()
    if not ap or not Path(ap).exists():
        return "ansible-playbook not found: install the test extra (pip install -e '.[test]', ansible-core)"
    return None


REASON = _skip_reason()
needs_fleet = pytest.mark.skipif(REASON is not None, reason=REASON or "")


def _tdxseam() -> list[str]:
    script = BIN / "tdxseam"
    return [str(script)] if script.exists() else [sys.executable, "-m", "tdxseam.cli"]


# An aggregate callback beside the default one: every batch start, task result and the final stats
# as JSON lines, so the test reads the modules' return values, not only the text a person reads.
RECORDER = '''
import json, os
from ansible.plugins.callback import CallbackBase


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "fleet_record"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self._f = open(os.environ["FLEET_RECORD"], "a")

    def _w(self, **ev):
        self._f.write(json.dumps(ev, default=str) + "\\n")
        self._f.flush()

    def _res(self, status, res):
        host = getattr(res, "host", None) or res._host
        task = getattr(res, "task", None) or res._task
        data = getattr(res, "result", None)
        if not isinstance(data, dict):
            data = res._result
        self._w(event="result", status=status, host=host.get_name(), task=task.get_name(),
                result=json.loads(json.dumps(dict(data), default=str)))

    def v2_playbook_on_play_start(self, play):
        self._w(event="batch")

    def v2_runner_on_ok(self, result):
        self._res("changed" if result.is_changed() else "ok", result)

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._res("failed", result)

    def v2_runner_on_skipped(self, result):
        self._res("skipped", result)

    def v2_playbook_on_stats(self, stats):
        self._w(event="stats", hosts={h: stats.summarize(h) for h in sorted(stats.processed)})
'''

RECAP_LINE = re.compile(r"^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)\s+"
                        r"skipped=(\d+)\s+rescued=(\d+)\s+ignored=(\d+)", re.M)


class Run:
    """One ansible-playbook run: its text output, the PLAY RECAP parsed, the recorded events."""

    def __init__(self, proc: subprocess.CompletedProcess, events: list[dict], seconds: float) -> None:
        self.rc = proc.returncode
        self.out = proc.stdout + proc.stderr
        self.seconds = seconds
        self.events = events
        assert "PLAY RECAP" in proc.stdout, self.out
        recap = proc.stdout.split("PLAY RECAP", 1)[1]
        keys = ("ok", "changed", "unreachable", "failed", "skipped", "rescued", "ignored")
        self.recap = {m[0]: dict(zip(keys, map(int, m[1:]))) for m in RECAP_LINE.findall(recap)}
        stats = [e for e in events if e["event"] == "stats"]
        assert len(stats) == 1, events
        self.stats = stats[0]["hosts"]

    def batches(self) -> list[list[str]]:
        """Hosts that ran, per batch (serial), in inventory order."""
        out: list[list[str]] = []
        for e in self.events:
            if e["event"] == "batch":
                out.append([])
            elif e["event"] == "result" and e["host"] not in out[-1]:
                out[-1].append(e["host"])
        return [sorted(b) for b in out]

    def result(self, host: str, task: str) -> dict | None:
        got = [e for e in self.events if e["event"] == "result" and e["host"] == host and e["task"] == task]
        assert len(got) <= 1, got
        return got[0] if got else None



T_FACTS = "Read the host's TDX state and the update the catalog offers"
T_PRE_HOST = "Pre-check - the host reads as a TDX host"
T_PRE_SPENT = "Pre-check - refuse a host with no remaining updates"
T_UPDATE = "Install the TDX module update"
T_POST = "Post-check - the host runs the release installed"


class Fleet:
    def __init__(self, base: Path) -> None:
        self.base = base
        self.procs: dict[str, subprocess.Popen] = {}
        self.mounts: dict[str, Path] = {}
        self.ready: dict[str, dict] = {}
        self.final: dict[str, dict] = {}

    # -- emulated hosts -------------------------------------------------------------------------------

    def start(self, catalog: Path) -> None:
        module = catalog / "joined_files" / "1.5" / f"tdx_module_{OLD}.blob"
        for h in HOSTS:  # all at once: each boots in its own process
            mnt = Path(tempfile.mkdtemp(prefix=f"tdxseam-fleet-{h}-"))
            self.mounts[h] = mnt
            args = [*_tdxseam(), "emulate", "--mount", str(mnt), "--json", "--cpus", "2", "--tds", "2",
                    "--module", str(module)]
            if h == FAILING:
                args += ["--fault", FAULT]
            with open(self.base / f"emulate-{h}.log", "w") as log:  # the emulated kernel's messages
                self.procs[h] = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log, text=True)
        failed = {}
        for h in HOSTS:
            line = self._line(h, timeout=60)
            if line is None:
                failed[h] = (self.base / f"emulate-{h}.log").read_text().strip()
            else:
                self.ready[h] = line
                assert line["event"] == "ready" and line["module_version"] == OLD, line
        if failed and len(failed) == len(HOSTS) and all(re.search("fuse|mount", e, re.I) for e in failed.values()):
            pytest.skip(f"FUSE cannot mount here: {failed[HOSTS[0]].splitlines()[-1]}")
        assert not failed, failed

    def _line(self, h: str, timeout: float) -> dict | None:
        """The next JSON line of an emulator, or None if it exited without one."""
        proc = self.procs[h]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r, _, _ = select.select([proc.stdout], [], [], 0.1)
            if r:
                line = proc.stdout.readline()
                return json.loads(line) if line else None
            if proc.poll() is not None:
                return None
        raise AssertionError(f"{h}: `tdxseam emulate` not ready after {timeout} s")

    def read(self, h: str, rel: str) -> str:
        return (self.mounts[h] / rel).read_text().strip()

    def stop(self) -> dict[str, dict]:
        """SIGTERM every emulator, wait for each, check its mount is gone; their last lines."""
        from tdxseam.sysfs.fuse import is_mounted

        for h, p in self.procs.items():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for h, p in self.procs.items():
            out, _ = p.communicate(timeout=30)
            assert p.returncode == 0, (h, p.returncode, (self.base / f"emulate-{h}.log").read_text())
            self.final[h] = json.loads(out.strip().splitlines()[-1])
            assert self.final[h]["event"] == "stopped", (h, out)
            assert not is_mounted(str(self.mounts[h])), h
        return self.final

    def cleanup(self) -> None:
        from tdxseam.sysfs.fuse import is_mounted

        for p in self.procs.values():
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for h, p in self.procs.items():
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            if p.stdout:
                p.stdout.close()
            if is_mounted(str(self.mounts[h])):
                subprocess.run(["fusermount3", "-u", "-z", str(self.mounts[h])], check=False)
            try:
                self.mounts[h].rmdir()
            except OSError:
                pass

    # -- ansible ------------------------------------------------------------------------------------

    def write_inventory(self, catalog: Path, key: Path, spent_root: Path) -> Path:
        hosts = {h: {"tdx_sysfs_root": str(self.mounts[h]), "tdx_history": str(self.history(h))} for h in HOSTS}
        inv = {"all": {
            "vars": {"ansible_connection": "local", "ansible_python_interpreter": sys.executable,
                     "tdx_catalog": str(catalog), "tdx_trust_keys": [str(key)]},
            "children": {
                "tdx_hosts": {"hosts": hosts},
                # a host whose P-SEAMLDR takes no more updates (plain files: the tool reads only files)
                "tdx_spent": {"hosts": {"tdx-spent": {"tdx_sysfs_root": str(spent_root)}}},
            },
        }}
        path = self.base / "inventory.yml"
        path.write_text(json.dumps(inv, indent=2))  # JSON is YAML
        cb = self.base / "callback_plugins"
        cb.mkdir(exist_ok=True)
        (cb / "fleet_record.py").write_text(RECORDER)
        self.inventory = path
        return path

    def history(self, h: str) -> Path:
        return self.base / f"history-{h}.jsonl"

    def playbook(self, *args: str, serial=SERIAL, max_fail=MAX_FAIL) -> Run:
        record = self.base / f"events-{time.monotonic_ns()}.jsonl"
        env = {k: v for k, v in os.environ.items() if not k.startswith("ANSIBLE_")}
        env.update(
            LC_ALL="C.UTF-8", LANG="C.UTF-8",
            ANSIBLE_COLLECTIONS_PATH=str(REPO),  # holds ansible_collections/tdxseam/tdx
            ANSIBLE_COLLECTIONS_SCAN_SYS_PATH="False",
            ANSIBLE_HOME=str(self.base / "ansible-home"),
            ANSIBLE_LOCAL_TEMP=str(self.base / "ansible-tmp"),
            ANSIBLE_REMOTE_TEMP=str(self.base / "ansible-tmp"),
            ANSIBLE_STDOUT_CALLBACK="default",
            ANSIBLE_CALLBACK_PLUGINS=str(self.base / "callback_plugins"),
            ANSIBLE_CALLBACKS_ENABLED="fleet_record",
            ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", ANSIBLE_RETRY_FILES_ENABLED="False",
            ANSIBLE_FORKS="10",
            TDXSEAM_HISTORY=str(self.base / "default-history.jsonl"),  # never /var/lib on the test machine
            FLEET_RECORD=str(record),
        )
        env.pop("TDXSEAM_CATALOG", None)
        env.pop("TDXSEAM_SYSFS_ROOT", None)
        cmd = [_ansible_playbook(), "-i", str(self.inventory), str(PLAYBOOK),
               "-e", json.dumps({"tdx_serial": serial, "tdx_max_fail_percentage": max_fail}), *args]
        t0 = time.monotonic()
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=180, env=env, cwd=self.base)
        seconds = time.monotonic() - t0
        events = [json.loads(line) for line in record.read_text().splitlines()] if record.exists() else []
        return Run(proc, events, seconds)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    base = tmp_path_factory.mktemp("fleet")
    catalog = synthetic_catalog(base / "catalog", [
        {"version": "1.5.06", "td_floor": "1.5.01", "strict": []},
        {"version": "1.5.08", "td_floor": "1.5.01", "strict": []},
        {"version": NEW, "td_floor": "1.5.06", "strict": []},
        # built for another CPU only: refused on these hosts, so `latest` means 1.5.09 here
        {"version": "1.5.10", "td_floor": "1.5.06", "cpuids": [0xC06F0], "strict": []},
        {"version": "2.0.05", "td_floor": "2.0.00", "seamldrs": ["2.0.00"], "strict": []},  # another line
    ])
    from tdxseam.formats import testsign

    key = base / "test-key.pem"
    key.write_bytes(testsign.public_key_pem())
    spent = make_root(base / "spent-host", version=OLD, remaining=0, online="0-1", present="0-1")
    f = Fleet(base)
    try:
        f.start(catalog)
        f.write_inventory(catalog, key, spent)
        yield f
    finally:
        f.cleanup()


def _mrseam(version: str) -> str:
    from tdxseam.formats import testsign
    from tdxseam.formats.measure import seamhash

    return seamhash(testsign.make_module(version)[1]).hex()


def _versions(fleet: Fleet) -> dict[str, str]:
    out = {}
    for h in HOSTS:
        try:
            out[h] = fleet.read(h, VERSION)
        except OSError as e:
            out[h] = f"error: {os.strerror(e.errno)}"
    return out


@needs_fleet
def test_check_mode_changes_nothing_and_reports_what_would_change(fleet):
    """--check --diff over the fleet plus a host with no updates left: every emulated host says it
    would go from 1.5.06 to 1.5.09; nothing is written; the spent host is refused by the pre-check."""
    # the spent host last, in a batch of its own (its failure would stop the rest of its batch)
    run = fleet.playbook("--check", "--diff", "-e", "tdx_rollout_hosts=tdx_hosts:tdx_spent", serial=[1, 2, 2, 1])
    assert run.rc == 2, run.out  # a host failed (the spent one)
    assert run.batches() == [["tdx01"], ["tdx02", "tdx03"], ["tdx04", "tdx05"], ["tdx06"], ["tdx-spent"]], run.out

    for h in HOSTS:
        assert run.recap[h]["changed"] == 1 and run.recap[h]["failed"] == 0, f"{h}\n{run.out}"
        facts = run.result(h, T_FACTS)["result"]["ansible_facts"]["tdx"]
        assert (facts["module_version"], facts["seamldr_version"], facts["num_remaining_updates"]) == (OLD, "1.5.00", 63)
        assert facts["mrseam"] == _mrseam(OLD) and facts["mrseam_source"] == "catalog"
        assert facts["mrseam_after_update"] == _mrseam(NEW)
        assert facts["plan"]["outcome"] == "update" and facts["plan"]["version"] == NEW and facts["plan"]["pending"]
        upd = run.result(h, T_UPDATE)
        assert upd["status"] == "changed", upd
        r = upd["result"]
        assert r["outcome"] == "dry_run" and r["changed"] is True and r["exit_code"] == 0
        assert (r["version_before"], r["version_after"], r["target_version"]) == (OLD, NEW, NEW)
        assert r["mrseam"] == _mrseam(NEW) and r["remaining_updates"] == 63
        assert r["msg"].startswith(f"dry run: would upload {NEW} as a ") and r["msg"].endswith("nothing written")
        assert r["reasons"][0] == f"would install {NEW} over {OLD}"
        verdicts = {x["version"]: (x["verdict"], x["reasons"]) for x in r["plan"]["releases"]}
        assert verdicts[NEW] == ("selected", []) and verdicts["1.5.08"] == ("acceptable", [])
        assert verdicts["1.5.10"][0] == "refused" and "not in the module's CPUID table" in verdicts["1.5.10"][1][0]
        assert verdicts["2.0.05"][0] == "refused" and any("2.0 line" in x for x in verdicts["2.0.05"][1])
        assert run.result(h, T_POST)["status"] == "skipped"
    assert run.out.count(f"-version: {OLD}\n+version: {NEW}") == len(HOSTS), run.out  # --diff

    # the spent host: refused before the update task, with the reason
    assert run.recap["tdx-spent"]["failed"] == 1 and run.recap["tdx-spent"]["changed"] == 0
    spent = run.result("tdx-spent", T_PRE_SPENT)
    assert spent["status"] == "failed"
    assert spent["result"]["msg"].startswith("tdx-spent: refusing to update: num_remaining_updates is 0"), spent
    assert run.result("tdx-spent", T_UPDATE) is None
    assert "fatal: [tdx-spent]: FAILED!" in run.out

    # nothing was written: versions, remaining updates, no history
    assert _versions(fleet) == {h: OLD for h in HOSTS}
    assert {h: fleet.read(h, REMAINING) for h in HOSTS} == {h: "63" for h in HOSTS}
    assert not any(fleet.history(h).exists() for h in HOSTS)


@needs_fleet
def test_rolling_update_stops_on_failures_and_reruns_change_nothing(fleet):
    new_mrseam = _mrseam(NEW)

    # -- 1. the rollout: batch by batch until tdx05 fails in the third batch ---------------------------
    run = fleet.playbook()
    print(f"rollout: {run.seconds:.1f} s\n{run.out}")
    assert run.rc == 2, run.out
    assert run.batches() == [["tdx01"], ["tdx02", "tdx03"], ["tdx04", "tdx05"]], run.out
    for h in ("tdx01", "tdx02", "tdx03", "tdx04"):
        assert run.recap[h]["changed"] == 1 and run.recap[h]["failed"] == 0, f"{h}\n{run.out}"
        r = run.result(h, T_UPDATE)["result"]
        assert r["outcome"] == "updated" and r["exit_code"] == 0, r
        assert (r["version_before"], r["version_after"]) == (OLD, NEW)
        assert r["mrseam"] == new_mrseam and r["remaining_updates"] == 62
        assert r["msg"] == f"updated the TDX module from {OLD} to {NEW}"
        assert r["upload"]["outcome"] == "done" and r["history"] == {"path": str(fleet.history(h)), "error": None}
    # batches 1 and 2 were checked afterwards; the third stopped right after the update task
    for h in ("tdx01", "tdx02", "tdx03"):
        assert run.result(h, T_POST)["status"] == "ok"
    assert run.result("tdx04", T_POST) is None

    # the failing host, plainly: failed=1 in the recap, the tool's one-line error as the message
    assert run.recap[FAILING]["failed"] == 1, run.out
    failed = run.result(FAILING, T_UPDATE)
    assert failed["status"] == "failed"
    r = failed["result"]
    assert r["msg"] == LOST_MSG and "\n" not in r["msg"]
    assert (r["outcome"], r["exit_code"], r["version_before"], r["version_after"]) == ("module_lost", 14, OLD, None)
    assert "ENXIO" in r["version_after_error"] and r["mrseam"] is None and "plan" not in r
    assert re.search(r"^fatal: \[tdx05\]: FAILED! => .*" + re.escape(json.dumps(LOST_MSG)), run.out, re.M), run.out

    # max_fail_percentage: the play stopped after that batch; tdx06 never ran
    assert "tdx06" not in run.recap and "tdx06" not in run.stats
    assert "NO MORE HOSTS LEFT" in run.out
    assert _versions(fleet) == {"tdx01": NEW, "tdx02": NEW, "tdx03": NEW, "tdx04": NEW,
                                FAILING: "error: No such device or address", "tdx06": OLD}
    assert fleet.read("tdx06", REMAINING) == "63"
    assert [json.loads(fleet.history(h).read_text())["outcome"] for h in HOSTS[:5]] == ["updated"] * 4 + ["module_lost"]

    # -- 2. the same command again: nothing changes; the broken host is refused before any write -------
    again = fleet.playbook()
    print(f"re-run: {again.seconds:.1f} s\n{again.out}")
    assert again.rc == 2, again.out
    assert all(s["changed"] == 0 for s in again.recap.values()), again.out
    assert again.batches() == [["tdx01"], ["tdx02", "tdx03"], ["tdx04", "tdx05"]], again.out
    for h in ("tdx01", "tdx02", "tdx03"):
        assert again.recap[h]["failed"] == 0
        upd = again.result(h, T_UPDATE)
        r = upd["result"]
        # 1.5.10 is newer but not for this CPU: the tool says refused (11); for `latest` the host is on
        # target, so the task is ok, unchanged, with the reason as a warning
        assert upd["status"] == "ok" and r["changed"] is False and r["version_after"] == NEW, upd
        assert (r["outcome"], r["exit_code"]) == ("refused", 11)
        assert r["msg"].startswith(f"nothing to install: newer releases exist for {NEW} but every one is "
                                   "refused: 1.5.10: CPU "), r["msg"]
        assert any("1.5.10" in w for w in r["warnings"]), r
        assert r["mrseam"] == new_mrseam  # what the host reports now, known from the catalog
        assert again.result(h, T_POST)["status"] == "ok"
    assert "[WARNING]: tdxseam: nothing to install" in again.out
    pre = again.result(FAILING, T_PRE_HOST)
    assert pre["status"] == "failed" and again.recap[FAILING]["failed"] == 1
    assert pre["result"]["msg"] == ("tdx05: tdxseam: error: the TDX module is not running (version: ENXIO); "
                                    "a failed update lost it, reboot the host"), pre
    # the refusal stopped the third batch before its update task, for tdx04 too (already on 1.5.09)
    assert again.result(FAILING, T_UPDATE) is None and again.result("tdx04", T_UPDATE) is None
    assert again.recap["tdx04"]["failed"] == 0
    assert "tdx06" not in again.recap
    assert [len(fleet.history(h).read_text().splitlines()) for h in HOSTS[:5]] == [1] * 5

    # -- 3. the broken host left out, the release pinned: the rollout finishes; only tdx06 changes ----
    rest = fleet.playbook("--limit", f"all:!{FAILING}", "-e", f"tdx_version={NEW}")
    print(f"resume: {rest.seconds:.1f} s\n{rest.out}")
    assert rest.rc == 0, rest.out
    assert rest.batches() == [["tdx01"], ["tdx02", "tdx03"], ["tdx04", "tdx06"]], rest.out
    assert {h: (s["changed"], s["failed"]) for h, s in rest.recap.items()} == {
        "tdx01": (0, 0), "tdx02": (0, 0), "tdx03": (0, 0), "tdx04": (0, 0), "tdx06": (1, 0)}, rest.out
    for h in ("tdx01", "tdx02", "tdx03", "tdx04"):
        r = rest.result(h, T_UPDATE)["result"]
        assert (r["outcome"], r["changed"], r["msg"]) == ("up_to_date", False, f"{NEW} is already running; nothing to install")
    r = rest.result("tdx06", T_UPDATE)["result"]
    assert (r["outcome"], r["version_before"], r["version_after"], r["target_version"]) == ("updated", OLD, NEW, NEW)
    assert all(rest.result(h, T_POST)["status"] == "ok" for h in ("tdx01", "tdx02", "tdx03", "tdx04", "tdx06"))
    assert _versions(fleet)["tdx06"] == NEW

    # -- the hosts themselves, after SIGTERM: TDs kept where the update worked, lost where it failed ---
    final = fleet.stop()
    for h in HOSTS:
        s = final[h]
        if h == FAILING:
            assert s["uploads"] == 1 and s["last_upload"] == "transferring:firmware-invalid", s
            assert s["tds"] == 0 and s.get("td_problems"), s
        else:
            assert (s["module_version"], s["uploads"], s["last_upload"]) == (NEW, 1, "ok"), s
            assert s["tds"] == 2 and "td_problems" not in s, s
        assert "model_errors" not in s, s
    print("seconds per run: rollout %.1f, re-run %.1f, resume %.1f" % (run.seconds, again.seconds, rest.seconds))


# -- the collection's own consistency (no FUSE, no playbook) ---------------------------------------------


@pytest.fixture
def collection_modules(monkeypatch):
    pytest.importorskip("ansible", reason="ansible-core is not installed")
    import importlib

    monkeypatch.syspath_prepend(str(REPO))
    return {n: importlib.import_module(f"ansible_collections.tdxseam.tdx.plugins.modules.{n}")
            for n in ("tdx_module", "tdx_facts")}


def test_module_documentation_matches_argument_spec(collection_modules):
    import yaml

    for name, mod in collection_modules.items():
        doc = yaml.safe_load(mod.DOCUMENTATION)
        yaml.safe_load(mod.EXAMPLES)
        ret = yaml.safe_load(mod.RETURN)
        assert doc["module"] == name and ret
        opts = doc["options"]
        assert set(opts) == set(mod.ARGUMENT_SPEC), name
        for opt, spec in mod.ARGUMENT_SPEC.items():
            assert opts[opt]["type"] == spec["type"], (name, opt)
            assert opts[opt].get("default") == spec.get("default"), (name, opt)
            assert opts[opt].get("elements") == spec.get("elements"), (name, opt)


def test_exit_codes_mirror_the_cli(collection_modules):
    from ansible_collections.tdxseam.tdx.plugins.module_utils.tdx_common import EXIT_CODES
    from tdxseam.cli import cmd_tool, exits

    assert {k: v for k, v in EXIT_CODES.items() if k in cmd_tool._UPDATE_CODE} == cmd_tool._UPDATE_CODE
    assert (EXIT_CODES["usage"], EXIT_CODES["bad_input"], EXIT_CODES["host"], EXIT_CODES["internal"]) == (
        exits.USAGE, exits.BAD_INPUT, exits.HOST_UNREADABLE, exits.INTERNAL)
