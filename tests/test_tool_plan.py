"""tdxseam plan: every rule a named check with a reason, the selection, and Intel's choice beside it.

Hosts are plain directories with the sysfs files (tests/_tool_host.py); the catalogs are Intel's
fixture releases or test-signed synthetic modules.
"""

from __future__ import annotations

import pytest

from _tool_host import UPSTREAM_STRICT, linked_intel_catalog, make_root, synthetic_catalog
from tdxseam.formats import testsign
from tdxseam.formats.sigstruct import INTEL_KEY_HASH
from tdxseam.tool.catalog import load_catalog
from tdxseam.tool.errors import Kind, ToolError
from tdxseam.tool.hostinfo import SysfsRoot, read_host
from tdxseam.tool.plan import PlanOptions, make_plan
from tdxseam.tool.verify import VerifyOptions

SPR, EMR, SRF, GNR, GNR_D = (6, 0x8F, 8), (6, 0xCF, 2), (6, 0xAF, 3), (6, 0xAD, 1), (6, 0xAE, 0)
TEST_KEYS = PlanOptions(VerifyOptions((INTEL_KEY_HASH, testsign.signing_key().key_hash)))


def plan_for(tmp_path, catalog, opts=PlanOptions(), target=None, **host):
    h = read_host(make_root(tmp_path / "host", **host))
    return make_plan(h, catalog, target=target, opts=opts)


def failed(plan, version):
    c = next(c for c in plan.candidates if str(c.version) == version)
    return {x.name for x in c.failed}


def verdicts(plan):
    return {str(c.version): c.verdict for c in plan.candidates}


@pytest.fixture(scope="module")
def intel_catalog(intel_dir):
    return load_catalog(intel_dir)


# -- the must-show host: 1.5.06 on P-SEAMLDR 1.5.00 ----------------------------------------------


def test_host_1_5_06_every_verdict_explained(tmp_path, intel_catalog):
    p = plan_for(tmp_path, intel_catalog, version="1.5.06", seamldr="1.5.00", cpu=SPR)
    assert p.outcome == "update" and str(p.selected.version) == "1.5.13"
    assert verdicts(p) == {"2.0.05": "refused", "2.0.04": "refused", "2.0.02": "refused",
                           "1.5.13": "selected", "1.5.09": "acceptable", "1.5.08": "acceptable",
                           "1.5.06": "refused", "1.5.05": "refused", "1.5.01": "refused"}
    for v in ("2.0.05", "2.0.04", "2.0.02"):
        assert failed(p, v) == {"td_line", "seamldr", "cpu", "svn"}
    assert failed(p, "1.5.06") == {"not_running"}
    assert failed(p, "1.5.05") == {"td_order", "svn"}
    assert failed(p, "1.5.01") == {"td_order", "svn"}
    # every check of every release carries a sentence and whose rule it is
    for c in p.candidates:
        names = [x.name for x in c.checks]
        assert {"file", "verify", "mapping", "debug", "td_line", "cpu", "svn", "image_format"} <= set(names)
        assert all(x.reason and x.rule in ("intel", "strict") for x in c.checks)
    sel = next(c for c in p.candidates if c.verdict == "selected")
    img = next(x for x in sel.checks if x.name == "image_format")
    assert img.ok and "converted from v1 to v2" in img.reason
    assert "same release (1.5.13)" in p.intel_comparison and "firmware-invalid" in p.intel_comparison
    j = p.to_json()
    assert j["selected"]["version"] == "1.5.13" and len(j["releases"]) == 9
    assert j["releases"][0]["reasons"] and j["releases"][3]["verdict"] == "selected"


def test_no_updates_left_blocks(tmp_path, intel_catalog):
    p = plan_for(tmp_path, intel_catalog, remaining=0)
    assert p.outcome == "blocked" and p.selected is None and str(p.best.version) == "1.5.13"
    assert verdicts(p)["1.5.13"] == "blocked"
    assert [c.name for c in p.blockers] == ["remaining_updates"]
    assert "until a reboot" in p.message


@pytest.mark.parametrize("host,blocker", [
    ({"layout": None}, "runtime_update"),
    ({"online": "0-2", "present": "0-3"}, "cpus_online"),
    ({"status": "transferring"}, "upload_idle"),
])
def test_host_blockers(tmp_path, intel_catalog, host, blocker):
    p = plan_for(tmp_path, intel_catalog, **host)
    assert p.outcome == "blocked" and blocker in {c.name for c in p.blockers}


def test_up_to_date_and_intel_reinstall(tmp_path, intel_catalog):
    p = plan_for(tmp_path, intel_catalog, version="1.5.13")
    assert p.outcome == "up_to_date" and p.selected is None
    assert str(p.intel.selected) == "1.5.13"
    assert "already running" in p.intel_comparison and "spending" in p.intel_comparison


