"""Module identity from the files: sources, conflicts, unknown versions; build constants; release data."""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _formats_data import GOLDEN, GOLDEN_BY_VERSION, VERSIONS, parts, synthetic
from tdxseam.formats import testsign
from _releases import forget_releases
from tdxseam.formats.buildinfo import (
    FORM_IMMEDIATES,
    FORM_TEXT,
    find_build_constants,
    find_immediates,
    find_rodata,
    immediates_code,
)
from tdxseam.formats.errors import FormatError
from tdxseam.formats.identity import IdentityError, Source, resolve_identity
from tdxseam.formats.mapping import load_mapping, parse_mapping
from tdxseam.formats.releases import KNOWN_RELEASES, RELEASES_BY_VERSION, known_release
from tdxseam.formats.sigstruct import Sigstruct
from tdxseam.formats.synthetic import SYNTH_HEADER_SIZE, SyntheticHeader
from tdxseam.formats.version import ModuleVersion

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def test_known_release_table_matches_the_spec():
    assert [str(r.version) for r in KNOWN_RELEASES] == VERSIONS
    for r in KNOWN_RELEASES:
        g = GOLDEN_BY_VERSION[str(r.version)]
        assert r.mrseam.hex() == g.mrseam and len(r.mrseam) == 48
        assert (r.build, r.tdx_features0, r.seamsvn, r.date) == (g.build, g.tdx_feature0, g.seamsvn, g.date)
        assert r.module_pages * 4096 == g.bin_size
        assert known_release(r.mrseam) is r is RELEASES_BY_VERSION[r.version]
    assert known_release(bytes(48)) is None


@pytest.mark.parametrize("version", VERSIONS)
def test_intel_release_identity_from_its_files(intel_dir, version, monkeypatch):
    """Each release is identified from its bytes, file name and mapping row: the same with the
    release data table emptied, where every build is found in the TDH.SYS.INFO immediates."""
    g = GOLDEN_BY_VERSION[version]
    raw, module = parts(intel_dir, version)
    sig = Sigstruct.from_bytes(raw)
    mapping = load_mapping(intel_dir / "mapping_file.json")
    name = f"tdx_module_{version}.blob"
    known = resolve_identity(sig, module, name=name, mapping=mapping)
    forget_releases(monkeypatch)
    ident = resolve_identity(sig, module, name=name, mapping=mapping)
    assert ident == known
    assert str(ident.version) == version and ident.build == g.build
    assert ident.build_date == int(f"{g.date:x}")  # the build date is the signing date for all nine
    assert ident.tdx_features0 == g.tdx_feature0 and ident.source_of("tdx_features0") is Source.MAPPING
    assert ident.binary_form == FORM_IMMEDIATES
    assert ident.source_of("build_num") is (Source.SIGSTRUCT if version.startswith("2.0") else Source.BINARY)
    assert ident.source_of("update") is (Source.SIGSTRUCT if version.startswith("2.0") else Source.FILE_NAME)
    assert ident.seamhash.hex() == g.mrseam and ident.seamsvn == g.seamsvn
    assert (ident.module_hv, ident.min_update_hv, ident.no_downgrade) == (0, 0, 0)
    assert ident.num_handoff_pages == g.handoff_pages
    if version.startswith("1.5"):
        assert ident.describe() == (f"{version} build {g.build} ({ident.date_text}): build constants from the "
                                    "binary (the TDH.SYS.INFO immediates), update number from the file name, "
                                    "TDX_FEATURES0 from the mapping file")
        # renamed: nothing states the update number, and the error says what supplies it
        with pytest.raises(IdentityError, match="--module-version 1.5.NN") as exc:
            resolve_identity(sig, module, name="module.blob", what="module.blob")
        assert exc.value.code == "unknown" and str(exc.value).startswith("module.blob: ")
        assert resolve_identity(sig, module, option=ident.version).version == ident.version
    else:
        assert resolve_identity(sig, module, name="module.blob").version == ident.version


@pytest.mark.parametrize("version", VERSIONS)
def test_build_constants_of_every_release(intel_dir, version):
    g = GOLDEN_BY_VERSION[version]
    _raw, module = parts(intel_dir, version)
    imm, ro = find_immediates(module), find_rodata(module)
    assert len(imm) == 1 and ro == []  # every release here uses the immediates form
    c = find_build_constants(module)
    assert (c.major, c.minor, c.build_num, c.form) == (int(version[0]), int(version[2]), g.build, FORM_IMMEDIATES)


