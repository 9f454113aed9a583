"""Module image containers: Intel's v1 "TDX-BLOB" (0x100) and the Linux v2 update image (0x200).

v1 (spec-formats §4): what Intel ships in `joined_files/`; 4 KiB header, sigstruct page at 0x1000,
module at `offset_of_module`. v2 (spec-formats §5, spec-linux §4.3): what the merged kernel's
fw_upload takes; 4 KiB header, sigstruct page(s), module pages. Both carry a u16-sum checksum.

`kernel_check_v2` is only what the kernel checks, in the kernel's order, so the kernel emulation
rejects exactly what Linux rejects; `parse_v2` is the full validation an operator tool wants.
"""

from __future__ import annotations

import errno as _errno
import struct
import sys
from array import array
from enum import Enum

from tdxseam.formats.errors import BlobError, FormatError, ImageError, SigstructError
from tdxseam.formats.page import PAGE_SIZE, nr_pages, pad_to_pages
from tdxseam.formats.record import record
from tdxseam.formats.seamldr_params import SEAMLDR_MAX_NR_MODULE_PAGES, SEAMLDR_MAX_NR_SIG_PAGES
from tdxseam.formats.sigstruct import (
    HEADER_LENGTH_DWORDS,
    HEADER_TYPE_GENERIC_FW,
    SIGSTRUCT_SIZE,
    SIZE_DWORDS,
)

TDX_IMAGE_HEADER_SIZE = 4096
TDX_IMAGE_VERSION_1 = 0x100
TDX_IMAGE_VERSION_2 = 0x200
TDX_BLOB_SIGNATURE = b"TDX-BLOB"
TDX_IMAGE_MAX_SIZE = PAGE_SIZE * (1 + SEAMLDR_MAX_NR_SIG_PAGES + SEAMLDR_MAX_NR_MODULE_PAGES)
assert TDX_IMAGE_MAX_SIZE == 2_039_808
# A v1 blob may put N zero pages before its module (every published blob has N = 0, ~2 MiB); a
# blob larger than this is refused, so readers know the most they ever need to read.
V1_MAX_SIZE = 16 << 20
# The largest module file of any kind: v1 blob, v2 image, .bin or .sigstruct of a pair.
MODULE_FILE_MAX_SIZE = max(V1_MAX_SIZE, TDX_IMAGE_MAX_SIZE)

CHECKSUM_OFFSET = 2  # same place in v1 and v2

# v1 layout
V1_HEADER = struct.Struct("<HHI8sII")  # version, checksum, offset_of_module, signature, length, reserved0
V1_RESERVED1 = (0x18, 0x1000)
V1_SIGSTRUCT_OFFSET = 0x1000
V1_RESERVED2 = (0x1800, 0x2000)
V1_MIN_MODULE_OFFSET = 0x2000

# v2 layout
V2_HEADER = struct.Struct("<HH8sII")  # version, checksum, signature, sigstruct_nr_pages, module_nr_pages
V2_RESERVED = (V2_HEADER.size, TDX_IMAGE_HEADER_SIZE)  # 20..4096
_ZERO_RESERVED = bytes(V2_RESERVED[1] - V2_RESERVED[0])


class ImageFormat(Enum):
    V1 = "v1"  # Intel TDX-BLOB, header version 0x100
    V2 = "v2"  # Linux update image, header version 0x200
    SIGSTRUCT = "sigstruct"  # a bare 2048-byte sigstruct
    UNKNOWN = "unknown"


# -- checksum ---------------------------------------------------------------------------------


def _u16_sum_words(mv: memoryview) -> int:
    """Plain sum of the little-endian u16 words of an even-length buffer (no modulo)."""
    words = array("H")
    words.frombytes(mv)
    if sys.byteorder == "big":
        words.byteswap()
    return sum(words)


