"""Deterministic test key and synthetic modules: valid, verifiable, refused by the Intel pin."""

from __future__ import annotations

import hashlib

import pytest

from tdxseam.formats import image as I
from tdxseam.formats import testsign
from tdxseam.formats.identity import Source, resolve_identity
from tdxseam.formats.sigstruct import (
    INTEL_KEY_HASH,
    Sigstruct,
    check_sigstruct,
    key_hash_from_pem,
    verify_signature,
)
from tdxseam.formats.status import SeamldrStatus
from tdxseam.formats.synthetic import SYNTH_HEADER_SIZE, SYNTH_MAGIC, SyntheticHeader
from tdxseam.formats.version import ModuleVersion


def test_key_is_deterministic_and_cached():
    k = testsign.signing_key()
    assert k is testsign.signing_key(testsign.DEFAULT_SEED)
    assert k.n.bit_length() == 3072 and k.e == 65537
    assert k.p != k.q and k.p * k.q == k.n
    nums = k.private_key.private_numbers()
    assert (nums.p * nums.q, nums.public_numbers.n) == (k.n, k.n)
    # a fresh derivation (bypassing the cache) gives the same primes
    fresh = testsign._derive.__wrapped__(testsign.DEFAULT_SEED)
    assert (fresh.p, fresh.q) == (k.p, k.q)


def test_distinct_seeds_give_distinct_keys():
    a, b = testsign.signing_key(), testsign.signing_key(testsign.OTHER_SEED)
    assert a.n != b.n and a.key_hash != b.key_hash
    assert testsign._seed_bytes("x") == b"x" and testsign._seed_bytes(7) != testsign._seed_bytes("7")


def test_public_pem_pins_the_same_hash():
    k = testsign.signing_key()
    pem = testsign.public_key_pem(k)
    assert pem.startswith(b"-----BEGIN PUBLIC KEY-----")
    assert key_hash_from_pem(pem) == k.key_hash != INTEL_KEY_HASH


def test_miller_rabin_and_prime_search():
    assert testsign._miller_rabin(2**127 - 1, (2, 3, 5))
    assert not testsign._miller_rabin(561, (2,))  # Carmichael number
    assert not testsign._miller_rabin((2**61 - 1) * (2**89 - 1), (2, 3))
    p = testsign._prime(256, testsign._stream(b"t", b"p"))
    assert p.bit_length() == 256 and p >> 254 == 3 and (p - 1) % 65537
    assert testsign._small_primes(30) == (3, 5, 7, 11, 13, 17, 19, 23, 29)


@pytest.mark.parametrize("style", ["1.5", "2.0"])
def test_synthetic_module_is_valid_for_the_test_key(style):
    version = ModuleVersion(1, 5, 9) if style == "1.5" else ModuleVersion(2, 0, 7)
    raw, module = testsign.make_module(version, style=style, pages=3)
    sig = Sigstruct.from_bytes(raw)
    assert sig.to_bytes() == raw
    assert len(module) == 3 * 4096
    assert sig.seamhash == hashlib.sha384(module).digest()
    assert verify_signature(sig)
    is20 = style == "2.0"
    trusted = [testsign.signing_key().key_hash]
    assert check_sigstruct(sig, module_size=len(module), trusted_key_hashes=trusted,
                           platform_cpuids=[0x806F8, 0xA06D3], allow_reserved3=is20) == []
    # the Intel pin refuses it
    refused = check_sigstruct(sig, module_size=len(module), allow_reserved3=is20)
    assert [p.code for p in refused] == ["key_hash"] and refused[0].status == SeamldrStatus.EBADSIG
    # the identity comes back
    ident = resolve_identity(sig, module)
    assert ident is not None and ident.version == version
    assert ident.source is (Source.SIGSTRUCT if is20 else Source.SYNTHETIC)
    assert ident.build == 1000 + version.update
    assert ident.tdx_features0 == testsign.DEFAULT_FEATURES0
    # fields a loader reads are plausible and consistent
    assert sig.major_svn == version.major and sig.minor_svn == version.update
    assert sig.cpuids == testsign.DEFAULT_CPUIDS
    assert sig.gdt_idt_offset == 2 * 4096 and sig.fault_wrapper_offset == 0x100
    assert sig.rip_offset == SYNTH_HEADER_SIZE
    assert (sig.num_global_data_pages, sig.num_handoff_pages) == ((33, 24) if is20 else (21, 13))
    assert sig.date == 0x20250101 and not sig.is_debug
    dv = sig.declared_version
    if is20:
        assert dv is not None and dv.version == version and dv.build == 1000 + version.update
    else:
        assert dv is None and not any(sig.reserved3)


