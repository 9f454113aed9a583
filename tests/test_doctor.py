"""`tdxseam doctor` on emulated hosts (in-process tree) and plain directories: a healthy host, one
that lost its module in a failed update, one with no updates left, one whose P-SEAMLDR does not
answer; the msr checks; never blocking on a FIFO; valid --json and the exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from _tool_host import make_root, synthetic_catalog, tree_root_class

pytest.importorskip("tdxseam.sysfs.tree", reason="the emulated sysfs tree (tdxseam.sysfs) is not available")

from tdxseam.cli.cmd_diag import print_report  # noqa: E402
from tdxseam.formats.leaves import SeamldrLeaf, TdxLeaf  # noqa: E402
from tdxseam.formats.status import SeamldrStatus  # noqa: E402
from tdxseam.formats.testsign import make_image  # noqa: E402
from tdxseam.seam.faults import FaultPlan, install_fault_plan  # noqa: E402
from tdxseam.seam.pseamldr import SeamldrBuild  # noqa: E402
from tdxseam.sysfs import Emulation  # noqa: E402
from tdxseam.tool.doctor import SafeRoot, run_doctor  # noqa: E402

FW = "/sys/class/firmware/tdx_module"


def verdicts(report) -> dict[str, str]:
    return {c.name: c.verdict for c in report.checks}


def doctor(emu: Emulation):
    return run_doctor(tree_root_class()(emu.tree))


def json_of(report, capsys) -> dict:
    print_report(report, True)
    return json.loads(capsys.readouterr().out)


def with_faults(plan: FaultPlan):
    """An Emulation setup that arms `plan` after boot (as `tdxseam emulate --fault` does)."""
    return lambda host: install_fault_plan(host.fw, plan)


def upload(emu: Emulation, image: bytes) -> None:
    t = emu.tree
    t.write_text(f"{FW}/loading", "1")
    t.write_file(f"{FW}/data", image)
    t.write_text(f"{FW}/loading", "0")
    assert emu.settle()


# ---- emulated hosts ------------------------------------------------------------------------------


def test_healthy_host(capsys):
    with Emulation(4, seed=2) as emu:
        r = doctor(emu)
    v = verdicts(r)
    assert r.ok
    assert {k: v[k] for k in ("tdx_host", "module", "upload", "seamldr", "remaining_updates", "cpu_flags",
                              "cpus_online", "kernel_log")} == dict.fromkeys(
        ("tdx_host", "module", "upload", "seamldr", "remaining_updates", "cpu_flags", "cpus_online",
         "kernel_log"), "ok")
    # no catalog; SEAMRR and the KeyID split from the emulated /dev/cpu/0/msr
    assert v["release"] == "unknown"
    assert (v["seamrr"], v["keyids"]) == ("ok", "ok")
    assert r.checks[9].details == {"base": "0x40000000", "size": 256 << 20, "enabled": True, "locked": True,
                                   "msr_0x1400": "0x0000000040000000", "msr_0x1401": "0x000ffffff0000c00"}
    assert r.checks[10].details == {"mktme_keyids": 0, "tdx_keyids": 63, "range": [1, 64]}
    assert r.log_source == "/var/log/dmesg"  # found under the root without --dmesg
    assert [i.text for i in r.log_items] == ["virt/tdx: BIOS enabled: private KeyID range [1, 64)",
                                             "virt/tdx: TDX-Module initialized"]
    doc = json_of(r, capsys)
    assert doc["ok"] is True and doc["counts"] == {"ok": 10, "warn": 0, "fail": 0, "unknown": 1}
    assert [c["name"] for c in doc["checks"]][:2] == ["tdx_host", "module"]
    assert all(set(c) >= {"name", "verdict", "summary", "fix"} for c in doc["checks"])


def test_host_that_lost_its_module_in_a_failed_update(capsys):
    plan = FaultPlan().add(SeamldrLeaf.P_SEAMLDR_INSTALL, int(SeamldrStatus.EBADHASH), cpu=1)
    with Emulation(4, seed=3, setup=with_faults(plan)) as emu:
        upload(emu, make_image("1.5.08"))
        r = doctor(emu)
    v = verdicts(r)
    assert not r.ok
    assert v["module"] == "fail" and "ENXIO" in r.checks[1].summary and "reboot" in r.checks[1].fix
    assert v["kernel_log"] == "fail"
    (fail,) = [i for i in r.log_items if i.kind == "seamcall_failure"]
    assert (fail.leaf["name"], fail.status["name"], fail.errno["name"]) == ("P_SEAMLDR_INSTALL", "EBADHASH", "EIO")
    assert v["seamldr"] == "ok" and v["tdx_host"] == "ok"
    doc = json_of(r, capsys)
    assert doc["ok"] is False and doc["counts"]["fail"] == 2
    assert doc["kernel_log"]["items"][2]["status"]["name"] == "EBADHASH"


def test_host_with_no_remaining_updates(capsys):
    # the boot install takes the only SEAMDB entry: no runtime update is left
    with Emulation(4, seed=4, seamldr=SeamldrBuild(seamdb_capacity=1)) as emu:
        r = doctor(emu)
    v = verdicts(r)
    assert r.ok and v["remaining_updates"] == "warn" and "reboot" in r.checks[4].fix
    assert json_of(r, capsys)["counts"]["warn"] == 1


def test_host_whose_p_seamldr_does_not_answer(capsys):
    # no P-SEAMLDR: every SEAMLDR.INFO ends in VMfailInvalid (-ENODEV, which the kernel does not print)
    plan = FaultPlan().add(SeamldrLeaf.P_SEAMLDR_INFO, "vmfailinvalid", nth=None)
    with Emulation(4, seed=5, setup=with_faults(plan)) as emu:
        r = doctor(emu)
    v = verdicts(r)
    assert not r.ok
    assert v["seamldr"] == "fail" and "ENODEV" in r.checks[3].summary and "BIOS" in r.checks[3].fix
    assert v["remaining_updates"] == "unknown" and v["module"] == "ok" and v["kernel_log"] == "ok"
    assert json_of(r, capsys)["checks"][3]["verdict"] == "fail"


def test_boot_failure_host_has_no_tdx_host(tmp_path):
    """A host whose TDX init failed has no tdx_host; its log says why (plain directory export)."""
    from tdxseam.host import BootError, EmulatedHost

    with pytest.raises(BootError) as e:
        EmulatedHost(2, trace=False, boot_faults=FaultPlan().add(TdxLeaf.TDH_SYS_KEY_CONFIG, 0xC000050700000000))
    root = tmp_path / "root"
    (root / "proc").mkdir(parents=True)
    (root / "proc/cpuinfo").write_text(CPUINFO)
    r = run_doctor(SafeRoot(root), log_text=e.value.dmesg, log_source="boot")
    v = verdicts(r)
    assert v["tdx_host"] == "fail" and v["kernel_log"] == "fail"
    assert "TDH_SYS_KEY_CONFIG TDX_SYS_KEY_CONFIG_NOT_PENDING" in r.checks[8].summary


def test_release_check_reuses_the_plan(tmp_path, intel_dir):
    from tdxseam.formats import testsign
    from tdxseam.formats.sigstruct import INTEL_KEY_HASH
    from tdxseam.tool.catalog import load_catalog
    from tdxseam.tool.plan import PlanOptions
    from tdxseam.tool.verify import VerifyOptions

    test_keys = PlanOptions(VerifyOptions((INTEL_KEY_HASH, testsign.signing_key().key_hash)))
    newer = load_catalog(synthetic_catalog(tmp_path / "c1", [{"version": "1.5.06"}, {"version": "1.5.08",
                                                                                     "td_floor": "1.5.06"}]))
    same = load_catalog(synthetic_catalog(tmp_path / "c2", [{"version": "1.5.06"}]))
    with Emulation(4, seed=6) as emu:
        fs = tree_root_class()(emu.tree)
        r_newer = run_doctor(fs, catalog=newer, opts=test_keys)
        r_same = run_doctor(fs, catalog=same, opts=test_keys)
    rel = r_newer.checks[5]
    assert (rel.name, rel.verdict) == ("release", "warn") and "tdxseam update 1.5.08" in rel.fix
    assert rel.details["selected"] == "1.5.08" and r_newer.ok  # a warning does not fail the host
    assert r_same.checks[5].verdict == "ok"
    # Intel's releases on a host booted from Intel's 1.5.06: 1.5.13 applies
    blob = (intel_dir / "joined_files" / "1.5" / "tdx_module_1.5.06.blob").read_bytes()
    with Emulation(4, module=blob) as emu:
        r = run_doctor(tree_root_class()(emu.tree), catalog=load_catalog(intel_dir))
    assert r.checks[5].verdict == "warn" and r.checks[5].details["selected"] == "1.5.13"


# ---- plain directories, msr, FIFOs, the command ----------------------------------------------------

CPUINFO = "".join(f"processor\t: {i}\ncpu family\t: 6\nmodel\t\t: 143\nstepping\t: 8\n"
                  f"flags\t\t: fpu vmx tdx_host_platform\nbugs\t\t: spectre_v1\n\n" for i in range(4))
HEALTHY_LOG = "[    0.5] virt/tdx: BIOS enabled: private KeyID range [32, 64)\n[    1.0] virt/tdx: TDX-Module initialized\n"


def plain_host(root: Path, *, msr: dict[int, int] | None = None, log: str | None = HEALTHY_LOG) -> Path:
    make_root(root)
    (root / "proc/cpuinfo").write_text(CPUINFO)
    if log is not None:
        (root / "var/log").mkdir(parents=True)
        (root / "var/log/dmesg").write_text(log)
    if msr is not None:
        (root / "dev/cpu/0").mkdir(parents=True)
        fd = os.open(root / "dev/cpu/0/msr", os.O_WRONLY | os.O_CREAT, 0o600)
        try:
            for reg, val in msr.items():
                os.pwrite(fd, val.to_bytes(8, "little"), reg)
        finally:
            os.close(fd)
    return root


SEAMRR_OK = {0x1400: 0x7E00_0000, 0x1401: (0x000F_FFFF_FE00_0000 & ~((32 << 20) - 1)) | 0xC00,
             0x87: (32 << 32) | 31}


def test_msr_checks(tmp_path):
    r = run_doctor(SafeRoot(plain_host(tmp_path / "a", msr=SEAMRR_OK)))
    v = verdicts(r)
    assert v["seamrr"] == "ok" and "32 MiB" in r.checks[9].summary and r.checks[9].details["locked"]
    assert v["keyids"] == "ok" and r.checks[10].details == {"mktme_keyids": 31, "tdx_keyids": 32, "range": [32, 64]}
    assert r.ok
    unlocked = {**SEAMRR_OK, 0x1401: SEAMRR_OK[0x1401] & ~0x400, 0x87: 31}
    r = run_doctor(SafeRoot(plain_host(tmp_path / "b", msr=unlocked)))
    v = verdicts(r)
    assert (v["seamrr"], v["keyids"]) == ("fail", "fail") and not r.ok


def test_fifos_are_never_read(tmp_path):
    root = plain_host(tmp_path / "r", log=None)
    (root / "var/log").mkdir(parents=True)
    os.mkfifo(root / "var/log/dmesg")
    os.remove(root / "sys/devices/faux/tdx_host/version")
    os.mkfifo(root / "sys/devices/faux/tdx_host/version")
    import threading

    done: list = []
    t = threading.Thread(target=lambda: done.append(run_doctor(SafeRoot(root))), daemon=True)
    t.start()
    t.join(60)  # a blocking open/read of a FIFO without a writer would never return
    assert done, "doctor blocked on a FIFO"
    v = verdicts(done[0])
    r = done[0]
    assert v["kernel_log"] == "unknown" and v["module"] == "fail" and "EINVAL" in r.checks[1].summary


def _cli(*args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tdxseam.cli", *args], input=stdin, capture_output=True,
                          text=True, timeout=120)


def test_cli_exit_codes_and_json(tmp_path):
    good = plain_host(tmp_path / "good", msr=SEAMRR_OK)
    p = _cli("doctor", "--sysfs-root", str(good), "--json")
    assert p.returncode == 0, p.stderr
    doc = json.loads(p.stdout)
    assert doc["ok"] and doc["counts"]["fail"] == 0 and doc["kernel_log"]["source"] == "/var/log/dmesg"
    failed_log = HEALTHY_LOG + "virt/tdx: SEAMCALL (0x0000000000000034) failed: 0xc000010000000001\n"
    p = _cli("doctor", "--sysfs-root", str(good), "--dmesg", "-", stdin=failed_log)
    assert p.returncode == 0, p.stdout  # the module still runs: an earlier failure is a warning
    assert "WARN    kernel_log" in p.stdout and "TDH_SYS_SHUTDOWN" in p.stdout
    bad = plain_host(tmp_path / "bad", msr={**SEAMRR_OK, 0x1401: 0})
    p = _cli("doctor", "--sysfs-root", str(bad))
    assert p.returncode == 1 and "FAIL    seamrr" in p.stdout
    os.mkfifo(tmp_path / "fifo")
    p = _cli("doctor", "--sysfs-root", str(good), "--dmesg", str(tmp_path / "fifo"))
    assert p.returncode == 3 and p.stderr.startswith("tdxseam: error: --dmesg") and "regular file" in p.stderr
    p = _cli("doctor", "--sysfs-root", str(tmp_path / "nowhere"))
    assert p.returncode == 2 and "not a directory" in p.stderr


def test_emulated_msr_device_answers_as_the_msr_driver():
    import errno as _errno

    from tdxseam.sysfs.tree import Cred

    with Emulation(2, seed=7) as emu:
        t = emu.tree
        assert t.stat("/dev/cpu/1/msr").perm == 0o600
        assert int.from_bytes(t.read("/dev/cpu/1/msr", 0x87, 8), "little") == 63 << 32
        with pytest.raises(OSError) as e:
            t.read("/dev/cpu/0/msr", 0x10, 8)  # an MSR the model does not have: the rdmsr faults
        assert e.value.errno == _errno.EIO
        with pytest.raises(OSError) as e:
            t.read("/dev/cpu/0/msr", 0x1400, 4)  # whole MSRs only
        assert e.value.errno == _errno.EINVAL
        with pytest.raises(OSError) as e:
            t.read("/dev/cpu/0/msr", 0x1400, 8, cred=Cred.user())
        assert e.value.errno == _errno.EACCES
