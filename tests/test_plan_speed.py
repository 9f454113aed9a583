"""What makes `plan` quick gives the same answers as the plain way: the folded u16 checksum, RSA
verification by its encoding, checking image parts without building images, and reading a host
with each directory opened once. (The figures themselves are in bench/bench_tool.py.)"""

from __future__ import annotations

import os
from array import array
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from _tool_host import make_root
from tdxseam.formats import image as I
from tdxseam.formats import testsign
from tdxseam.formats.errors import FormatError
from tdxseam.formats.sigstruct import (RSA_KEY_BYTES, Sigstruct, pkcs1v15_sha384_encoding, verify_signature,
                                       verify_signature_openssl)


def _word_sum(data: bytes) -> int:
    words = array("H")
    words.frombytes(data[: len(data) & ~1])
    if array("H", [1]).tobytes() != b"\x01\x00":
        words.byteswap()
    return (sum(words) + (data[-1] if len(data) & 1 else 0)) & 0xFFFF


@settings(max_examples=60)
@given(st.integers(0, 70_000), st.integers(0, 255), st.binary(max_size=64), st.integers(0, 2**31))
def test_u16_sum_is_the_word_sum(size, fill, head, salt):
    """Sizes around the small/folded threshold and the lane-count powers of two, any content."""
    import random

    body = random.Random(salt).randbytes(size) if salt % 3 else bytes([fill]) * size
    data = head + body
    assert I.u16_sum(data) == _word_sum(data)
    assert I.u16_sum(bytearray(data)) == I.u16_sum(memoryview(data)) == _word_sum(data)


@pytest.mark.parametrize("size", [4094, 4095, 4096, 4097, 8190, 8192, 8194, 1 << 20, I.TDX_IMAGE_MAX_SIZE])
def test_u16_sum_at_edges_and_all_ones(size):
    for data in (b"\xff" * size, bytes(range(256)) * (size // 256) + b"\x01" * (size % 256)):
        assert I.u16_sum(data) == _word_sum(data)


def test_u16_sum_of_intel_blobs(intel_dir):
    for p in sorted((intel_dir / "joined_files").glob("*/*.blob")):
        data = p.read_bytes()
        assert I.u16_sum(data) == _word_sum(data) == 0


# -- RSA-3072 PKCS#1 v1.5 / SHA-384, held to cryptography's verdict -------------------------------------


def _cryptography_says(sig: Sigstruct) -> bool:
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicNumbers
    from cryptography.hazmat.primitives.hashes import SHA384

    n, s = sig.modulus_int, sig.signature_int
    if n.bit_length() != 3072 or not 0 < s < n:
        return False
    try:
        RSAPublicNumbers(65537, n).public_key().verify(s.to_bytes(RSA_KEY_BYTES, "big"), sig.signed_message,
                                                       PKCS1v15(), SHA384())
    except (InvalidSignature, ValueError):
        return False
    return True


_SIG = testsign.make_blob("1.5.20")[0x1000:0x1800]


@settings(max_examples=80)
@given(st.lists(st.tuples(st.integers(0, 2047), st.integers(0, 255)), max_size=3))
def test_signature_verdict_matches_cryptography(edits):
    raw = bytearray(_SIG)
    for off, val in edits:
        raw[off] = val
    sig = Sigstruct.from_bytes(bytes(raw))
    assert verify_signature(sig) == _cryptography_says(sig) == verify_signature_openssl(sig)


def test_signature_verdicts_on_real_and_forged(intel_dir):
    sig = Sigstruct.from_bytes(_SIG)
    assert verify_signature(sig) and _cryptography_says(sig) and verify_signature_openssl(sig)
    # a signature block whose decryption is the right digest but wrongly padded: the encoding must
    # match byte for byte, not just end in the digest
    key = testsign.signing_key()
    em = bytearray(pkcs1v15_sha384_encoding(sig.signed_message))
    em[2] = 0xFE  # one padding byte off
    d = pow(key.e, -1, (key.p - 1) * (key.q - 1))
    forged = pow(int.from_bytes(em, "big"), d, key.n)
    raw = bytearray(_SIG)
    off = 0x80 + 384 + 4  # signature, little-endian, after modulus and exponent
    raw[off: off + 384] = forged.to_bytes(384, "little")
    bad = Sigstruct.from_bytes(bytes(raw))
    assert not verify_signature(bad) and not _cryptography_says(bad) and not verify_signature_openssl(bad)
    for p in sorted((intel_dir / "joined_files").glob("*/*.blob")):
        s = Sigstruct.from_bytes(p.read_bytes()[0x1000:0x1800])
        assert verify_signature(s) and _cryptography_says(s) and verify_signature_openssl(s)


# -- plan checks image parts without building the image ---------------------------------------------------


@settings(max_examples=60)
@given(st.binary(min_size=0, max_size=2100), st.integers(0, 500 * 4096 + 1))
def test_check_parts_fail_as_building_does(sigstruct, module_size):
    module = b"\x01" * module_size
    for check, build in ((I.check_v2_parts, I.build_v2), (I.check_v1_parts, I.build_v1)):
        try:
            build(sigstruct, module)
            built = None
        except FormatError as e:
            built = (type(e), str(e))
        try:
            check(sigstruct, module)
            checked = None
        except FormatError as e:
            checked = (type(e), str(e))
        assert checked == built


# -- read_host with each directory opened once ------------------------------------------------------------


def _roots(tmp: Path) -> list[Path]:
    roots = [make_root(tmp / "merged"), make_root(tmp / "old", layout="seamldr_upload"),
             make_root(tmp / "none", layout=None), tmp / "empty"]
    (tmp / "empty").mkdir()
    partial = make_root(tmp / "partial")
    (partial / "proc" / "cpuinfo").unlink()
    os.remove(partial / "sys/devices/faux/tdx_host/seamldr_version")
    roots.append(partial)
    # as on a real host: the class directory is a link into /sys/devices
    linked = make_root(tmp / "linked")
    real = linked / "sys/devices/faux/tdx_host/firmware/tdx_module"
    real.parent.mkdir(parents=True)
    (linked / "sys/class/firmware/tdx_module").rename(real)
    (linked / "sys/class/firmware/tdx_module").symlink_to("../../devices/faux/tdx_host/firmware/tdx_module")
    roots.append(linked)
    odd = make_root(tmp / "odd")
    (odd / "sys/devices/system/cpu/online").unlink()
    (odd / "sys/devices/system/cpu/online").mkdir()  # a directory where a file should be
    roots.append(odd)
    return roots


def test_dir_cached_reads_equal_plain_reads(tmp_path):
    from tdxseam.tool.hostinfo import DirCachedRoot, SysfsRoot, read_host

    class Plain(SysfsRoot):
        """Not exactly SysfsRoot, so read_host reads it path by path."""

    for root in _roots(tmp_path):
        fds = len(os.listdir("/proc/self/fd"))
        cached = read_host(str(root)).to_json()
        assert len(os.listdir("/proc/self/fd")) == fds  # every directory handle closed
        assert cached == read_host(Plain(root)).to_json() == read_host(DirCachedRoot(root)).to_json(), root
