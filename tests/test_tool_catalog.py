"""Catalogs laid out like Intel's repository: releases, mapping drift, odd layouts, conversion."""

from __future__ import annotations

import hashlib
import json

import pytest

from _tool_host import linked_intel_catalog, mapping_entry, synthetic_catalog, write_mapping
from tdxseam.formats import testsign
from tdxseam.formats.image import detect, ImageFormat
from tdxseam.tool.catalog import load_catalog, load_module_file
from tdxseam.tool.convert import convert_file, image_for
from tdxseam.tool.errors import Kind, ToolError

V2_SHA384_1_5_06 = "cadcf7c1ea5517f15068d920db7043701d224e274975c834477e48dfdcd4fb6fef648eb1065bda0f5e1300d4e3d71841"


def test_intel_fixture_catalog(intel_dir):
    cat = load_catalog(intel_dir)
    assert [str(r.version) for r in cat.releases] == [
        "2.0.05", "2.0.04", "2.0.02", "1.5.13", "1.5.09", "1.5.08", "1.5.06", "1.5.05", "1.5.01"]
    assert all(r.file is not None and r.mapping is not None and r.in_joined_files for r in cat.releases)
    assert all(r.notes == [] for r in cat.releases)  # separate_files agree with the blobs
    # the fixture copy has no strict_compat_versions in any release: an older file, not drift
    assert not any("strict_compat_versions" in w for w in cat.warnings)
    r = cat.get(cat.releases[0].version)
    assert r.to_json()["mapping"]["min_seamldr_versions"] == ["2.0.00"]


def test_mapping_drift_is_reported_not_fatal(tmp_path):
    root = synthetic_catalog(tmp_path / "c", [{"version": "1.5.20", "td_floor": "1.5.01"}])
    entries = [mapping_entry("1.5.20", "1.5.01", ["1.5.00"], None, ["1.5.06"], new_field=1),
               mapping_entry("1.5.21", "1.5.01", ["1.5.00"])]
    write_mapping(root / "mapping_file.json", entries, header={"Version": "1.1", "Extra": "x"}, extra_top=[])
    cat = load_catalog(root)
    text = "\n".join(cat.warnings)
    for needle in ("new_field: unknown key", "Header.Extra: unknown key", "Header.Version", "extra_top",
                   "tdx_feature0: missing in 1"):
        assert needle in text
    r20, r21 = cat.get(cat.releases[1].version), cat.releases[0]
    assert [str(v) for v in r20.mapping.strict_compat_versions] == ["1.5.06"]
    assert r21.file is None and "no file" in r21.notes[0]


@pytest.mark.parametrize("mutate,msg", [
    (lambda p: p.write_text("{not json"), "not valid JSON"),
    (lambda p: p.write_text(json.dumps({"tdx_module_releases": [{"version": "1.5.01"}]})), "required key"),
    (lambda p: p.unlink(), "no mapping_file.json"),
])
def test_unusable_mapping_is_one_error(tmp_path, mutate, msg):
    root = synthetic_catalog(tmp_path / "c", [{"version": "1.5.20"}])
    mutate(root / "mapping_file.json")
    with pytest.raises(ToolError, match=msg) as ei:
        load_catalog(root)
    assert ei.value.kind is Kind.BAD_INPUT and "\n" not in str(ei.value)


def test_not_a_directory(tmp_path):
    with pytest.raises(ToolError, match="not a directory"):
        load_catalog(tmp_path / "nope")


def test_separate_only_and_unmapped_files(tmp_path):
    root = synthetic_catalog(tmp_path / "c", [
        {"version": "1.5.20"},
        {"version": "1.5.21", "separate": True},
        {"version": "1.5.22", "no_mapping": True},
    ])
    cat = load_catalog(root)
    by = {str(r.version): r for r in cat.releases}
    assert by["1.5.21"].file.format == "pair" and not by["1.5.21"].in_joined_files
    assert any("separate_files" in n for n in by["1.5.21"].notes)
    assert by["1.5.22"].mapping is None and "no entry" in by["1.5.22"].notes[0]