def test_a_file_named_for_another_release(intel_dir, monkeypatch):
    raw, module = parts(intel_dir, "1.5.08")
    sig = Sigstruct.from_bytes(raw)
    # 1.5: the binary says build 784; Intel's data says this MRSEAM is 1.5.08
    with pytest.raises(IdentityError, match="release data says this MRSEAM is 1.5.08 build 784") as exc:
        resolve_identity(sig, module, name="tdx_module_1.5.09.blob", what="tdx_module_1.5.09.blob")
    assert exc.value.code == "conflict"
    # 2.0: the sigstruct itself says which release it is; no table needed
    forget_releases(monkeypatch)
    raw, module = parts(intel_dir, "2.0.04")
    with pytest.raises(IdentityError, match="the sigstruct says 2.0.04 build 859, the file name says 2.0.05"):
        resolve_identity(Sigstruct.from_bytes(raw), module, name="tdx_module_2.0.05.blob")
    with pytest.raises(IdentityError, match="--module-version says 2.0.05"):
        resolve_identity(Sigstruct.from_bytes(raw), module, option=ModuleVersion(2, 0, 5))


def test_an_intel_signed_file_that_contradicts_the_release_data(intel_dir):
    """Named 1.5.13 but its binary says build 869 where 1.5.13 is build 864: refused. (A test
    module carrying Intel's modulus: identity reads the key, the signature is not its business.)"""
    raw, _ = parts(intel_dir, "1.5.13")
    intel_modulus = Sigstruct.from_bytes(raw).modulus
    s, m = testsign.make_module("1.5.16", build=869, date=20250219, identity="immediates")
    sig = Sigstruct.from_bytes(s).replace(modulus=intel_modulus)
    with pytest.raises(IdentityError, match="says 1.5.13 is build 864"):
        resolve_identity(sig, m, name="tdx_module_1.5.13.blob")
    # a release the data does not list is fine
    ident = resolve_identity(sig, m, name="tdx_module_1.5.16.blob")
    assert ident.describe() == ("1.5.16 build 869 (2025-02-19): build constants from the binary (the "
                                "TDH.SYS.INFO immediates), update number from the file name")


@pytest.mark.parametrize("form", ["immediates", "rodata"])
def test_both_forms_of_build_constants(form):
    s, m = testsign.make_module("1.5.16", build=869, date=20250219, identity=form)
    c = find_build_constants(m)
    assert (c.major, c.minor, c.build_num, c.build_date, c.form) == (1, 5, 869, 20250219, form)
    ident = resolve_identity(Sigstruct.from_bytes(s), m, name="tdx_module_1.5.16.bin")
    assert ident.binary_form == form and FORM_TEXT[form] in ident.describe()
    assert ident.to_json()["sources"] == {"major": "binary", "minor": "binary", "update": "file-name",
                                          "build_num": "binary", "build_date": "binary"}


def test_two_different_build_constants_are_an_error():
    _s, m = testsign.make_module("1.5.16", build=869, date=20250219, identity="rodata")
    extra = immediates_code(20250219, 870, 5, 1)
    m = m[:0x100] + extra + m[0x100 + len(extra):]
    with pytest.raises(FormatError, match="two different build constants"):
        find_build_constants(m)


def test_a_binary_with_nothing_findable():
    s, m = testsign.make_module("1.5.16", identity="none")
    assert find_build_constants(m) is None
    with pytest.raises(IdentityError, match="version unknown.*--module-version X.Y.Z"):
        resolve_identity(Sigstruct.from_bytes(s), m, name="module.bin")
    with pytest.raises(IdentityError) as e:
        resolve_identity(Sigstruct.from_bytes(s), m)
    assert e.value.code == "unknown"
    ident = resolve_identity(Sigstruct.from_bytes(s), m, option=ModuleVersion(1, 5, 16))
    assert ident.describe() == "1.5.16: version from --module-version"


class FakeFirmware:
    """What a real-firmware engine reports (the interface of seam.real.probe)."""

    def __init__(self, version="1.5.16", build=869, date=20250219, features=0x226F1F0FBF, ok=True, error=None):
        v = ModuleVersion.parse(version)
        self.version, self.major, self.minor, self.update = str(v), v.major, v.minor, v.update
        self.internal, self.build_num, self.build_date, self.tdx_features0 = 0, build, date, features
        self.ok, self.error = ok, error


def test_the_module_s_own_answers_come_first():
    s, m = testsign.make_module("1.5.16", build=869, date=20250219, identity="immediates")
    sig = Sigstruct.from_bytes(s)
    ident = resolve_identity(sig, m, name="module.blob", firmware=FakeFirmware())
    assert ident.source is Source.FIRMWARE and ident.tdx_features0 == 0x226F1F0FBF
    assert ident.describe().endswith(": identity from the module's own TDH.SYS.RD answers")
    with pytest.raises(IdentityError, match="TDH.SYS.RD answers say 1.5.16 build 869, the file name says 1.5.13"):
        resolve_identity(sig, m, name="tdx_module_1.5.13.blob", firmware=FakeFirmware())
    with pytest.raises(IdentityError, match="build number: .* say 1.5.16 build 870, the binary says 1.5 build 869"):
        resolve_identity(sig, m, firmware=FakeFirmware(build=870))
    failed = resolve_identity(sig, m, name="tdx_module_1.5.16.blob", firmware=FakeFirmware(ok=False, error="boom"))
    assert failed.source is Source.BINARY and "could not run it: boom" in failed.notes[0]


