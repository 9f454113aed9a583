"""2.0.02 -> 2.0.04: Intel's new module stops in TDH.SYS.UPDATE on the old one's shorter handoff.

The binary says it as behaviour (`ud2` in its minimum-size check), Intel's mapping file as policy
(2.0.04 needs at least 2.0.04 for a TD-preserving update; `plan` refuses the pair, see
tests/test_tool_plan.py). No file states a release's handoff size: the model learns it when the
real-firmware engine runs the binary's SHUTDOWN (tdxseam.probe.measure_handoff), and then agrees
with the binary; these tests hold both to it.
"""

from __future__ import annotations

import pytest

from _real_support import engine_identities, real_host, v2_image
from tdxseam.demo import run_demo
from tdxseam.formats.releases import HANDOFF_DATA_SIZE
from tdxseam.formats.version import ModuleVersion
from tdxseam.kernel.seamldr import seamldr_install_module
from tdxseam.seam.stopped import ModuleStopped


def test_real_firmware_stops_in_update_and_says_where(intel_dir):
    pytest.importorskip("unicorn")
    pytest.importorskip("capstone")
    r = run_demo(cpus=4, tds=0, from_="2.0.02", to="2.0.04", catalog=str(intel_dir), firmware="real")
    assert not r.ok
    assert r.stopped_in_seam.startswith("TDX module 2.0.04 stopped in TDH_SYS_UPDATE at code offset 0x")
    assert "(ud2)" in r.stopped_in_seam
    assert "TDX module is lost" in r.error and "reboot needed" in r.error
    assert r.version_after is None


@pytest.fixture
def engine():
    pytest.importorskip("unicorn")
    pytest.importorskip("capstone")
    from tdxseam.probe import firmware_probe

    return firmware_probe("on")


def test_model_stops_the_same_way_and_the_tds_are_lost(intel_dir, engine):
    r = run_demo(cpus=4, tds=2, from_="2.0.02", to="2.0.04", catalog=str(intel_dir), probe=engine)
    assert not r.ok and r.tds_before == 2 and r.tds_preserved == 0
    assert r.stopped_in_seam.startswith("TDX module 2.0.04 stopped in TDH_SYS_UPDATE")
    assert "101,810" in r.stopped_in_seam and "99,762" in r.stopped_in_seam
    assert "every TD (2 built)" in r.error


def test_same_size_handoff_updates(intel_dir, engine):
    r = run_demo(cpus=4, tds=2, from_="2.0.04", to="2.0.05", catalog=str(intel_dir), probe=engine)
    assert r.ok and r.tds_preserved == 2
    assert r.to_identity["handoff_size"] == 101_810 and r.from_identity["handoff_size"] == 101_810


def test_unmeasured_the_model_keeps_its_own_layout(intel_dir):
    """Without the engine nothing states the sizes: the model's own layout stands (its update
    succeeds), the identity says the size is unknown, and `plan` still refuses the pair (above)."""
    r = run_demo(cpus=4, tds=2, from_="2.0.02", to="2.0.04", catalog=str(intel_dir))
    assert r.to_identity["handoff_size"] is None and r.from_identity["handoff_size"] is None
    assert r.ok and r.tds_preserved == 2


def test_without_the_size_check_the_model_would_claim_the_tds_preserved(intel_dir, engine):
    """Mutation: the check switched off gives back the old, wrong answer (update done)."""
    known = engine_identities(intel_dir, "2.0.02", "2.0.04")
    host = real_host(intel_dir, "2.0.02", cpus=4, firmware="model", known_modules=known)
    host.fw.disabled_checks.add("update_handoff_size")
    assert host.run_on(0, seamldr_install_module, host.kernel, v2_image(intel_dir, "2.0.04")) == 0
    host2 = real_host(intel_dir, "2.0.02", cpus=4, firmware="model", known_modules=known)
    with pytest.raises(ModuleStopped):
        host2.run_on(0, seamldr_install_module, host2.kernel, v2_image(intel_dir, "2.0.04"))


def test_handoff_sizes_are_the_binaries(intel_dir):
    """What the engine measures is what each binary's SHUTDOWN writes on a 4-CPU host (and what
    formats.releases records as test data)."""
    pytest.importorskip("unicorn")
    pytest.importorskip("capstone")
    from tdxseam.kernel.tdx import tdx_module_shutdown
    from tdxseam.seam.layout import HandoffHeader

    versions = ("1.5.06", "2.0.02", "2.0.05")
    for version, ident in zip(versions, engine_identities(intel_dir, *versions)):
        host = real_host(intel_dir, version, cpus=4)
        assert host.run_on(0, tdx_module_shutdown, host.kernel) == 0
        hdr = HandoffHeader.from_bytes(host.machine.mem.read(host.fw.module.layout.handoff_pa, 8))
        assert hdr.valid == 1 and hdr.size == ident.handoff_size == HANDOFF_DATA_SIZE[ModuleVersion.parse(version)]


def test_update_refuses_2_0_04_on_a_2_0_02_host_before_writing(tmp_path, intel_dir, monkeypatch, capsys):
    """The operator tool refuses the pair (mapping floor) with nothing written to the upload files."""
    from _tool_host import make_root
    from tdxseam.cli import exits, main

    root = make_root(tmp_path / "h", version="2.0.02", seamldr="2.0.00", cpu=(6, 0xAD, 1))
    monkeypatch.setenv("TDXSEAM_HISTORY", str(tmp_path / "hist.jsonl"))
    up = root / "sys/class/firmware/tdx_module"
    before = {p.name: p.read_bytes() for p in up.iterdir()}
    with pytest.raises(SystemExit) as e:
        main(["update", "2.0.04", "--yes", "--json", "--catalog", str(intel_dir), "--sysfs-root", str(root)])
    out = capsys.readouterr()
    assert e.value.code == exits.REFUSED, out
    assert "min_module_version_for_td_preserving" in (out.out + out.err)
    assert {p.name: p.read_bytes() for p in up.iterdir()} == before
