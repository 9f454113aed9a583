"""Module identity: 2.0 declared version, known Intel releases, synthetic header; release table."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _formats_data import GOLDEN, GOLDEN_BY_VERSION, VERSIONS, parts, synthetic
from tdxseam.formats import testsign
from tdxseam.formats.identity import IdentitySource, module_identity
from tdxseam.formats.releases import KNOWN_RELEASES, RELEASES_BY_VERSION, known_release
from tdxseam.formats.sigstruct import Sigstruct, declared_version_bytes
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
def test_intel_release_identity(intel_dir, version):
    g = GOLDEN_BY_VERSION[version]
    raw, module = parts(intel_dir, version)
    sig = Sigstruct.from_bytes(raw)
    ident = module_identity(sig, module)
    assert ident is not None
    assert str(ident.version) == version and ident.build == g.build
    assert ident.tdx_features0 == g.tdx_feature0
    expected = IdentitySource.SIGSTRUCT if version.startswith("2.0") else IdentitySource.KNOWN_RELEASE
    assert ident.source is expected
    assert ident.seamhash.hex() == g.mrseam and ident.seamsvn == g.seamsvn
    assert (ident.module_hv, ident.min_update_hv, ident.no_downgrade) == (0, 0, 0)
    assert ident.num_handoff_pages == g.handoff_pages
    # without the module bytes the table still identifies it
    assert module_identity(sig) == ident


def test_unknown_1_5_module_is_not_identified(intel_dir):
    raw, module = parts(intel_dir, "1.5.06")
    sig = Sigstruct.from_bytes(raw).replace(seamhash=bytes(48))
    assert module_identity(sig, module) is None


def test_declared_version_wins_over_the_table(intel_dir):
    raw, _ = parts(intel_dir, "1.5.06")
    sig = Sigstruct.from_bytes(raw).replace(reserved3=declared_version_bytes(ModuleVersion(1, 5, 99), 4242))
    ident = module_identity(sig)
    assert ident.source is IdentitySource.SIGSTRUCT
    assert ident.version == ModuleVersion(1, 5, 99) and ident.build == 4242
    assert ident.tdx_features0 == GOLDEN_BY_VERSION["1.5.06"].tdx_feature0  # still known by hash


def test_synthetic_identity_styles():
    s15, m15 = synthetic("1.5.08", "1.5")
    i15 = module_identity(Sigstruct.from_bytes(s15), m15)
    assert i15.source is IdentitySource.SYNTHETIC and str(i15.version) == "1.5.08"
    assert i15.build == 1008 and i15.tdx_features0 == testsign.DEFAULT_FEATURES0
    assert module_identity(Sigstruct.from_bytes(s15)) is None  # header needs the module bytes

    s20, m20 = synthetic("2.0.06", "2.0")
    i20 = module_identity(Sigstruct.from_bytes(s20), m20)
    assert i20.source is IdentitySource.SIGSTRUCT and str(i20.version) == "2.0.06"
    assert i20.tdx_features0 == testsign.DEFAULT_FEATURES0
    bare = module_identity(Sigstruct.from_bytes(s20))
    assert bare.version == i20.version and bare.tdx_features0 is None


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
    sig = Sigstruct.from_bytes(sig_bytes)
    ident = module_identity(sig, module)
    if ident is not None:
        assert ident.seamhash == sig.seamhash


@FUZZ
@given(st.integers(0, SYNTH_HEADER_SIZE - 1), st.integers(0, 255))
def test_fuzz_mutated_synthetic_header(offset, value):
    s, m = synthetic()
    mod = bytearray(m)
    mod[offset] = value
    module_identity(Sigstruct.from_bytes(s), bytes(mod))
    SyntheticHeader.find(bytes(mod))


def test_every_golden_release_is_known():
    assert {g.version for g in GOLDEN} == {str(r.version) for r in KNOWN_RELEASES}