def test_mapping_features_never_override_a_better_source():
    s, m = synthetic("1.5.08", "1.5")
    doc = {"Header": {"Version": "1.0"}, "tdx_module_releases": [
        {"version": "1.5.08", "min_module_version_for_td_preserving": "1.5.01",
         "min_seamldr_versions": ["1.5.00"], "tdx_feature0": "0x3"}]}
    mapping = parse_mapping(json.dumps(doc))
    ident = resolve_identity(Sigstruct.from_bytes(s), m, mapping=mapping)
    assert ident.tdx_features0 == testsign.DEFAULT_FEATURES0 and ident.source_of("tdx_features0") is Source.SYNTHETIC


def test_synthetic_identity_styles():
    s15, m15 = synthetic("1.5.08", "1.5")
    i15 = resolve_identity(Sigstruct.from_bytes(s15), m15)
    assert i15.source is Source.SYNTHETIC and str(i15.version) == "1.5.08"
    assert i15.build == 1008 and i15.tdx_features0 == testsign.DEFAULT_FEATURES0
    with pytest.raises(IdentityError):  # the header needs the module bytes
        resolve_identity(Sigstruct.from_bytes(s15))

    s20, m20 = synthetic("2.0.06", "2.0")
    i20 = resolve_identity(Sigstruct.from_bytes(s20), m20)
    assert i20.source is Source.SIGSTRUCT and str(i20.version) == "2.0.06"
    assert i20.tdx_features0 == testsign.DEFAULT_FEATURES0
    bare = resolve_identity(Sigstruct.from_bytes(s20))
    assert bare.version == i20.version and bare.tdx_features0 is None and bare.source is Source.SIGSTRUCT


def test_synthetic_header_round_trip_and_rejects():
    h = SyntheticHeader(ModuleVersion(2, 0, 3), 77, 20240101, 0x1F, 1, 0, 1, 20, 24)
    raw = h.to_bytes()
    assert len(raw) == SYNTH_HEADER_SIZE and SyntheticHeader.find(raw + b"rest") == h
    assert SyntheticHeader.find(raw[:63]) is None
    assert SyntheticHeader.find(b"\x7fELF" + raw[4:]) is None
    assert SyntheticHeader.find(raw[:16] + b"\x02\x00" + raw[18:]) is None  # unknown header version


@FUZZ
@given(st.binary(min_size=2048, max_size=2048), st.one_of(st.none(), st.binary(max_size=128)))
def test_fuzz_identity_never_raises(sig_bytes, module):
    """Arbitrary bytes: an identity, or the one named error saying the version is unknown."""
    sig = Sigstruct.from_bytes(sig_bytes)
    ident = _identity_or_unknown(sig, module)
    if ident is not None:
        assert ident.seamhash == sig.seamhash


def _identity_or_unknown(sig: Sigstruct, module: bytes | None):
    try:
        return resolve_identity(sig, module)
    except IdentityError as e:
        assert e.code == "unknown", e
        return None


@FUZZ
@given(st.integers(0, SYNTH_HEADER_SIZE - 1), st.integers(0, 255))
def test_fuzz_mutated_synthetic_header(offset, value):
    s, m = synthetic()
    mod = bytearray(m)
    mod[offset] = value
    _identity_or_unknown(Sigstruct.from_bytes(s), bytes(mod))
    SyntheticHeader.find(bytes(mod))


def test_every_golden_release_is_known():
    assert {g.version for g in GOLDEN} == {str(r.version) for r in KNOWN_RELEASES}


@FUZZ
@given(st.binary(max_size=600), st.integers(0, 0x200), st.binary(min_size=10, max_size=10))
def test_fuzz_build_constants_never_crash(body, at, record):
    """Arbitrary bytes, an ELF header with arbitrary section tables, a record planted anywhere:
    the finder answers or raises FormatError, nothing else."""
    elf = b"\x7fELF\x02\x01\x01" + body
    for data in (body, elf, elf[:at] + record + elf[at:], elf[:at] + immediates_code(20250219, 869, 5, 1) + elf[at:]):
        try:
            find_build_constants(data)
        except FormatError as exc:
            assert exc.code == "build_constants"
