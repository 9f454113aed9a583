"""mapping_file.json parsing (drift vs breakage) and ModuleVersion."""

from __future__ import annotations

import copy
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _formats_data import GOLDEN
from tdxseam.formats.errors import FormatError, MappingError, VersionError
from tdxseam.formats.mapping import MappingFile, load_mapping, parse_mapping
from tdxseam.formats.version import ModuleVersion

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# spec-formats §10.3 (fixture copy)
FIXTURE_ROWS = {
    "1.5.01": ("1.5.01", ["1.5.00"]),
    "1.5.05": ("1.5.01", ["1.5.00", "2.0.00"]),
    "1.5.06": ("1.5.01", ["1.5.00", "2.0.00"]),
    "1.5.08": ("1.5.01", ["1.5.00", "2.0.00"]),
    "1.5.09": ("1.5.01", ["1.5.00", "2.0.00"]),
    "1.5.13": ("1.5.01", ["1.5.00", "2.0.00"]),
    "2.0.02": ("2.0.02", ["2.0.00"]),
    "2.0.04": ("2.0.04", ["2.0.00"]),
    "2.0.05": ("2.0.04", ["2.0.00"]),
}


def _doc() -> dict:
    return {
        "Header": {"Copyright": "c", "Info": "i", "Version": "1.0"},
        "tdx_module_releases": [
            {"version": "1.5.08", "min_module_version_for_td_preserving": "1.5.01",
             "min_seamldr_versions": ["1.5.00", "2.0.00"], "tdx_feature0": "0x22E1F0FBF",
             "strict_compat_versions": ["1.5.06"]},
            {"version": "2.0.05", "min_module_version_for_td_preserving": "2.0.04",
             "min_seamldr_versions": ["2.0.00"], "tdx_feature0": "0x26F1F0FBF",
             "strict_compat_versions": ["2.0.04"]},
        ],
    }


def _error(doc) -> MappingError:
    with pytest.raises(MappingError) as ei:
        parse_mapping(json.dumps(doc) if not isinstance(doc, (str, bytes)) else doc)
    return ei.value


# -- versions ------------------------------------------------------------------------------------


def test_version_parse_and_format():
    v = ModuleVersion.parse("1.5.08")
    assert v == (1, 5, 8) and str(v) == "1.5.08" and v.major_minor == (1, 5)
    assert str(ModuleVersion(2, 0, 123)) == "2.0.123"
    assert ModuleVersion.parse(" 1.5.8 ") == ModuleVersion(1, 5, 8)


def test_version_order_is_integer_order():
    vs = [ModuleVersion.parse(s) for s in ("1.5.10", "1.5.09", "2.0.00", "1.5.1", "1.10.0")]
    assert [str(v) for v in sorted(vs)] == ["1.5.01", "1.5.09", "1.5.10", "1.10.00", "2.0.00"]
    assert ModuleVersion.parse("1.5.10") > ModuleVersion.parse("1.5.9")


@pytest.mark.parametrize("bad", ["", "1.5", "1.5.8.1", "a.b.c", "1.5.-1", "1.5.0x8", "1.5.70000", "1..5"])
def test_version_parse_errors(bad):
    with pytest.raises(VersionError):
        ModuleVersion.parse(bad)


def test_version_parse_rejects_non_strings():
    with pytest.raises(VersionError):
        ModuleVersion.parse(105)  # type: ignore[arg-type]


# -- the fixture file ------------------------------------------------------------------------------


def test_fixture_mapping(intel_dir):
    m = load_mapping(intel_dir / "mapping_file.json")
    assert isinstance(m, MappingFile) and len(m) == 9
    assert m.header.version == "1.0" and m.header.info
    feature0 = {g.version: g.tdx_feature0 for g in GOLDEN}
    for r in m:
        floor, seamldrs = FIXTURE_ROWS[str(r.version)]
        assert r.min_module_version_for_td_preserving == ModuleVersion.parse(floor)
        assert [str(v) for v in r.min_seamldr_versions] == seamldrs
        assert r.tdx_feature0 == feature0[str(r.version)]
        assert r.tdx_feature0 & 0x2  # td_preserving
        assert r.strict_compat_versions == () and r.extra == {}
    # the fixture copy predates strict_compat_versions (no release has it): no drift to report
    assert m.warnings == ()
    assert m.get("1.5.06") is m.get(ModuleVersion(1, 5, 6)) is not None
    assert m.get("1.5.07") is None


def test_newer_copy_with_strict_compat_versions():
    m = parse_mapping(json.dumps(_doc()))
    assert m.warnings == ()
    r = m.get("2.0.05")
    assert r.strict_compat_versions == (ModuleVersion(2, 0, 4),)
    assert r.tdx_feature0 == 0x26F1F0FBF
    assert parse_mapping(_doc()).releases == m.releases  # a decoded object works too
    assert parse_mapping(json.dumps(_doc()).encode()).releases == m.releases


# -- drift: warnings, never a crash -----------------------------------------------------------------


def test_unknown_keys_are_warnings():
    doc = _doc()
    doc["tdx_module_releases"][0]["update_compat"] = True
    doc["Header"]["Signed"] = "x"
    doc["extras"] = {}
    m = parse_mapping(json.dumps(doc))
    assert m.releases[0].extra == {"update_compat": True}
    text = "\n".join(m.warnings)
    assert "update_compat: unknown key" in text and "1.5.08" in text
    assert "Header.Signed: unknown key" in text and "extras: unknown top-level key" in text


