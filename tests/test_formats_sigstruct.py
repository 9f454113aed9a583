"""SEAM sigstruct: layout, signature, measurement and the P-SEAMLDR's ordered checks."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _formats_data import (
    GOLDEN,
    GOLDEN_BY_VERSION,
    INTEL_KEY_HASH_HEX,
    VERSIONS,
    flip,
    parts,
    synthetic,
)
from tdxseam.formats import measure, page, testsign
from tdxseam.formats.errors import FormatError, SigstructError
from tdxseam.formats.sigstruct import (
    CHECK_CODES,
    FIELD_OFFSETS,
    INTEL_KEY_HASH,
    MODULE_TYPE_DEBUG,
    SIGNED_MESSAGE_SIZE,
    Sigstruct,
    check_sigstruct,
    first_status,
    key_hash_from_pem,
    verify_signature,
)
from tdxseam.formats.status import SeamldrStatus
from tdxseam.formats.version import ModuleVersion

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _sig(version: str = "1.5.08", style: str = "1.5") -> tuple[Sigstruct, bytes]:
    s, m = synthetic(version, style)
    return Sigstruct.from_bytes(s), m


def _trust() -> list[bytes]:
    return [testsign.signing_key().key_hash]


# -- layout -----------------------------------------------------------------------------------


def test_field_offsets_match_the_layout_table():
    expected = {
        "header_type": 0x000, "header_length": 0x004, "header_version": 0x008, "module_type": 0x00C,
        "module_vendor": 0x010, "date": 0x014, "size": 0x018, "key_size": 0x01C,
        "modulus_size": 0x020, "exponent_size": 0x024, "reserved0": 0x028, "modulus": 0x080,
        "exponent": 0x200, "signature": 0x204, "seamhash": 0x384, "seamsvn": 0x3B4,
        "attributes": 0x3B6, "rip_offset": 0x3BE, "num_stack_pages": 0x3C2, "num_tls_pages": 0x3C3,
        "num_keyhole_pages": 0x3C4, "num_global_data_pages": 0x3C6, "max_tdmrs": 0x3C8,
        "max_rsvd_per_tdmr": 0x3CA, "pamt_entry_size_4k": 0x3CC, "pamt_entry_size_2m": 0x3CE,
        "pamt_entry_size_1g": 0x3D0, "reserved1": 0x3D2, "module_hv": 0x3D8, "min_update_hv": 0x3DA,
        "no_downgrade": 0x3DC, "reserved2": 0x3DD, "num_handoff_pages": 0x3DE,
        "gdt_idt_offset": 0x3E0, "fault_wrapper_offset": 0x3E4, "reserved3": 0x3E8,
        "cpuid_table_size": 0x400, "cpuid_table": 0x404,
    }
    assert FIELD_OFFSETS == expected


def test_every_field_reads_from_its_offset():
    """Write a distinct value at each offset of a zero sigstruct and read it back by name."""
    raw = bytearray(2048)
    raw[0x00C:0x010] = (0x80000000).to_bytes(4, "little")
    raw[0x014:0x018] = (0x20250101).to_bytes(4, "little")
    raw[0x3B4:0x3B6] = (0x0307).to_bytes(2, "little")
    raw[0x3B6:0x3BE] = (0x1122334455667788).to_bytes(8, "little")
    raw[0x3C2] = 5
    raw[0x3C3] = 6
    raw[0x3DC] = 1
    raw[0x3DD] = 9
    raw[0x3DE:0x3E0] = (24).to_bytes(2, "little")
    raw[0x3E8:0x3F0] = bytes.fromhex("0200000212030000")
    raw[0x400:0x404] = (2).to_bytes(4, "little")
    raw[0x404:0x408] = (0xA06D0).to_bytes(4, "little")
    raw[0x7FC:0x800] = (0xDEADBEEF).to_bytes(4, "little")
    sig = Sigstruct.from_bytes(bytes(raw))
    assert sig.is_debug and sig.date == 0x20250101 and sig.date_text == "2025-01-01"
    assert (sig.major_svn, sig.minor_svn) == (3, 7)
    assert sig.attributes == 0x1122334455667788
    assert (sig.num_stack_pages, sig.num_tls_pages, sig.no_downgrade) == (5, 6, 1)
    assert sig.reserved2 == b"\x09" and sig.num_handoff_pages == 24
    assert sig.cpuid_table_size == 2 and sig.cpuids == (0xA06D0, 0)
    assert sig.cpuid_table[254] == 0xDEADBEEF
    dv = sig.declared_version
    assert dv is not None and dv.version == ModuleVersion(2, 0, 2) and dv.build == 786 and dv.unknown == 0
    assert sig.to_bytes() == bytes(raw)


def test_wrong_length_is_a_sigstruct_error():
    for n in (0, 2047, 2049, 4096):
        with pytest.raises(SigstructError) as ei:
            Sigstruct.from_bytes(bytes(n))
        assert ei.value.code == "length" and "2048" in str(ei.value)


def test_to_bytes_rejects_out_of_range_values():
    sig, _ = _sig()
    with pytest.raises(SigstructError):
        sig.replace(seamsvn=0x10000).to_bytes()
    with pytest.raises(SigstructError):
        sig.replace(cpuid_table=(1, 2)).to_bytes()


def test_signed_message_omits_key_and_signature():
    sig, _ = _sig()
    raw = sig.to_bytes()
    assert len(sig.signed_message) == SIGNED_MESSAGE_SIZE == 1276
    assert sig.signed_message == raw[:0x80] + raw[0x384:]


def test_intel_key_hash_constant():
    assert INTEL_KEY_HASH.hex() == INTEL_KEY_HASH_HEX


# -- real Intel releases ----------------------------------------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_intel_release_parses_and_verifies(intel_dir, version):
    g = GOLDEN_BY_VERSION[version]
    raw, module = parts(intel_dir, version)
    sig = Sigstruct.from_bytes(raw)
    assert sig.to_bytes() == raw
    assert sig.key_hash == INTEL_KEY_HASH
    assert sig.modulus_int.bit_length() == 3072 and sig.exponent == 65537
    assert verify_signature(sig)
    # SEAMHASH = SHA-384(.bin) = published MRSEAM
    assert len(module) == g.bin_size and len(module) % 4096 == 0
    assert sig.seamhash == hashlib.sha384(module).digest() == bytes.fromhex(g.mrseam)
    assert measure.seamhash(module) == sig.seamhash
    assert measure.check_seamhash(sig, module) is None
    # every tabulated field
    assert sig.module_type == 0 and not sig.is_debug
    assert sig.date == g.date and sig.seamsvn == g.seamsvn
    assert sig.cpuids == g.cpuids
    assert (sig.rip_offset, sig.gdt_idt_offset, sig.fault_wrapper_offset) == (
        g.rip_offset, g.gdt_idt_offset, g.fault_wrapper_offset)
    assert sig.num_global_data_pages == g.global_data_pages
    assert sig.num_handoff_pages == g.handoff_pages
    assert (sig.num_stack_pages, sig.num_tls_pages, sig.num_keyhole_pages) == (1, 1, 127)
    assert (sig.module_hv, sig.min_update_hv, sig.no_downgrade) == (0, 0, 0)
    assert sig.reserved3[:8].hex() == g.reserved3_head and not any(sig.reserved3[8:])
    is20 = version.startswith("2.0")
    problems = check_sigstruct(sig, module_size=len(module), platform_cpuids=[g.cpuids[-1] | 3],
                               allow_reserved3=is20)
    assert problems == []
    if is20:
        dv = sig.declared_version
        assert dv is not None and str(dv.version) == version and dv.build == g.build
        assert dv.unknown == (8 if version == "2.0.04" else 0)
        # a 1.5 P-SEAMLDR refuses 2.0 modules because of reserved3
        refused = check_sigstruct(sig, module_size=len(module))
        assert [p.code for p in refused] == ["reserved3"]
        assert first_status(refused) == SeamldrStatus.EBADSIG
    else:
        assert sig.declared_version is None


@pytest.mark.parametrize("offset", [0x14, 0x50, 0x3B4, 0x404, 0x7FF])
def test_single_bit_flip_in_signed_range_breaks_signature(intel_dir, offset):
    raw, module = parts(intel_dir, "1.5.06")
    for bit in (0, 7):
        sig = Sigstruct.from_bytes(flip(raw, offset, bit))
        assert not verify_signature(sig)
        codes = [p.code for p in check_sigstruct(sig, module_size=len(module))]
        assert codes[-1] == "signature"


def test_flipped_modulus_fails_key_pin_and_signature(intel_dir):
    raw, module = parts(intel_dir, "1.5.06")
    sig = Sigstruct.from_bytes(flip(raw, 0x100))
    codes = [p.code for p in check_sigstruct(sig, module_size=len(module))]
    assert codes == ["key_hash", "signature"]


def test_flipped_signature_fails_only_signature(intel_dir):
    raw, module = parts(intel_dir, "1.5.06")
    sig = Sigstruct.from_bytes(flip(raw, 0x300))
    assert [p.code for p in check_sigstruct(sig, module_size=len(module))] == ["signature"]


def test_unsigned_exponent_is_still_checked(intel_dir):
    raw, module = parts(intel_dir, "1.5.06")
    sig = Sigstruct.from_bytes(raw).replace(exponent=3)
    assert [p.code for p in check_sigstruct(sig, module_size=len(module))] == ["exponent"]


def test_flipped_module_bit_fails_seamhash(intel_dir):
    raw, module = parts(intel_dir, "2.0.04")
    sig = Sigstruct.from_bytes(raw)
    for off in (0, len(module) // 2, len(module) - 1):
        p = measure.check_seamhash(sig, flip(module, off))
        assert p is not None and p.code == "seamhash" and p.status == SeamldrStatus.EBADHASH


def test_signature_pitfalls_do_not_verify(intel_dir):
    """The wrong recipes of spec-formats §2 must fail, or our verifier is too lax."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicNumbers
    from cryptography.hazmat.primitives.hashes import SHA256, SHA384

    raw, _ = parts(intel_dir, "1.5.01")
    sig = Sigstruct.from_bytes(raw)
    n_le, s_le = sig.modulus_int, sig.signature_int
    n_be = int.from_bytes(sig.modulus, "big")
    zeroed = raw[:0x80] + bytes(772) + raw[0x384:]
    attempts = [
        (n_le, s_le.to_bytes(384, "big"), raw, SHA384()),  # hashing all 2048 bytes
        (n_le, s_le.to_bytes(384, "big"), zeroed, SHA384()),  # zeroing instead of omitting
        (n_le, s_le.to_bytes(384, "big"), sig.signed_message, SHA256()),  # SHA-256
    ]
    if n_be.bit_length() == 3072:
        attempts.append((n_be, sig.signature, sig.signed_message, SHA384()))  # big-endian
    for n, s, msg, h in attempts:
        with pytest.raises((InvalidSignature, ValueError)):
            RSAPublicNumbers(65537, n).public_key().verify(s, msg, PKCS1v15(), h)
    assert verify_signature(sig)