def test_synthetic_module_options():
    key = testsign.signing_key(testsign.OTHER_SEED)
    raw, module = testsign.make_module(
        "1.5.20", svn=(2, 30), cpuids=[0xA06D0], debug=True, pages=1, key=key, features0=0x3,
        module_hv=2, min_update_hv=1, no_downgrade=1, num_handoff_pages=5, build=1234,
        date=20240102, seed="filler",
    )
    sig = Sigstruct.from_bytes(raw)
    assert sig.key_hash == key.key_hash and verify_signature(sig)
    assert sig.seamsvn == 0x021E and sig.cpuids == (0xA06D0,) and sig.is_debug
    assert (sig.module_hv, sig.min_update_hv, sig.no_downgrade, sig.num_handoff_pages) == (2, 1, 1, 5)
    assert sig.gdt_idt_offset == 0 and sig.fault_wrapper_offset == 0  # one page: no GDT/IDT
    assert sig.date == 0x20240102
    assert check_sigstruct(sig, module_size=4096, trusted_key_hashes=[key.key_hash],
                           debug_unlocked=True) == []
    hdr = SyntheticHeader.find(module)
    assert hdr is not None and module.startswith(SYNTH_MAGIC)
    assert (hdr.version, hdr.build_num, hdr.build_date, hdr.tdx_features0) == (
        ModuleVersion(1, 5, 20), 1234, 20240102, 0x3)
    assert (hdr.module_hv, hdr.min_update_hv, hdr.no_downgrade, hdr.style, hdr.num_handoff_pages) == (
        2, 1, 1, 15, 5)


def test_synthetic_modules_are_deterministic_and_distinct():
    a = testsign.make_module("1.5.08")
    assert a == testsign.make_module("1.5.08")
    assert a[1] != testsign.make_module("1.5.09")[1]
    assert a[1] != testsign.make_module("1.5.08", cpuids=[0x806F8])[1]
    assert a[1][SYNTH_HEADER_SIZE:] != testsign.make_module("1.5.08", seed="other")[1][SYNTH_HEADER_SIZE:]


def test_sign_sigstruct_accepts_bytes_and_replaces_the_key():
    raw, _ = testsign.make_module("1.5.08")
    other = testsign.signing_key(testsign.OTHER_SEED)
    resigned = testsign.sign_sigstruct(raw, other)
    assert resigned.key_hash == other.key_hash and verify_signature(resigned)
    assert resigned.signed_message == Sigstruct.from_bytes(raw).signed_message


def test_images_of_synthetic_modules():
    v2 = testsign.make_image("2.0.07", style="2.0", pages=2)
    v1 = testsign.make_blob("2.0.07", style="2.0", pages=2)
    assert I.kernel_check_v2(v2) is None and I.v1_to_v2(v1) == v2
    ex = I.extract(v2)
    ident = resolve_identity(Sigstruct.from_bytes(ex.sigstruct), ex.module)
    assert ident is not None and str(ident.version) == "2.0.07"


@pytest.mark.parametrize("kwargs", [
    {"pages": 0}, {"pages": 497}, {"style": "3.0"}, {"svn": (256, 0)}, {"cpuids": range(256)},
])
def test_make_module_rejects_bad_arguments(kwargs):
    with pytest.raises(ValueError):
        testsign.make_module("1.5.08", **kwargs)
