"""v1 TDX-BLOB and v2 update images: golden values, every header check, conversion, fuzz."""

from __future__ import annotations

import errno
import hashlib
import struct

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from _formats_data import GOLDEN_BY_VERSION, SEPARATE, VERSIONS, blob, flip, separate, synthetic
from tdxseam.formats import image as I
from tdxseam.formats.errors import BlobError, FormatError, ImageError, SigstructError
from tdxseam.formats.image import ImageFormat

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _v1(pages: int = 2, extra_pages: int = 0) -> bytes:
    s, m = synthetic(pages=pages)
    return I.build_v1(s, m, extra_pages=extra_pages)


def _v2(pages: int = 2) -> bytes:
    return I.build_v2(*synthetic(pages=pages))


def _put(data: bytes, off: int, fmt: str, value) -> bytes:
    out = bytearray(data)
    struct.pack_into("<" + fmt, out, off, value)
    return bytes(out)


def _v1_code(data: bytes) -> str:
    with pytest.raises(BlobError) as ei:
        I.parse_v1(data)
    assert str(ei.value).startswith("v1 blob")
    return ei.value.code


def _v2_code(data: bytes) -> str:
    with pytest.raises(ImageError) as ei:
        I.parse_v2(data)
    return ei.value.code


# -- constants -----------------------------------------------------------------------------------


def test_constants():
    assert (I.PAGE_SIZE, I.TDX_IMAGE_HEADER_SIZE) == (4096, 4096)
    assert (I.SEAMLDR_MAX_NR_MODULE_PAGES, I.SEAMLDR_MAX_NR_SIG_PAGES) == (496, 1)
    assert I.TDX_IMAGE_VERSION_2 == 0x200 and I.TDX_IMAGE_VERSION_1 == 0x100
    assert I.TDX_IMAGE_MAX_SIZE == 2_039_808


# -- real Intel blobs: golden values (spec-formats §11.3) ---------------------------------------