# -- every check, one at a time, on a synthetic module signed with the test key ---------------

MS = 4 * 4096  # synthetic module size used below


def _resign(sig: Sigstruct, **changes) -> Sigstruct:
    return testsign.sign_sigstruct(sig.replace(**changes))


def _case_mutation(code: str):
    """(sigstruct, check kwargs) that break exactly the check named `code`."""
    sig, _ = _sig()
    kw: dict = {"module_size": MS, "trusted_key_hashes": _trust()}
    r = _resign
    cases = {
        "reserved0": lambda: (r(sig, reserved0=b"\1" + bytes(87)), {}),
        "reserved1": lambda: (r(sig, reserved1=bytes(5) + b"\1"), {}),
        "reserved2": lambda: (r(sig, reserved2=b"\x80"), {}),
        "reserved3": lambda: (r(sig, reserved3=bytes(23) + b"\1"), {}),
        "header_type": lambda: (r(sig, header_type=7), {}),
        "header_length": lambda: (r(sig, header_length=0xE0), {}),
        "header_version": lambda: (r(sig, header_version=0x20000), {}),
        "key_size": lambda: (r(sig, key_size=0x40), {}),
        "modulus_size": lambda: (r(sig, modulus_size=0x40), {}),
        "exponent_size": lambda: (r(sig, exponent_size=2), {}),
        "module_vendor": lambda: (r(sig, module_vendor=0x8087), {}),
        "module_type": lambda: (r(sig, module_type=1), {}),
        "attributes": lambda: (r(sig, attributes=1 << 63), {}),
        "size": lambda: (r(sig, size=0x800), {}),
        "cpuid_table_size": lambda: (r(sig, cpuid_table_size=256), {}),
        # the exponent is outside the signed message: change it after signing
        "exponent": lambda: (sig.replace(exponent=3), {}),
        "hv_order": lambda: (r(sig, module_hv=1, min_update_hv=2), {}),
        "gdt_idt_alignment": lambda: (r(sig, gdt_idt_offset=0x1800), {}),
        "gdt_fault_pair": lambda: (r(sig, fault_wrapper_offset=0), {}),
        "key_hash": lambda: (sig, {"trusted_key_hashes": [INTEL_KEY_HASH]}),
        "debug": lambda: (r(sig, module_type=MODULE_TYPE_DEBUG), {}),
        "major_svn_zero": lambda: (r(sig, seamsvn=0x0008), {}),
        "major_svn_change": lambda: (sig, {"current_svn": 0x0208}),
        "svn_downgrade": lambda: (sig, {"current_svn": 0x0109}),
        "cleanup_required": lambda: (sig, {"dirty_svn": 0x0109}),
        "gdt_idt_range": lambda: (r(sig, gdt_idt_offset=MS), {}),
        "fault_wrapper_range": lambda: (r(sig, fault_wrapper_offset=MS - 511), {}),
        "cpuid": lambda: (sig, {"platform_cpuids": [0x806F8, 0x906A0]}),
        "no_cpuid_table": lambda: (r(sig, cpuid_table_size=0), {}),
        "signature": lambda: (sig.replace(date=0x20991231), {}),
    }
    s, extra = cases[code]()
    kw.update(extra)
    return s, kw