_SMALL_SUM = 4096  # below this many bytes the plain word loop is as quick
_CHUNK = 16384  # bytes per big integer: small enough to stay in cache and off the page allocator
_LANE_MASK = int.from_bytes(b"\xff\xff\x00\x00" * (_CHUNK // 4), "little")  # low word of each u32
_HALF_MASKS = tuple((1 << (16 << k)) - 1 for k in range(((_CHUNK // 4).bit_length() - 1), 0, -1))
_REDUCE_EVERY = 1 << 14  # chunks before a 32-bit lane could overflow: reduce it mod 2^16


def _u16_sum_folded(mv: memoryview) -> int:
    """The u16 sum of an even-length buffer mod 2^16, with big-integer arithmetic: a module is
    ~200k words, and adding them one by one as Python ints is about four times slower.
    Each 16 KiB chunk becomes one integer of 16-bit lanes whose word pairs are spread into
    32-bit lanes and added lane by lane into an accumulator; then the accumulator's upper half
    of lanes is folded onto the lower half until one lane is left. Cutting a lane back to its
    low 16 bits changes nothing mod 2^16, so lanes never overflow.
    """
    m = _LANE_MASK
    acc = 0
    for n, i in enumerate(range(0, len(mv), _CHUNK), 1):
        x = int.from_bytes(mv[i : i + _CHUNK], "little")
        acc += (x & m) + ((x >> 16) & m)
        if n % _REDUCE_EVERY == 0:
            acc &= m
    acc &= m
    for hm in _HALF_MASKS:  # lanes: 4096 -> 2048 -> ... -> 1 (32 bits each)
        half = hm.bit_length()
        acc = ((acc & hm) + (acc >> half)) & m
    return acc


def u16_sum(data: bytes) -> int:
    """Sum of all little-endian u16 words mod 2^16; an odd trailing byte is a word's low byte."""
    mv = memoryview(data).cast("B")
    even = len(mv) & ~1
    total = (_u16_sum_words if even < _SMALL_SUM else _u16_sum_folded)(mv[:even])
    if len(mv) & 1:
        total += mv[-1]
    return total & 0xFFFF


def compute_checksum(data: bytes) -> int:
    """The checksum to store at offset 2 so that the whole file sums to 0 (current field ignored)."""
    stored = int.from_bytes(bytes(data[CHECKSUM_OFFSET : CHECKSUM_OFFSET + 2]), "little")
    return (-(u16_sum(data) - stored)) & 0xFFFF


def with_checksum(data: bytes) -> bytes:
    """`data` with a correct checksum at offset 2."""
    out = bytearray(data)
    out[CHECKSUM_OFFSET : CHECKSUM_OFFSET + 2] = compute_checksum(out).to_bytes(2, "little")
    return bytes(out)


# -- pages ------------------------------------------------------------------------------------


def sigstruct_page(sigstruct: bytes) -> bytes:
    """A 2048-byte sigstruct as the 4 KiB page both containers carry (upper half zero)."""
    if len(sigstruct) != SIGSTRUCT_SIZE:
        raise SigstructError("sigstruct", f"is {len(sigstruct)} bytes, expected 2048", code="length")
    return bytes(sigstruct) + bytes(PAGE_SIZE - SIGSTRUCT_SIZE)


def module_pages(module: bytes) -> list[bytes]:
    """The module split into 4 KiB pages, the last one zero-padded."""
    padded = pad_to_pages(module)
    return [padded[i : i + PAGE_SIZE] for i in range(0, len(padded), PAGE_SIZE)]


def _zero_check(err: type[FormatError], what: str, data: bytes, start: int, end: int, field: str) -> None:
    chunk = bytes(data[start:end])
    if any(chunk):
        first = start + next(i for i, b in enumerate(chunk) if b)
        raise err(what, f"byte @0x{first:x} is 0x{data[first]:02x}, must be zero",
                  code="reserved", field=field, offset=start)


def _check_checksum(err: type[FormatError], what: str, data: bytes) -> None:
    total = u16_sum(data)
    if total:
        stored = int.from_bytes(bytes(data[2:4]), "little")
        raise err(what, f"u16 sum is 0x{total:04x}, not 0 (stored 0x{stored:04x}, "
                  f"expected 0x{compute_checksum(data):04x})",
                  code="checksum", field="checksum", offset=CHECKSUM_OFFSET)


# -- v1: Intel TDX-BLOB -----------------------------------------------------------------------


@record(frozen=True)
class V1Header:
    version: int
    checksum: int
    offset_of_module: int
    signature: bytes
    length: int
    reserved0: int

    @classmethod
    def from_bytes(cls, data: bytes) -> V1Header:
        if len(data) < V1_HEADER.size:
            raise BlobError("v1 blob", f"is {len(data)} bytes, shorter than its header",
                            code="truncated")
        return cls(*V1_HEADER.unpack_from(bytes(data[: V1_HEADER.size])))

    def to_bytes(self) -> bytes:
        return V1_HEADER.pack(self.version, self.checksum, self.offset_of_module,
                              self.signature, self.length, self.reserved0)


@record(frozen=True)
class V1Blob:
    header: V1Header
    sigstruct: bytes  # 2048 bytes
    module: bytes  # as stored, from offset_of_module to the end

    @property
    def module_nr_pages(self) -> int:
        return nr_pages(len(self.module))


def parse_v1(data: bytes, *, what: str = "v1 blob") -> V1Blob:
    """Validate every rule of spec-formats §4/§8.7; raise BlobError naming the first failure.

    The checksum is checked last so that a bad field is reported by name, not as a bad sum.
    """
    data = bytes(data)
    hdr = V1Header.from_bytes(data)
    if hdr.version != TDX_IMAGE_VERSION_1:
        raise BlobError(what, f"header version is 0x{hdr.version:x}, expected 0x100",
                        code="version", field="version", offset=0)
    if hdr.signature != TDX_BLOB_SIGNATURE:
        raise BlobError(what, f"signature is {hdr.signature!r}, expected b'TDX-BLOB'",
                        code="magic", field="signature", offset=8)
    if hdr.length != len(data):
        raise BlobError(what, f"length field is {hdr.length}, file is {len(data)} bytes",
                        code="length", field="length", offset=0x10)
    if len(data) > V1_MAX_SIZE:
        raise BlobError(what, f"is {len(data)} bytes, larger than a v1 blob can be ({V1_MAX_SIZE})",
                        code="length")
    if len(data) < V1_MIN_MODULE_OFFSET:
        raise BlobError(what, f"is {len(data)} bytes, too short for header and sigstruct pages",
                        code="truncated")
    off = hdr.offset_of_module
    if off % PAGE_SIZE or off < V1_MIN_MODULE_OFFSET:
        raise BlobError(what, f"offset_of_module 0x{off:x} is not 0x2000 + N x 4 KiB",
                        code="module_offset", field="offset_of_module", offset=4)
    if off >= len(data):
        raise BlobError(what, f"offset_of_module 0x{off:x} leaves no module (file {len(data)} bytes)",
                        code="page_count", field="offset_of_module", offset=4)
    if hdr.reserved0:
        raise BlobError(what, f"reserved0 is 0x{hdr.reserved0:x}, must be zero",
                        code="reserved", field="reserved0", offset=0x14)
    _zero_check(BlobError, what, data, *V1_RESERVED1, "reserved1")
    _zero_check(BlobError, what, data, *V1_RESERVED2, "reserved2")
    _zero_check(BlobError, what, data, V1_MIN_MODULE_OFFSET, off, "reserved3")
    module = data[off:]
    if nr_pages(len(module)) > SEAMLDR_MAX_NR_MODULE_PAGES:
        raise BlobError(what, f"module has {nr_pages(len(module))} pages, maximum 496",
                        code="page_count", field="module", offset=off)
    _check_checksum(BlobError, what, data)
    sig = data[V1_SIGSTRUCT_OFFSET : V1_SIGSTRUCT_OFFSET + SIGSTRUCT_SIZE]
    return V1Blob(hdr, sig, module)


def check_v1_parts(sigstruct: bytes, module: bytes, *, extra_pages: int = 0) -> None:
    """Raise what `build_v1` would raise for these parts, without building the blob."""
    sigstruct_page(sigstruct)
    if not module:
        raise BlobError("v1 blob", "module is empty", code="page_count")
    if nr_pages(len(module)) > SEAMLDR_MAX_NR_MODULE_PAGES:
        raise BlobError("v1 blob", f"module has {nr_pages(len(module))} pages, maximum 496",
                        code="page_count")
    if extra_pages < 0:
        raise BlobError("v1 blob", "extra_pages must be >= 0", code="module_offset")


def build_v1(sigstruct: bytes, module: bytes, *, extra_pages: int = 0) -> bytes:
    """A v1 blob as Intel's blob_join.sh makes it; `extra_pages` = N zero pages before the module."""
    check_v1_parts(sigstruct, module, extra_pages=extra_pages)
    page = sigstruct_page(sigstruct)
    off = V1_MIN_MODULE_OFFSET + extra_pages * PAGE_SIZE
    total = off + len(module)
    hdr = V1Header(TDX_IMAGE_VERSION_1, 0, off, TDX_BLOB_SIGNATURE, total, 0).to_bytes()
    out = hdr + bytes(V1_SIGSTRUCT_OFFSET - len(hdr)) + page + bytes(off - V1_MIN_MODULE_OFFSET) + bytes(module)
    return with_checksum(out)


# -- v2: Linux update image -------------------------------------------------------------------


@record(frozen=True)
class V2Header:
    version: int
    checksum: int
    signature: bytes
    sigstruct_nr_pages: int
    module_nr_pages: int
    reserved: bytes  # 4076 bytes

    @classmethod
    def from_bytes(cls, data: bytes) -> V2Header:
        if len(data) < TDX_IMAGE_HEADER_SIZE:
            raise ImageError("v2 image", f"is {len(data)} bytes, shorter than the 4 KiB header",
                             code="truncated")
        head = bytes(data[:TDX_IMAGE_HEADER_SIZE])
        return cls(*V2_HEADER.unpack_from(head), head[V2_HEADER.size :])

    def to_bytes(self) -> bytes:
        return V2_HEADER.pack(self.version, self.checksum, self.signature,
                              self.sigstruct_nr_pages, self.module_nr_pages) + self.reserved


@record(frozen=True)
class KernelReject:
    """Why the merged kernel refuses an image: spec-linux §4.3 step, our code, and the errno."""

    step: int
    code: str
    message: str
    errno: int = _errno.EINVAL  # the kernel returns -EINVAL for every image check


def kernel_check_v2(data: bytes) -> KernelReject | None:
    """The merged kernel's checks (`seamldr_install_module`/`init_seamldr_params`), in order.

    Step 2 (allocating seamldr_params) is not about the data and is left to the caller.
    """
    n = len(data)
    if n < TDX_IMAGE_HEADER_SIZE:
        return KernelReject(1, "truncated", f"{n} bytes is shorter than the 4 KiB header")
    version, _csum, signature, sig_pages, mod_pages = V2_HEADER.unpack_from(bytes(data[: V2_HEADER.size]))
    # The kernel computes `u32 len = nr_pages * PAGE_SIZE` and sums in u32; truncating the sum
    # once is the same arithmetic. A wrapped length slips past here and is caught by step 5.
    if (TDX_IMAGE_HEADER_SIZE + (sig_pages + mod_pages) * PAGE_SIZE) & 0xFFFF_FFFF != n:
        return KernelReject(3, "length", f"header says {sig_pages}+{mod_pages} pages, image is {n} bytes")
    if version != TDX_IMAGE_VERSION_2:
        return KernelReject(4, "version", f"header version 0x{version:x}, expected 0x200")
    if sig_pages > SEAMLDR_MAX_NR_SIG_PAGES or mod_pages > SEAMLDR_MAX_NR_MODULE_PAGES:
        return KernelReject(5, "page_count", f"{sig_pages} sigstruct / {mod_pages} module pages exceed 1 / 496")
    if signature != TDX_BLOB_SIGNATURE:
        return KernelReject(6, "magic", f"signature {signature!r}, expected b'TDX-BLOB'")
    if bytes(data[V2_RESERVED[0] : V2_RESERVED[1]]) != _ZERO_RESERVED:  # compared, not iterated
        return KernelReject(7, "reserved", "reserved header bytes are not zero")
    return None


@record(frozen=True)
class V2Image:
    header: V2Header
    sigstruct_pages: tuple[bytes, ...]
    module_pages: tuple[bytes, ...]

    @property
    def sigstruct(self) -> bytes:
        """The 2048 bytes the P-SEAMLDR reads from the first sigstruct page."""
        return self.sigstruct_pages[0][:SIGSTRUCT_SIZE]

    @property
    def module(self) -> bytes:
        return b"".join(self.module_pages)


def v2_pages(data: bytes) -> tuple[list[bytes], list[bytes]]:
    """(sigstruct pages, module pages) of an image that passes `kernel_check_v2`."""
    rej = kernel_check_v2(data)
    if rej is not None:
        raise ImageError("v2 image", rej.message, code=rej.code)
    hdr = V2Header.from_bytes(data)
    data = bytes(data)
    pages = [data[i : i + PAGE_SIZE] for i in range(TDX_IMAGE_HEADER_SIZE, len(data), PAGE_SIZE)]
    return pages[: hdr.sigstruct_nr_pages], pages[hdr.sigstruct_nr_pages :]


_KERNEL_FIELDS = {
    "truncated": (None, None), "length": ("length", None), "version": ("version", 0),
    "page_count": ("sigstruct_nr_pages/module_nr_pages", 12), "magic": ("signature", 4),
    "reserved": ("reserved", V2_RESERVED[0]),
}


def parse_v2(data: bytes, *, what: str = "v2 image") -> V2Image:
    """Full validation: the kernel's checks first (same codes), then what a loader needs
    (exactly one sigstruct page, at least one module page, a zero upper half in the sigstruct
    page) and finally the checksum, which the kernel ignores but a well-formed image keeps valid.
    """
    rej = kernel_check_v2(data)
    if rej is not None:
        field, offset = _KERNEL_FIELDS[rej.code]
        raise ImageError(what, rej.message, code=rej.code, field=field, offset=offset)
    hdr = V2Header.from_bytes(data)
    if hdr.sigstruct_nr_pages != 1:
        raise ImageError(what, "has no sigstruct page", code="page_count",
                         field="sigstruct_nr_pages", offset=12)
    if hdr.module_nr_pages < 1:
        raise ImageError(what, "has no module pages", code="page_count",
                         field="module_nr_pages", offset=16)
    pad_start = TDX_IMAGE_HEADER_SIZE + SIGSTRUCT_SIZE
    if bytes(data[pad_start : TDX_IMAGE_HEADER_SIZE + PAGE_SIZE]) != bytes(PAGE_SIZE - SIGSTRUCT_SIZE):
        raise ImageError(what, "bytes 2048-4095 of the sigstruct page are not zero",
                         code="sigstruct_padding", field="sigstruct page", offset=pad_start)
    _check_checksum(ImageError, what, data)
    sig_pages, mod_pages = v2_pages(data)
    return V2Image(hdr, tuple(sig_pages), tuple(mod_pages))


def check_v2_parts(sigstruct: bytes, module: bytes) -> None:
    """Raise what `build_v2` would raise for these parts, without building the image."""
    sigstruct_page(sigstruct)
    pages = nr_pages(len(module))
    if not 1 <= pages <= SEAMLDR_MAX_NR_MODULE_PAGES:
        raise ImageError("v2 image", f"module has {pages} pages, must be 1..496", code="page_count")


def build_v2(sigstruct: bytes, module: bytes) -> bytes:
    """A v2 image: header page, the sigstruct page, the module zero-padded to whole pages."""
    check_v2_parts(sigstruct, module)
    page = sigstruct_page(sigstruct)
    pages = nr_pages(len(module))
    hdr = V2Header(TDX_IMAGE_VERSION_2, 0, TDX_BLOB_SIGNATURE, 1, pages,
                   bytes(TDX_IMAGE_HEADER_SIZE - V2_HEADER.size)).to_bytes()
    return with_checksum(hdr + page + pad_to_pages(module))


def v1_to_v2(blob: bytes) -> bytes:
    """Convert an Intel blob to the image the merged kernel accepts (spec-formats §7)."""
    v1 = parse_v1(blob)
    return build_v2(v1.sigstruct, v1.module)


# -- detection and extraction -----------------------------------------------------------------


def detect(data: bytes) -> ImageFormat:
    """Tell the container by its header rather than assuming one (Intel ships v1, Linux takes v2)."""
    head = bytes(data[:16])
    version = int.from_bytes(head[:2], "little") if len(head) >= 2 else None
    if version == TDX_IMAGE_VERSION_1 and head[8:16] == TDX_BLOB_SIGNATURE:
        return ImageFormat.V1
    if version == TDX_IMAGE_VERSION_2 and head[4:12] == TDX_BLOB_SIGNATURE:
        return ImageFormat.V2
    if len(data) == SIGSTRUCT_SIZE:
        htype, hlen = struct.unpack_from("<II", head)
        size = int.from_bytes(bytes(data[0x18:0x1C]), "little")
        if (htype, hlen, size) == (HEADER_TYPE_GENERIC_FW, HEADER_LENGTH_DWORDS, SIZE_DWORDS):
            return ImageFormat.SIGSTRUCT
    return ImageFormat.UNKNOWN


@record(frozen=True)
class Extracted:
    """The two parts of a module, whichever container they came in."""

    format: ImageFormat
    sigstruct: bytes
    module: bytes


def extract(data: bytes, *, what: str = "image") -> Extracted:
    """Validate a v1 or v2 container fully and return its sigstruct and module."""
    fmt = detect(data)
    if fmt is ImageFormat.V1:
        v1 = parse_v1(data, what=what)
        return Extracted(fmt, v1.sigstruct, v1.module)
    if fmt is ImageFormat.V2:
        v2 = parse_v2(data, what=what)
        return Extracted(fmt, v2.sigstruct, v2.module)
    raise ImageError(what, f"is not a v1 or v2 module image (detected: {fmt.value})", code="format")