def test_2_0_line_floors(tmp_path, intel_catalog):
    # 2.0.04 and 2.0.05 need a running 2.0.04 or later: from 2.0.02 nothing is TD-preserving
    p = plan_for(tmp_path, intel_catalog, version="2.0.02", seamldr="2.0.00", cpu=GNR)
    assert p.outcome == "refused"
    assert failed(p, "2.0.05") == {"td_floor"} and failed(p, "2.0.04") == {"td_floor"}
    assert "every one is refused" in p.message
    assert str(p.intel.selected) == "2.0.02" and "already running" in p.intel_comparison
    # from 2.0.04 on Granite Rapids-D: 2.0.05 (same SVN 3.4 is fine)
    p = plan_for(tmp_path / "b", intel_catalog, version="2.0.04", seamldr="2.0.00", cpu=GNR_D)
    assert str(p.selected.version) == "2.0.05" and failed(p, "2.0.02") >= {"td_order", "cpu"}


def test_seamldr_floor(tmp_path, intel_catalog):
    # a 2.0 P-SEAMLDR: 1.5.01 lists only 1.5.00
    p = plan_for(tmp_path, intel_catalog, version="1.5.01", seamldr="2.0.00", cpu=SPR)
    assert "seamldr" in failed(p, "1.5.01") and str(p.selected.version) == "1.5.13"
    # a P-SEAMLDR older in its line than the floor
    p = plan_for(tmp_path / "b", intel_catalog, version="2.0.04", seamldr="1.4.09", cpu=GNR_D)
    assert "seamldr" in failed(p, "2.0.05")


def test_cpu_check_names_the_cpu(tmp_path, intel_catalog):
    p = plan_for(tmp_path, intel_catalog, version="1.5.01", cpu=SRF)
    assert failed(p, "1.5.01") >= {"cpu"}
    reason = next(x.reason for c in p.candidates if str(c.version) == "1.5.01" for x in c.failed if x.name == "cpu")
    assert "0xa06f3" in reason and "0x806f8" in reason
    assert str(p.selected.version) == "1.5.13"


def test_strict_compat_honoured_when_present(tmp_path, intel_dir):
    import json

    rel = json.loads((intel_dir / "mapping_file.json").read_text())["tdx_module_releases"]
    for r in rel:
        r["strict_compat_versions"] = UPSTREAM_STRICT.get(r["version"], [])
    cat = load_catalog(linked_intel_catalog(tmp_path / "cat", intel_dir, rel))
    assert not any("strict_compat" in w for w in cat.warnings)
    # from 1.5.06 the upstream lists allow 1.5.08 and 1.5.13
    p = plan_for(tmp_path / "h1", cat, version="1.5.06")
    assert str(p.selected.version) == "1.5.13"
    # from 1.5.09, 1.5.13 lists only 1.5.06 and 1.5.08: refused, nothing newer is left
    p = plan_for(tmp_path / "h2", cat, version="1.5.09")
    assert failed(p, "1.5.13") == {"strict_compat"} and p.outcome == "refused"
    assert "Intel's version_select_and_load.py would install 1.5.13; tdxseam refuses it" in p.intel_comparison
    p = plan_for(tmp_path / "h3", cat, version="1.5.09", opts=PlanOptions(ignore_strict_compat=True))
    assert str(p.selected.version) == "1.5.13"


# -- divergence from Intel's tool (synthetic releases) ------------------------------------------------------


def test_no_fallback_in_intel_tool(tmp_path):
    # 1.5.24 (SPR/EMR, P-SEAMLDR 1.5.00) and 1.5.25 (Sierra Forest only, P-SEAMLDR 2.0.00):
    # the 1.5 line is not one ladder. Intel's tool looks only at 1.5.25 and stops.
    cat = load_catalog(synthetic_catalog(tmp_path / "cat", [
        {"version": "1.5.20", "td_floor": "1.5.01", "cpuids": (0x806F0, 0xC06F0, 0xA06F0)},
        {"version": "1.5.24", "td_floor": "1.5.01", "cpuids": (0x806F0, 0xC06F0)},
        {"version": "1.5.25", "td_floor": "1.5.01", "cpuids": (0xA06F0,), "seamldrs": ["2.0.00"]},
    ]))
    p = plan_for(tmp_path, cat, TEST_KEYS, version="1.5.20", cpu=SPR)
    assert str(p.selected.version) == "1.5.24"
    assert failed(p, "1.5.25") == {"cpu", "seamldr"}
    assert p.intel.selected is None and p.intel.outcome.startswith("incompatible module 1.5.25")
    assert "no fallback" in p.intel_comparison and "picks 1.5.24" in p.intel_comparison