EXPECTED_STATUS = {
    "major_svn_zero": SeamldrStatus.EUNSUPPORTED,
    "major_svn_change": SeamldrStatus.EUNSUPPORTED,
    "cleanup_required": SeamldrStatus.ECLEANUPREQ,
    "cpuid": SeamldrStatus.EUNSUPCPU,
}


@pytest.mark.parametrize("code", [c for c, _ in CHECK_CODES])
def test_each_check_fails_alone_with_its_status(code):
    sig, kw = _case_mutation(code)
    problems = check_sigstruct(sig, **kw)
    assert [p.code for p in problems] == [code]
    p = problems[0]
    assert p.status == EXPECTED_STATUS.get(code, SeamldrStatus.EBADSIG)
    assert p.step == dict(CHECK_CODES)[code] and p.message and code in str(p)
    assert first_status(problems) == p.status


def test_synthetic_baseline_passes_every_check():
    sig, m = _sig()
    assert check_sigstruct(sig, module_size=len(m), trusted_key_hashes=_trust(),
                           platform_cpuids=[0x806F8], current_svn=sig.seamsvn) == []
    assert first_status([]) == SeamldrStatus.PSEAMLDR_SUCCESS


def test_boundaries_that_must_pass():
    sig, _ = _sig()
    t = {"module_size": MS, "trusted_key_hashes": _trust()}
    ok = [
        (_resign(sig, gdt_idt_offset=MS - 4096, fault_wrapper_offset=MS - 512), {}),
        (_resign(sig, gdt_idt_offset=0, fault_wrapper_offset=0), {}),
        (_resign(sig, module_hv=3, min_update_hv=3), {}),
        (_resign(sig, cpuid_table_size=255), {}),
        (_resign(sig, module_type=MODULE_TYPE_DEBUG), {"debug_unlocked": True}),
        (_resign(sig, module_type=MODULE_TYPE_DEBUG, cpuid_table_size=0), {"debug_unlocked": True}),
        (sig, {"current_svn": sig.seamsvn}),  # same minor SVN: allowed
        (sig, {"current_svn": sig.seamsvn - 1}),
        (sig, {"dirty_svn": sig.seamsvn}),
        (sig, {"platform_cpuids": [0x806FF, 0xC06F3]}),  # stepping masked
        (sig, {"platform_cpuids": []}),
        (_resign(sig, reserved3=bytes(23) + b"\1"), {"allow_reserved3": True}),
        (sig, {"trusted_key_hashes": [INTEL_KEY_HASH, _trust()[0]]}),
    ]
    for s, extra in ok:
        assert check_sigstruct(s, **{**t, **extra}) == [], extra