def test_misfiled_and_differing_duplicates(tmp_path):
    root = synthetic_catalog(tmp_path / "c", [{"version": "1.5.20"}])
    (root / "joined_files" / "1.5" / "tdx_module_1.5.20.blob").rename(root / "joined_files" / "1.5" / "x.blob")
    (root / "joined_files" / "2.0").mkdir()
    (root / "joined_files" / "2.0" / "tdx_module_1.5.20.blob").write_bytes(testsign.make_blob("1.5.20"))
    d = root / "separate_files" / "1.5" / "1.5.20"
    d.mkdir(parents=True)
    sig, mod = testsign.make_module("1.5.20", pages=3)
    (d / "tdx_module_1.5.20.bin").write_bytes(mod)
    (d / "tdx_module_1.5.20.sigstruct").write_bytes(sig)
    cat = load_catalog(root)
    assert any("filed under 2.0/" in w for w in cat.warnings)
    assert any("differ from the joined blob" in n for n in cat.releases[0].notes)


def test_linked_catalog_with_upstream_mapping(tmp_path, intel_dir):
    cat = load_catalog(linked_intel_catalog(tmp_path / "c", intel_dir))
    assert len(cat.releases) == 9 and all(r.file.format == "v1" for r in cat.releases)


# -- conversion ---------------------------------------------------------------------------------------


def test_convert_intel_blob_to_golden_v2(tmp_path, intel_dir):
    src = intel_dir / "joined_files" / "1.5" / "tdx_module_1.5.06.blob"
    out = tmp_path / "tdx_module_1.5.06.img"
    res = convert_file(src, out)
    data = out.read_bytes()
    assert detect(data) is ImageFormat.V2 and res.sha384 == V2_SHA384_1_5_06
    assert hashlib.sha384(data).hexdigest() == V2_SHA384_1_5_06
    # back to v1 gives Intel's blob byte for byte
    back = convert_file(out, tmp_path / "back.blob", fmt="v1")
    assert (tmp_path / "back.blob").read_bytes() == src.read_bytes() and back.output_format == "v1"
    with pytest.raises(ToolError, match="exists"):
        convert_file(src, out)
    convert_file(src, out, force=True)


def test_convert_pair_and_passthrough(tmp_path, intel_dir):
    pair = intel_dir / "separate_files" / "2.0" / "2.0.04" / "tdx_module_2.0.04.sigstruct"
    res = convert_file(pair, tmp_path / "a.img")
    mf = load_module_file(tmp_path / "a.img")
    assert res.source_format == "pair" and image_for(mf, "v2") == mf.raw  # valid v2 passes through


def test_image_for_parses_again_only_what_load_did_not_check(tmp_path, monkeypatch):
    """A container that passed its strict parse when loaded goes through as is; one whose bytes were
    replaced afterwards is parsed again, and refused if it no longer passes."""
    import tdxseam.tool.convert as convert

    (tmp_path / "m.blob").write_bytes(testsign.make_blob())
    mf = load_module_file(tmp_path / "m.blob")
    assert mf.valid_raw is mf.raw and not mf.issues
    parsed = []
    monkeypatch.setattr(convert, "parse_v1", lambda data: parsed.append(data))
    assert image_for(mf, "v1") is mf.raw and parsed == []
    monkeypatch.undo()
    bad = bytearray(mf.raw)
    bad[0x3000] ^= 1
    mf.raw = bytes(bad)  # no longer the bytes that were checked
    with pytest.raises(ToolError, match="checksum"):
        image_for(mf, "v1", check_only=True)


def test_convert_refuses_damaged_input(tmp_path):
    bad = bytearray(testsign.make_blob())
    bad[0x3000] ^= 1
    (tmp_path / "bad.blob").write_bytes(bytes(bad))
    with pytest.raises(ToolError, match="checksum"):
        convert_file(tmp_path / "bad.blob", tmp_path / "out.img")
    assert not (tmp_path / "out.img").exists()
    with pytest.raises(ToolError) as ei:
        convert_file(tmp_path / "bad.blob", tmp_path / "out.img", fmt="v3")
    assert ei.value.kind is Kind.USAGE