def test_unverifiable_and_debug_releases(tmp_path):
    other = testsign.signing_key(testsign.OTHER_SEED)
    cat = load_catalog(synthetic_catalog(tmp_path / "cat", [
        {"version": "1.5.20", "td_floor": "1.5.01"},
        {"version": "1.5.21", "td_floor": "1.5.01", "debug": True},
        {"version": "1.5.22", "td_floor": "1.5.01", "key": other},
    ]))
    p = plan_for(tmp_path, cat, TEST_KEYS, version="1.5.20")
    assert failed(p, "1.5.22") == {"verify"} and failed(p, "1.5.21") == {"debug"}
    assert p.outcome == "refused"
    assert str(p.intel.selected) == "1.5.22"  # Intel's tool checks no signature
    assert "tdxseam refuses it (fails verification: key_hash" in p.intel_comparison
    dbg = PlanOptions(VerifyOptions(TEST_KEYS.verify.trusted_key_hashes, allow_debug=True))
    p = plan_for(tmp_path / "b", cat, dbg, version="1.5.20")
    assert str(p.selected.version) == "1.5.21"


def test_running_svn_and_unmapped(tmp_path):
    cat = load_catalog(synthetic_catalog(tmp_path / "cat", [
        {"version": "1.5.20", "td_floor": "1.5.01"},
        {"version": "1.5.21", "td_floor": "1.5.01", "svn": (1, 3)},  # lower minor SVN than 1.5.20's 20
        {"version": "1.5.22", "td_floor": "1.5.01", "no_mapping": True},
    ]))
    p = plan_for(tmp_path, cat, TEST_KEYS, version="1.5.20")
    assert failed(p, "1.5.21") == {"svn"} and failed(p, "1.5.22") == {"mapping"}
    # running version unknown to the catalog and to Intel's data: the SVN check cannot tell
    p = plan_for(tmp_path / "b", cat, TEST_KEYS, version="1.5.19")
    c = next(c for c in p.candidates if str(c.version) == "1.5.21")
    assert next(x for x in c.checks if x.name == "svn").ok is None


def test_old_interface_takes_v1(tmp_path, intel_catalog):
    p = plan_for(tmp_path, intel_catalog, layout="seamldr_upload")
    img = next(x for x in p.selected.checks if x.name == "image_format")
    assert "sent as is" in img.reason and "seamldr_upload" in img.reason
    assert "firmware-invalid" not in p.intel_comparison


# -- a named target ----------------------------------------------------------------------------------------


def test_target_version(tmp_path, intel_catalog):
    p = plan_for(tmp_path, intel_catalog, target="1.5.08")
    assert p.outcome == "update" and str(p.selected.version) == "1.5.08"
    assert any("not the newest" in n for n in p.notes)
    p = plan_for(tmp_path / "b", intel_catalog, target="1.5.05")
    assert p.outcome == "refused" and "downgrade" in p.message
    with pytest.raises(ToolError, match="not in the catalog"):
        plan_for(tmp_path / "c", intel_catalog, target="1.5.99")
    with pytest.raises(ToolError, match="not a version"):
        plan_for(tmp_path / "d", intel_catalog, target="no-such-file")


def test_target_file(tmp_path, intel_dir, intel_catalog):
    f = intel_dir / "separate_files" / "1.5" / "1.5.06" / "tdx_module_1.5.06.bin"
    p = plan_for(tmp_path, intel_catalog, target=str(f), version="1.5.05")
    assert str(p.selected.version) == "1.5.06" and p.selected.file.format == "pair"
    # without a catalog the mapping rules cannot be checked: refused, and it says why
    p = plan_for(tmp_path / "b", None, target=str(f), version="1.5.05")
    assert p.outcome == "refused" and "no --catalog" in p.message


# -- host errors --------------------------------------------------------------------------------------------


def test_not_a_tdx_host(tmp_path, intel_catalog):
    with pytest.raises(ToolError, match="not a TDX host") as ei:
        make_plan(read_host(tmp_path), intel_catalog)
    assert ei.value.kind is Kind.HOST


def test_lost_module_and_permissions(tmp_path, intel_catalog):
    import errno

    class Err(SysfsRoot):
        def __init__(self, root, suffix, code):
            super().__init__(root)
            self.suffix, self.code = suffix, code

        def read_text(self, rel):
            if rel.endswith(self.suffix):
                raise OSError(self.code, "injected")
            return super().read_text(rel)

    root = make_root(tmp_path)
    with pytest.raises(ToolError, match="reboot"):
        make_plan(read_host(Err(root, "tdx_host/version", errno.ENXIO)), intel_catalog)
    with pytest.raises(ToolError, match="run as root"):
        make_plan(read_host(Err(root, "num_remaining_updates", errno.EACCES)), intel_catalog)