def test_cpuid_table_empty_skips_the_cpu_check_for_debug_modules():
    sig, _ = _sig()
    s = _resign(sig, module_type=MODULE_TYPE_DEBUG, cpuid_table_size=0)
    assert check_sigstruct(s, module_size=MS, trusted_key_hashes=_trust(), debug_unlocked=True,
                           platform_cpuids=[0x12345]) == []


def test_problems_come_in_loader_order():
    sig, _ = _sig()
    bad = testsign.sign_sigstruct(sig.replace(
        reserved0=b"\1" * 88, header_type=1, module_vendor=0, seamsvn=0x0001, cpuid_table_size=0,
        gdt_idt_offset=MS * 2,
    )).replace(exponent=5, date=1)
    problems = check_sigstruct(bad, module_size=MS, platform_cpuids=[0x806F8], current_svn=0x0105)
    codes = [p.code for p in problems]
    assert codes == ["reserved0", "header_type", "module_vendor", "exponent", "key_hash",
                     "major_svn_zero", "major_svn_change", "svn_downgrade", "gdt_idt_range",
                     "no_cpuid_table", "signature"]
    order = [c for c, _ in CHECK_CODES]
    assert [order.index(c) for c in codes] == sorted(order.index(c) for c in codes)
    # the loader returns the first one's status even when a later one is EUNSUPPORTED
    assert first_status(problems) == SeamldrStatus.EBADSIG