def test_drift_is_said_once_per_kind():
    doc = _doc()
    for r in doc["tdx_module_releases"]:
        r["update_compat"] = True  # a new key in every release: one line, not one per release
        del r["strict_compat_versions"]  # a key no release has: an older file, no warning
    del doc["tdx_module_releases"][0]["tdx_feature0"]  # some have it, one lacks it: drift
    m = parse_mapping(json.dumps(doc))
    assert len([w for w in m.warnings if "update_compat" in w]) == 1
    assert [w for w in m.warnings if "update_compat" in w][0].startswith(
        f"tdx_module_releases[].update_compat: unknown key in {len(doc['tdx_module_releases'])} release(s)")
    assert not any("strict_compat_versions" in w for w in m.warnings)
    assert any(w.startswith("tdx_feature0: missing in 1 release(s)") for w in m.warnings)


def test_missing_optional_keys_are_warnings():
    doc = _doc()
    del doc["tdx_module_releases"][0]["tdx_feature0"]
    del doc["tdx_module_releases"][1]["strict_compat_versions"]
    del doc["Header"]["Copyright"]
    m = parse_mapping(json.dumps(doc))
    assert m.releases[0].tdx_feature0 is None
    assert m.releases[1].strict_compat_versions == ()
    text = "\n".join(m.warnings)
    assert "tdx_feature0: missing in 1 release(s) (1.5.08)" in text
    assert "strict_compat_versions: missing in 1 release(s) (2.0.05); treated as []" in text
    assert "Header.Copyright: missing" in text


def test_other_drift_warnings():
    doc = _doc()
    doc["Header"]["Version"] = "2.0"
    doc["tdx_module_releases"][0]["version"] = "1.5.8"
    doc["tdx_module_releases"][1]["min_seamldr_versions"] = []
    doc["tdx_module_releases"][1]["min_module_version_for_td_preserving"] = "1.5.01"
    m = parse_mapping(json.dumps(doc))
    text = "\n".join(m.warnings)
    assert "Header.Version" in text and "'1.5.8' is not in canonical form '1.5.08'" in text
    assert "no P-SEAMLDR accepts it" in text and "not in 2.0.05's line" in text
    del doc["Header"]
    assert "Header: missing" in parse_mapping(json.dumps(doc)).warnings


# -- breakage: MappingError naming the release and key -----------------------------------------------


@pytest.mark.parametrize("key", ["version", "min_module_version_for_td_preserving", "min_seamldr_versions"])
def test_missing_required_key(key):
    doc = _doc()
    del doc["tdx_module_releases"][1][key]
    err = _error(doc)
    assert err.code == "missing" and key in str(err) and "tdx_module_releases[1]" in str(err)
    if key != "version":
        assert "2.0.05" in str(err)


@pytest.mark.parametrize(("key", "value", "code"), [
    ("version", 105, "type"),
    ("version", "1.5", "value"),
    ("min_module_version_for_td_preserving", None, "type"),
    ("min_seamldr_versions", "1.5.00", "type"),
    ("min_seamldr_versions", ["1.5.00", 2], "type"),
    ("min_seamldr_versions", ["x"], "value"),
    ("tdx_feature0", 0xF0FBF, "type"),
    ("tdx_feature0", "F0FBF", "value"),
    ("tdx_feature0", "0xZZ", "value"),
    ("strict_compat_versions", {}, "type"),
    ("strict_compat_versions", ["2.0"], "value"),
])
def test_wrong_types_and_values(key, value, code):
    doc = _doc()
    doc["tdx_module_releases"][0][key] = value
    err = _error(doc)
    assert err.code == code and key in str(err) and "tdx_module_releases[0]" in str(err)


def test_structural_errors():
    assert _error("{not json").code == "json"
    assert _error(b"\xff\xfe").code == "json"
    assert _error([]).code == "type"
    assert _error({"Header": {}}).code == "missing"
    assert _error({"tdx_module_releases": {}}).code == "type"
    assert _error({"tdx_module_releases": [1]}).code == "type"
    assert _error({"Header": [], "tdx_module_releases": []}).code == "type"
    assert _error({"Header": {"Version": 1}, "tdx_module_releases": []}).code == "type"
    doc = _doc()
    doc["tdx_module_releases"].append(copy.deepcopy(doc["tdx_module_releases"][0]))
    assert _error(doc).code == "duplicate"
    assert _error("[" * 100000).code == "json"


def test_load_mapping_missing_file(tmp_path):
    with pytest.raises(MappingError) as ei:
        load_mapping(tmp_path / "nope.json")
    assert ei.value.code == "io"


# -- fuzz ----------------------------------------------------------------------------------------

_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=12)
    | st.sampled_from(["1.5.08", "0xF0FBF", "2.0.00", "1.5"]),
    lambda children: st.lists(children, max_size=4)
    | st.dictionaries(st.sampled_from(["version", "min_module_version_for_td_preserving",
                                       "min_seamldr_versions", "tdx_feature0", "strict_compat_versions",
                                       "Header", "tdx_module_releases", "Version", "x"]), children, max_size=6),
    max_leaves=30,
)


def _parse(data) -> None:
    try:
        parse_mapping(data)
    except FormatError:
        pass


@FUZZ
@given(st.one_of(st.text(max_size=200), st.binary(max_size=200)))
def test_fuzz_random_text(data):
    _parse(data)


@FUZZ
@given(_json)
def test_fuzz_random_json(doc):
    _parse(json.dumps(doc))


@FUZZ
@given(st.integers(0, 1), st.sampled_from(["version", "min_module_version_for_td_preserving",
                                           "min_seamldr_versions", "tdx_feature0",
                                           "strict_compat_versions", "new"]), _json)
def test_fuzz_mutated_valid_document(index, key, value):
    doc = _doc()
    doc["tdx_module_releases"][index][key] = value
    _parse(json.dumps(doc))
