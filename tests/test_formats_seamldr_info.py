"""`struct seamldr_info`: 256 bytes, minor before major, round trips."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tdxseam.formats.seamldr_info import SEAMLDR_INFO_ALIGN, SEAMLDR_INFO_SIZE, SeamldrInfo

u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFF_FFFF)
u8 = st.integers(0, 0xFF)


def test_size_and_alignment():
    assert SEAMLDR_INFO_SIZE == 256 and SEAMLDR_INFO_ALIGN == 256
    assert len(SeamldrInfo().to_bytes()) == 256


def test_default_roundtrip():
    info = SeamldrInfo()
    assert SeamldrInfo.from_bytes(info.to_bytes()) == info
    assert info.vendor_id == 0x8086


def test_field_offsets():
    info = SeamldrInfo(
        version=0x01020304, attributes=0x80000000, vendor_id=0x8086, build_date=0x20240812,
        build_num=0x1234, minor_version=5, major_version=1, update_version=8,
        acm_x2apicid=0xA5A5A5A5, num_remaining_updates=63,
        seam_info=bytes(range(128)), seam_ready=1, seam_debug=0, p_seam_ready=1,
        reserved=b"\xee" * 93,
    )
    b = info.to_bytes()
    le32 = lambda o: struct.unpack_from("<I", b, o)[0]  # noqa: E731
    le16 = lambda o: struct.unpack_from("<H", b, o)[0]  # noqa: E731
    assert le32(0) == 0x01020304
    assert le32(4) == 0x80000000
    assert le32(8) == 0x8086
    assert le32(12) == 0x20240812
    assert le16(16) == 0x1234
    assert le16(18) == 5  # minor first ...
    assert le16(20) == 1  # ... then major
    assert le16(22) == 8  # update_version (reserved_0 to the P-SEAMLDR)
    assert le32(24) == 0xA5A5A5A5
    assert le32(28) == 63
    assert b[32:160] == bytes(range(128))
    assert (b[160], b[161], b[162]) == (1, 0, 1)
    assert b[163:256] == b"\xee" * 93


def test_minor_and_major_are_not_swapped_on_parse():
    raw = bytearray(256)
    raw[18:20] = (5).to_bytes(2, "little")
    raw[20:22] = (1).to_bytes(2, "little")
    raw[22:24] = (2).to_bytes(2, "little")
    info = SeamldrInfo.from_bytes(bytes(raw))
    assert (info.major_version, info.minor_version, info.update_version) == (1, 5, 2)
    assert info.version_str == "1.5.02"


@pytest.mark.parametrize("n", [0, 255, 257, 4096])
def test_wrong_length_rejected(n):
    with pytest.raises(ValueError, match="256"):
        SeamldrInfo.from_bytes(bytes(n))


@pytest.mark.parametrize("major,minor,update,text", [
    (1, 5, 0, "1.5.00"), (1, 5, 8, "1.5.08"), (2, 0, 13, "2.0.13"), (1, 5, 100, "1.5.100"),
])
def test_version_str_is_tdx_version_fmt(major, minor, update, text):
    assert SeamldrInfo(major_version=major, minor_version=minor, update_version=update).version_str == text


@given(
    version=u32, attributes=u32, vendor_id=u32, build_date=u32, build_num=u16, minor=u16, major=u16,
    update=u16, acm=u32, remaining=u32, seam_info=st.binary(min_size=128, max_size=128),
    ready=u8, debug=u8, p_ready=u8, reserved=st.binary(min_size=93, max_size=93),
)
def test_roundtrip_any_fields(version, attributes, vendor_id, build_date, build_num, minor, major,
                              update, acm, remaining, seam_info, ready, debug, p_ready, reserved):
    info = SeamldrInfo(version, attributes, vendor_id, build_date, build_num, minor, major, update,
                       acm, remaining, seam_info, ready, debug, p_ready, reserved)
    raw = info.to_bytes()
    assert len(raw) == 256
    back = SeamldrInfo.from_bytes(raw)
    assert back == info
    assert back.version_str == f"{major}.{minor}.{update:02d}"
    assert struct.unpack_from("<HH", raw, 18) == (minor, major)


@given(st.binary(min_size=256, max_size=256))
def test_roundtrip_any_bytes(raw):
    assert SeamldrInfo.from_bytes(raw).to_bytes() == raw