def test_update_to_other_major_reports_eunsupported_first():
    sig, _ = _sig()
    problems = check_sigstruct(sig, module_size=MS, trusted_key_hashes=_trust(), current_svn=0x0301)
    assert first_status(problems) == SeamldrStatus.EUNSUPPORTED


# -- keys --------------------------------------------------------------------------------------


def test_key_hash_from_pem():
    key = testsign.signing_key()
    assert key_hash_from_pem(key.public_pem()) == key.key_hash
    with pytest.raises(SigstructError):
        key_hash_from_pem(b"not a pem")
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    ec_pem = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    with pytest.raises(SigstructError):
        key_hash_from_pem(ec_pem)


# -- measurement -------------------------------------------------------------------------------


def test_seamhash_pads_to_whole_pages():
    data = b"\xAA" * 5000
    assert measure.seamhash(data) == hashlib.sha384(data + bytes(8192 - 5000)).digest()
    assert measure.seamhash(bytes(4096)) == hashlib.sha384(bytes(4096)).digest()
    assert page.pad_to_pages(data) == data + bytes(3192)
    assert page.nr_pages(5000) == 2 and page.nr_pages(4096) == 1 and page.nr_pages(0) == 0


def test_measurement_values(intel_dir):
    for g in GOLDEN:
        sig = Sigstruct.from_bytes(parts(intel_dir, g.version)[0])
        m = measure.expected_measurement(sig)
        assert m.mrseam.hex() == g.mrseam
        assert m.mrsignerseam == bytes(48) and m.seam_attributes == 0
        assert m.tee_tcb_svn == bytes([g.seamsvn & 0xFF, g.seamsvn >> 8]) + bytes(14)
    # public quotes: 1.5.01 -> 0401, 1.5.06 -> 0601
    assert measure.tee_tcb_svn(0x104)[:2].hex() == "0401"
    assert measure.tee_tcb_svn(0x106)[:2].hex() == "0601"
    assert len(measure.tee_tcb_svn(0x303)) == 16


# -- fuzz ----------------------------------------------------------------------------------------


def _parse_and_check(data: bytes) -> None:
    try:
        sig = Sigstruct.from_bytes(data)
    except FormatError:
        return
    assert sig.to_bytes() == data
    # any 2048 bytes: the checks report, they never raise
    check_sigstruct(sig, module_size=4096, platform_cpuids=[0x806F8], current_svn=0x0101,
                    allow_reserved3=bool(data[0] & 1))
    check_sigstruct(sig, module_size=4096, dirty_svn=0x0101)
    sig.declared_version, sig.date_text, sig.cpuids  # noqa: B018


@FUZZ
@given(st.one_of(st.binary(max_size=64), st.binary(min_size=2048, max_size=2048), st.binary(min_size=2040, max_size=2056)))
def test_fuzz_random_bytes(data):
    _parse_and_check(data)


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 2047), st.integers(0, 255)), min_size=1, max_size=8))
def test_fuzz_mutated_valid_sigstruct(mutations):
    raw = bytearray(synthetic()[0])
    for off, val in mutations:
        raw[off] = val
    _parse_and_check(bytes(raw))