@pytest.mark.parametrize("version", VERSIONS)
def test_intel_blob_and_converted_image(intel_dir, version):
    g = GOLDEN_BY_VERSION[version]
    b = blob(intel_dir, version)
    assert len(b) == g.blob_size == 8192 + g.bin_size
    assert I.detect(b) is ImageFormat.V1
    v1 = I.parse_v1(b)
    h = v1.header
    assert (h.version, h.checksum, h.offset_of_module, h.signature, h.length, h.reserved0) == (
        0x100, g.v1_checksum, 0x2000, b"TDX-BLOB", len(b), 0)
    assert I.u16_sum(b) == 0 and I.compute_checksum(b) == g.v1_checksum
    assert v1.sigstruct == b[0x1000:0x1800] and v1.module == b[0x2000:]
    assert v1.module_nr_pages == g.bin_size // 4096

    v2 = I.v1_to_v2(b)
    assert len(v2) == len(b)
    assert int.from_bytes(v2[2:4], "little") == g.v2_checksum
    assert hashlib.sha384(v2).hexdigest() == g.v2_sha384
    diff = _diff_offsets(b, v2)
    assert diff and min(diff) >= 0x01 and max(diff) <= 0x12
    assert I.detect(v2) is ImageFormat.V2
    assert I.kernel_check_v2(v2) is None
    img = I.parse_v2(v2)
    assert img.sigstruct == v1.sigstruct and img.module == v1.module
    assert (img.header.sigstruct_nr_pages, img.header.module_nr_pages) == (1, g.bin_size // 4096)
    # the merged kernel refuses the v1 blob as it is
    rej = I.kernel_check_v2(b)
    assert rej is not None and rej.errno == errno.EINVAL
    assert I.extract(b).sigstruct == I.extract(v2).sigstruct == v1.sigstruct
    assert I.extract(b).format is ImageFormat.V1 and I.extract(v2).format is ImageFormat.V2


def _diff_offsets(a: bytes, b: bytes) -> list[int]:
    head = min(len(a), len(b), 4096)
    out = [i for i in range(head) if a[i] != b[i]]
    assert a[head:] == b[head:]
    return out


@pytest.mark.parametrize("version", SEPARATE)
def test_separate_files_build_the_same_image(intel_dir, version):
    sig, bin_ = separate(intel_dir, version)
    b = blob(intel_dir, version)
    assert sig == b[0x1000:0x1800] and bin_ == b[0x2000:]
    assert I.build_v2(sig, bin_) == I.v1_to_v2(b)
    assert I.build_v1(sig, bin_) == b  # blob_join.sh gives Intel's blob byte for byte
    assert I.detect(sig) is ImageFormat.SIGSTRUCT
    assert I.detect(bin_) is ImageFormat.UNKNOWN


# -- v1 checks ----------------------------------------------------------------------------------


def test_v1_synthetic_round_trip():
    s, m = synthetic(pages=2)
    for extra in (0, 1, 3):
        b = I.build_v1(s, m, extra_pages=extra)
        v1 = I.parse_v1(b)
        assert v1.header.offset_of_module == 0x2000 + extra * 4096
        assert (v1.sigstruct, v1.module) == (s, m)
        assert I.build_v2(s, m) == I.v1_to_v2(b)


def test_v1_odd_sized_module_checksums_and_converts():
    s, _ = synthetic(pages=1)
    b = I.build_v1(s, b"\x7fELF" + b"\x01" * 4000 + b"\xff")  # odd length, not page-multiple
    assert I.u16_sum(b) == 0
    v2 = I.v1_to_v2(b)
    img = I.parse_v2(v2)
    assert img.module == b"\x7fELF" + b"\x01" * 4000 + b"\xff" + bytes(4096 - 4005)


def test_v1_bad_version():
    assert _v1_code(_put(_v1(), 0, "H", 0x200)) == "version"


def test_v1_bad_magic():
    assert _v1_code(_put(_v1(), 8, "8s", b"TDX-BLOC")) == "magic"


def test_v1_bad_length():
    b = _v1()
    assert _v1_code(_put(b, 0x10, "I", len(b) + 4096)) == "length"
    assert _v1_code(b + bytes(4096)) == "length"


def test_v1_truncated():
    assert _v1_code(_v1()[:0x17]) == "truncated"
    short = _put(_v1()[:0x1800], 0x10, "I", 0x1800)
    assert _v1_code(short) == "truncated"


def test_v1_bad_checksum():
    b = _v1()
    assert _v1_code(_put(b, 2, "H", (int.from_bytes(b[2:4], "little") + 1) & 0xFFFF)) == "checksum"
    assert _v1_code(flip(b, len(b) - 1)) == "checksum"


@pytest.mark.parametrize("offset", [0x1001, 0x1FFF, 0x1000, 0])
def test_v1_bad_module_offset(offset):
    assert _v1_code(_put(_v1(), 4, "I", offset)) == "module_offset"


@pytest.mark.parametrize(("offset", "field"), [
    (0x14, "reserved0"), (0x18, "reserved1"), (0xFFF, "reserved1"),
    (0x1800, "reserved2"), (0x1FFF, "reserved2"), (0x2000, "reserved3"), (0x2FFF, "reserved3"),
])
def test_v1_nonzero_reserved(offset, field):
    b = flip(_v1(extra_pages=1), offset, 3)
    with pytest.raises(BlobError) as ei:
        I.parse_v1(b)
    assert ei.value.code == "reserved" and ei.value.field == field


def test_v1_page_counts():
    b = _v1(pages=1)
    # no module at all: offset_of_module at the end of the file
    empty = I.with_checksum(_put(b, 0x10, "I", 0x2000)[:0x2000])
    assert _v1_code(empty) == "page_count"
    # 497 module pages (one over the limit)
    s, _ = synthetic(pages=1)
    big = bytearray(I.build_v1(s, bytes(496 * 4096)) + bytes(4096))
    struct.pack_into("<I", big, 0x10, len(big))
    assert _v1_code(I.with_checksum(bytes(big))) == "page_count"
    with pytest.raises(BlobError):
        I.build_v1(s, bytes(497 * 4096))
    with pytest.raises(BlobError):
        I.build_v1(s, b"")


def test_v1_to_v2_propagates_v1_errors():
    with pytest.raises(BlobError):
        I.v1_to_v2(_put(_v1(), 0, "H", 0x101))


# -- v2: the kernel's checks (spec-linux §4.3) ----------------------------------------------------


def test_v2_synthetic_round_trip():
    s, m = synthetic(pages=3)
    img = I.build_v2(s, m)
    assert len(img) == 5 * 4096 and I.u16_sum(img) == 0
    assert I.kernel_check_v2(img) is None
    parsed = I.parse_v2(img)
    assert parsed.sigstruct == s and parsed.module == m and len(parsed.module_pages) == 3
    sig_pages, mod_pages = I.v2_pages(img)
    assert sig_pages == [I.sigstruct_page(s)] and mod_pages == I.module_pages(m)


@pytest.mark.parametrize(("mutate", "step", "code"), [
    (lambda b: b[:4095], 1, "truncated"),
    (lambda b: b + bytes(4096), 3, "length"),
    (lambda b: b[:-4096], 3, "length"),
    (lambda b: _put(b, 16, "I", 1), 3, "length"),
    (lambda b: _put(b, 0, "H", 0x100), 4, "version"),
    (lambda b: _put(b, 0, "H", 0x201), 4, "version"),
    (lambda b: _put(_put(b, 12, "I", 2), 16, "I", 1), 5, "page_count"),
    (lambda b: _put(b, 4, "8s", b"TDX-blob"), 6, "magic"),
    (lambda b: flip(b, 20), 7, "reserved"),
    (lambda b: flip(b, 4095, 7), 7, "reserved"),
])
def test_v2_kernel_checks(mutate, step, code):
    bad = mutate(_v2())
    rej = I.kernel_check_v2(bad)
    assert rej is not None and (rej.step, rej.code) == (step, code) and rej.errno == errno.EINVAL
    assert _v2_code(bad) == code  # full validation reports the same first failure


def test_v2_kernel_check_order():
    b = _v2()
    # wrong version AND wrong length: the length check runs first
    assert I.kernel_check_v2(_put(b, 0, "H", 0x100) + bytes(4096)).code == "length"
    # wrong version AND bad magic AND too many pages: version first
    both = _put(_put(_put(b, 0, "H", 0x100), 4, "8s", b"XXXXXXXX"), 12, "I", 2)
    both = _put(both, 16, "I", 1)
    assert I.kernel_check_v2(both).code == "version"
    # too many pages AND bad magic: page count first
    assert I.kernel_check_v2(_put(_put(_put(b, 4, "8s", bytes(8)), 12, "I", 2), 16, "I", 1)).code == "page_count"
    # bad magic AND reserved: magic first
    assert I.kernel_check_v2(flip(_put(b, 4, "8s", bytes(8)), 100)).code == "magic"


def test_v2_kernel_length_arithmetic_is_u32():
    """module_nr_pages = 2^20 + 2 wraps to 2 pages in u32: passes step 3, fails step 5."""
    b = _put(_v2(pages=2), 16, "I", (1 << 20) + 2)
    rej = I.kernel_check_v2(b)
    assert rej is not None and (rej.step, rej.code) == (5, "page_count")


def test_v2_zero_pages_pass_the_kernel_but_not_full_validation():
    hdr = I.with_checksum(_put(_put(_v2()[:4096], 12, "I", 0), 16, "I", 0))
    assert I.kernel_check_v2(hdr) is None
    assert _v2_code(hdr) == "page_count"
    no_sig = I.with_checksum(_put(_put(_v2(pages=1), 12, "I", 0), 16, "I", 2))
    assert I.kernel_check_v2(no_sig) is None
    assert _v2_code(no_sig) == "page_count"
    no_module = I.with_checksum(_put(_v2(pages=1)[:8192], 16, "I", 0))
    assert I.kernel_check_v2(no_module) is None
    with pytest.raises(ImageError) as ei:
        I.parse_v2(no_module)
    assert (ei.value.code, ei.value.field) == ("page_count", "module_nr_pages")


def test_v2_max_size_accepted():
    s, _ = synthetic(pages=1)
    img = I.build_v2(s, bytes(496 * 4096))
    assert len(img) == I.TDX_IMAGE_MAX_SIZE
    assert I.kernel_check_v2(img) is None and I.parse_v2(img).header.module_nr_pages == 496
    too_big = _put(img + bytes(4096), 16, "I", 497)
    assert I.kernel_check_v2(too_big).code == "page_count"


def test_v2_full_validation_extra_checks():
    b = _v2()
    assert _v2_code(flip(b, 4096 + 2048)) == "sigstruct_padding"
    assert _v2_code(flip(b, 4096 + 4095)) == "sigstruct_padding"
    assert _v2_code(flip(b, len(b) - 1)) == "checksum"  # the kernel ignores this one
    assert I.kernel_check_v2(flip(b, len(b) - 1)) is None
    assert _v2_code(_put(b, 2, "H", 0)) == "checksum"


def test_build_v2_rejects_bad_parts():
    s, m = synthetic(pages=1)
    with pytest.raises(SigstructError):
        I.build_v2(s[:2047], m)
    with pytest.raises(ImageError) as ei:
        I.build_v2(s, b"")
    assert ei.value.code == "page_count"
    with pytest.raises(ImageError):
        I.build_v2(s, bytes(497 * 4096))


def test_v2_pages_requires_a_kernel_valid_image():
    with pytest.raises(ImageError) as ei:
        I.v2_pages(_put(_v2(), 0, "H", 0x100))
    assert ei.value.code == "version"


# -- detection, extraction, helpers ----------------------------------------------------------------


def test_detect():
    s, _ = synthetic()
    assert I.detect(_v1()) is ImageFormat.V1
    assert I.detect(_v2()) is ImageFormat.V2
    assert I.detect(s) is ImageFormat.SIGSTRUCT
    assert I.detect(s + b"\0") is ImageFormat.UNKNOWN
    assert I.detect(b"") is ImageFormat.UNKNOWN
    assert I.detect(b"\x7fELF" + bytes(100)) is ImageFormat.UNKNOWN
    assert I.detect(_put(_v1(), 0, "H", 0x200)) is ImageFormat.UNKNOWN  # v1 layout, v2 version
    with pytest.raises(ImageError) as ei:
        I.extract(s)
    assert ei.value.code == "format"


def test_checksum_helpers():
    assert I.u16_sum(b"\x01\x00\x02\x00") == 3
    assert I.u16_sum(b"\xff\xff\x02") == (0xFFFF + 2) & 0xFFFF  # odd byte is a low byte
    data = bytes(range(256)) * 20 + b"\x05"
    fixed = I.with_checksum(data)
    assert I.u16_sum(fixed) == 0 and fixed[4:] == data[4:]
    assert I.compute_checksum(fixed) == int.from_bytes(fixed[2:4], "little")


def test_page_helpers():
    assert I.module_pages(b"\1" * 4097) == [b"\1" * 4096, b"\1" + bytes(4095)]
    assert I.module_pages(b"") == []
    assert I.sigstruct_page(bytes(2048)) == bytes(4096)
    with pytest.raises(SigstructError):
        I.sigstruct_page(bytes(4096))
    assert I.nr_pages(0) == 0 and I.nr_pages(1) == 1 and I.nr_pages(8192) == 2


def test_error_messages_name_the_field_and_offset():
    with pytest.raises(BlobError) as ei:
        I.parse_v1(_put(_v1(), 0x10, "I", 1))
    msg = str(ei.value)
    assert "length" in msg and "@0x10" in msg and "\n" not in msg


# -- fuzz ----------------------------------------------------------------------------------------


def _all_parsers(data: bytes) -> None:
    """Every entry point must either succeed or raise a FormatError subclass."""
    I.detect(data)
    rej = I.kernel_check_v2(data)
    for fn in (I.parse_v1, I.parse_v2, I.v1_to_v2, I.extract, I.v2_pages, I.V1Header.from_bytes,
               I.V2Header.from_bytes):
        try:
            fn(data)
        except FormatError:
            pass
    if rej is None:
        sig_pages, mod_pages = I.v2_pages(data)
        assert len(data) == 4096 * (1 + len(sig_pages) + len(mod_pages))


@FUZZ
@given(st.binary(max_size=9000))
def test_fuzz_random_bytes(data):
    _all_parsers(data)


@FUZZ
@given(
    st.sampled_from(["v1", "v2"]),
    st.lists(st.tuples(st.integers(0, 4 * 4096 - 1), st.integers(0, 255)), max_size=6),
    st.sampled_from([None, 2, 20, 4096, 8192, 12288]),
    st.booleans(),
)
def test_fuzz_mutated_valid_images(kind, mutations, cut, fix_checksum):
    data = bytearray(_v1(pages=2) if kind == "v1" else _v2(pages=2))
    for off, val in mutations:
        if off < len(data):
            data[off] = val
    if cut is not None:
        data = data[:cut]
    if fix_checksum and len(data) >= 4:
        data = bytearray(I.with_checksum(bytes(data)))
    _all_parsers(bytes(data))


@FUZZ
@given(st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF), st.integers(0, 0xFFFFFFFF), st.binary(max_size=3))
def test_fuzz_v2_header_fields(version, sig_pages, mod_pages, tail):
    b = _put(_put(_put(_v2(pages=1), 0, "H", version), 12, "I", sig_pages), 16, "I", mod_pages) + tail
    _all_parsers(b)
