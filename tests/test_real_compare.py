"""`firmware compare`: the model and Intel's binaries answer the same boot and update alike."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("unicorn")
pytest.importorskip("capstone")

from tdxseam.firmware_compare import compare_firmware  # noqa: E402
from tdxseam.formats import releases  # noqa: E402
from tdxseam.formats.version import ModuleVersion  # noqa: E402


@pytest.mark.parametrize("pair", [("1.5.06", "1.5.13"), ("2.0.04", "2.0.05")])
def test_model_and_binaries_agree_on_boot_and_update(intel_dir, pair):
    r = compare_firmware(*pair, catalog=str(intel_dir))
    assert r.ok, [d.line() for d in r.unexplained]
    assert r.calls_model == r.calls_real == r.compared == 28
    assert (r.model_end, r.real_end) == ("ok", "ok")
    assert {d.kind for d in r.diffs} <= {"output"} and all(d.known for d in r.diffs)


def test_both_stop_in_update_from_2_0_02_to_2_0_04(intel_dir):
    r = compare_firmware("2.0.02", "2.0.04", catalog=str(intel_dir))
    assert r.ok
    assert r.model_end == r.real_end == "stopped in SEAM: 2.0.04 in TDH_SYS_UPDATE"


def test_a_wrong_model_value_is_an_unexplained_difference(intel_dir, monkeypatch):
    """The model told the mapping file's TDX_FEATURES0 for 2.0.04 instead of the binary's own
    answer: compare catches the binary answering something else at boot."""
    import dataclasses

    import tdxseam.firmware_compare as fc

    engine = fc.firmware_probe("on")
    mapped = releases.RELEASES_BY_VERSION[ModuleVersion(2, 0, 4)].tdx_features0

    def told_the_mapping(sigstruct, module):
        facts = engine(sigstruct, module)
        return dataclasses.replace(facts, tdx_features0=mapped) if facts.version == "2.0.04" else facts

    monkeypatch.setattr(fc, "firmware_probe", lambda mode=None: told_the_mapping)
    r = compare_firmware("2.0.04", "2.0.05", catalog=str(intel_dir))
    assert not r.ok
    (d,) = r.unexplained
    assert (d.leaf, d.field, d.register, d.real) == ("TDH_SYS_RD", "TDX_FEATURES0", "r8", 0x26F1F07BF)


def test_compare_cli_json(intel_dir):
    proc = subprocess.run([sys.executable, "-m", "tdxseam.cli", "firmware", "compare", "--from", "2.0.04",
                           "--to", "2.0.05", "--catalog", str(intel_dir), "--json"],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["ok"] and out["unexplained"] == 0 and out["compared"] == 28


def test_handoff_version_fault_both_refuse_the_same_way(intel_dir):
    r = compare_firmware("1.5.06", "1.5.13", catalog=str(intel_dir), handoff_hv_raise=1)
    assert r.ok and r.compared == r.calls_real == 25  # the run ends at the refused UPDATE
    assert r.model_end == r.real_end == "update failed: errno -5"
    assert not [d for d in r.diffs if d.kind == "status"]
