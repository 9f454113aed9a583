"""Deterministic test signing: a seeded RSA-3072 key and synthetic, validly signed modules.

The project must be fully testable without Intel's files, so tests and demos build their own
modules and sign them with a key anyone can regenerate from its seed. The key is derived with a
SHA-256 counter-mode stream and a pure-Python prime search (sieve + Miller-Rabin): the same seed
gives the same key on every machine and Python version. Keys are cached per seed (generation
takes about a second). These keys are public by construction: never trust them outside tests.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cached_property, lru_cache
from math import gcd
from typing import Literal

from tdxseam.formats import buildinfo as _buildinfo
from tdxseam.formats import image as _image
from tdxseam.formats.measure import seamhash
from tdxseam.formats.page import PAGE_SIZE
from tdxseam.formats.sigstruct import (
    EXPONENT_SIZE_DWORDS,
    HEADER_LENGTH_DWORDS,
    HEADER_TYPE_GENERIC_FW,
    HEADER_VERSION,
    KEY_SIZE_DWORDS,
    MAX_CPUID_TABLE_SIZE,
    MODULE_TYPE_DEBUG,
    MODULE_VENDOR_INTEL,
    MODULUS_SIZE_DWORDS,
    RSA_EXPONENT,
    RSA_KEY_BYTES,
    SIGSTRUCT_SIZE,
    SIZE_DWORDS,
    Sigstruct,
    declared_version_bytes,
    key_hash_of_modulus,
    modulus_bytes,
)
from tdxseam.formats.synthetic import SYNTH_HEADER_SIZE, SyntheticHeader
from tdxseam.formats.version import ModuleVersion

# Seeds are arbitrary; these two were picked because their prime searches end early (~0.3 s).
DEFAULT_SEED = b"tdxseam test key 29"
OTHER_SEED = b"tdxseam test key 18"  # a second, distinct key for "wrong key" tests
# Every CPU of spec-formats §9, so a default synthetic module loads on any emulated platform.
DEFAULT_CPUIDS = (0x806F8, 0xC06F0, 0xA06F0, 0xA06D0, 0xA06E0)
DEFAULT_FEATURES0 = 0xF0FBF  # 1.5.01's value; bit 1 (td_preserving) set

# -- deterministic key -------------------------------------------------------------------------


def _seed_bytes(seed: bytes | str | int) -> bytes:
    if isinstance(seed, bytes):
        return seed
    if isinstance(seed, str):
        return seed.encode()
    return b"int:" + str(int(seed)).encode()


def _stream(seed: bytes, label: bytes) -> Iterator[bytes]:
    """SHA-256 counter mode: stable across Python versions, unlike random.Random."""
    ctr = 0
    while True:
        yield hashlib.sha256(label + b"\0" + seed + ctr.to_bytes(8, "little")).digest()
        ctr += 1


def _take(stream: Iterator[bytes], n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        out += next(stream)
    return bytes(out[:n])


def _small_primes(limit: int) -> tuple[int, ...]:
    flags = bytearray([1]) * (limit + 1)
    flags[0:2] = b"\0\0"
    for i in range(2, int(limit**0.5) + 1):
        if flags[i]:
            flags[i * i :: i] = bytes(len(range(i * i, limit + 1, i)))
    return tuple(i for i in range(3, limit + 1) if flags[i])


_SIEVE_PRIMES = _small_primes(1 << 16)
# Random 1536-bit candidates: a handful of rounds leaves an error chance far below 2^-100.
_MR_BASES = (2, 3, 5, 7, 11, 13)


def _miller_rabin(n: int, bases: Iterable[int]) -> bool:
    d, r = n - 1, 0
    while not d & 1:
        d >>= 1
        r += 1
    for a in bases:
        x = pow(a, d, n)
        if x == 1 or x == n - 1:
            continue
        for _ in range(r - 1):
            x = x * x % n
            if x == n - 1:
                break
        else:
            return False
    return True


def _prime(bits: int, stream: Iterator[bytes]) -> int:
    """A `bits`-bit prime with the top two bits set (so p*q has exactly 2*bits bits) and
    p - 1 coprime to 65537. Searches c, c+2, ... after sieving out small factors."""
    window = 8192
    while True:
        c = int.from_bytes(_take(stream, bits // 8), "big") | (3 << (bits - 2)) | 1
        composite = bytearray(window)  # index k stands for c + 2k
        for p in _SIEVE_PRIMES:
            k = (-(c % p) * ((p + 1) // 2)) % p  # c + 2k = 0 (mod p)
            composite[k::p] = b"\1" * len(range(k, window, p))
        for k in range(window):
            if composite[k]:
                continue
            n = c + 2 * k
            if n.bit_length() != bits:
                break
            if (n - 1) % RSA_EXPONENT == 0:
                continue
            if _miller_rabin(n, (2,)) and _miller_rabin(n, _MR_BASES[1:]):
                return n


@dataclass(frozen=True)
class SigningKey:
    """A seeded RSA-3072 key (e = 65537) in the form the sigstruct needs."""

    seed: bytes
    p: int
    q: int

    @property
    def n(self) -> int:
        return self.p * self.q

    @property
    def e(self) -> int:
        return RSA_EXPONENT

    @property
    def key_hash(self) -> bytes:
        """What a P-SEAMLDR (or `--trust-key`) pins for this key."""
        return key_hash_of_modulus(self.n)

    @cached_property
    def private_key(self):  # cryptography RSAPrivateKey
        from cryptography.hazmat.primitives.asymmetric import rsa

        p, q, e = self.p, self.q, RSA_EXPONENT
        d = pow(e, -1, (p - 1) * (q - 1) // gcd(p - 1, q - 1))
        numbers = rsa.RSAPrivateNumbers(
            p=p, q=q, d=d,
            dmp1=rsa.rsa_crt_dmp1(d, p), dmq1=rsa.rsa_crt_dmq1(d, q), iqmp=rsa.rsa_crt_iqmp(p, q),
            public_numbers=rsa.RSAPublicNumbers(e, p * q),
        )
        return numbers.private_key()

    def public_pem(self) -> bytes:
        """SubjectPublicKeyInfo PEM, for `--trust-key` and `key_hash_from_pem`."""
        from cryptography.hazmat.primitives import serialization

        return self.private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, message: bytes) -> bytes:
        """PKCS#1 v1.5 / SHA-384 signature, big-endian as cryptography returns it."""
        from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
        from cryptography.hazmat.primitives.hashes import SHA384

        return self.private_key.sign(message, PKCS1v15(), SHA384())


@lru_cache(maxsize=16)
def _derive(seed: bytes) -> SigningKey:
    stream = _stream(seed, b"tdxseam rsa-3072")
    while True:
        p = _prime(1536, stream)
        q = _prime(1536, stream)
        if p != q:
            return SigningKey(seed, max(p, q), min(p, q))


def signing_key(seed: bytes | str | int = DEFAULT_SEED) -> SigningKey:
    """The test key for `seed` (computed once per seed per process)."""
    return _derive(_seed_bytes(seed))


def public_key_pem(key: SigningKey | None = None) -> bytes:
    return (key or signing_key()).public_pem()


def sign_sigstruct(sig: Sigstruct | bytes, key: SigningKey | None = None) -> Sigstruct:
    """Install `key`'s modulus and exponent in the sigstruct and sign its 1276-byte message."""
    key = key or signing_key()
    if not isinstance(sig, Sigstruct):
        sig = Sigstruct.from_bytes(sig)
    sig = sig.replace(modulus=modulus_bytes(key.n), exponent=RSA_EXPONENT)
    signature = int.from_bytes(key.sign(sig.signed_message), "big")
    return sig.replace(signature=signature.to_bytes(RSA_KEY_BYTES, "little"))


# -- synthetic modules ------------------------------------------------------------------------

Style = Literal["1.5", "2.0"]
Identity = Literal["header", "immediates", "rodata", "none"]
_STYLE_LAYOUT = {  # (num_global_data_pages, num_handoff_pages) as Intel's releases, minus one
    "1.5": (21, 13),
    "2.0": (33, 24),
}


def _bcd(n: int) -> int:
    return int(str(n), 16)


def make_module(
    version: ModuleVersion | str = ModuleVersion(1, 5, 8),
    *,
    svn: tuple[int, int] | None = None,
    cpuids: Iterable[int] = DEFAULT_CPUIDS,
    debug: bool = False,
    pages: int = 4,
    key: SigningKey | None = None,
    features0: int = DEFAULT_FEATURES0,
    module_hv: int = 0,
    min_update_hv: int = 0,
    no_downgrade: int = 0,
    num_handoff_pages: int | None = None,
    style: Style = "1.5",
    build: int | None = None,
    date: int = 20250101,
    seed: bytes | str | int | None = None,
    identity: Identity = "header",
) -> tuple[bytes, bytes]:
    """A synthetic module and its valid signed sigstruct: (sigstruct_bytes, module_bytes).

    - svn: (major, minor); default (version.major, version.update), so later updates of a line
      never downgrade.
    - pages: module size in 4 KiB pages (1..496).
    - style "2.0" also declares version and build in reserved3 (needs a 2.0 P-SEAMLDR).
    - build: default 1000 + update. date: decimal yyyymmdd (stored BCD in the sigstruct).
    - seed: filler bytes; default derived from everything above, so distinct modules hash apart.
    - identity: how the module states what it is. "header": the synthetic identity header (its
      handoff constants are the module's own, so they can disagree with the sigstruct);
      "immediates" / "rodata": like a vendor's build, only the build constants in one of the two
      forms `formats.buildinfo` finds (no update number, no features: those come from the file
      name, the mapping file or --module-version); "none": nothing at all.
    """
    if isinstance(version, str):
        version = ModuleVersion.parse(version)
    if style not in _STYLE_LAYOUT:
        raise ValueError(f"style must be '1.5' or '2.0', not {style!r}")
    if not 1 <= pages <= _image.SEAMLDR_MAX_NR_MODULE_PAGES:
        raise ValueError(f"pages must be 1..496, not {pages}")
    cpuids = tuple(cpuids)
    if len(cpuids) > MAX_CPUID_TABLE_SIZE:
        raise ValueError("at most 255 CPUID entries")
    major_svn, minor_svn = svn if svn is not None else (version.major, version.update)
    if not (0 <= major_svn <= 0xFF and 0 <= minor_svn <= 0xFF):
        raise ValueError(f"svn parts must be 0..255, not {(major_svn, minor_svn)}")
    build = 1000 + version.update if build is None else build
    global_pages, handoff_default = _STYLE_LAYOUT[style]
    handoff = handoff_default if num_handoff_pages is None else num_handoff_pages

    header = SyntheticHeader(
        version=version, build_num=build, build_date=date, tdx_features0=features0,
        module_hv=module_hv, min_update_hv=min_update_hv, no_downgrade=no_downgrade,
        style=15 if style == "1.5" else 20, num_handoff_pages=handoff,
    ).to_bytes()
    if identity not in ("header", "immediates", "rodata", "none"):
        raise ValueError(f"identity must be header, immediates, rodata or none, not {identity!r}")
    if seed is None:
        seed = b"module:" + header + repr((svn, cpuids, debug, pages, identity)).encode()
    filler = _take(_stream(_seed_bytes(seed), b"tdxseam module filler"), pages * PAGE_SIZE - SYNTH_HEADER_SIZE)
    consts = (date, build, version.minor, version.major)
    if identity == "header":
        module = header + filler
    elif identity == "immediates":
        code = _buildinfo.immediates_code(*consts)
        body = bytearray(b"\x7fELF" + filler[4:] + bytes(SYNTH_HEADER_SIZE))
        body[0x100:0x100 + len(code)] = code
        module = bytes(body)
    elif identity == "rodata":
        module = _elf_with_rodata(_buildinfo.rodata_record(*consts), filler + bytes(SYNTH_HEADER_SIZE),
                                  pages * PAGE_SIZE)
    else:
        module = b"\x7fELF" + filler[4:] + bytes(SYNTH_HEADER_SIZE)
    assert len(module) == pages * PAGE_SIZE

    module_size = pages * PAGE_SIZE
    gdt_idt = module_size - PAGE_SIZE if pages >= 2 else 0  # last page; 0 = no GDT/IDT patching
    fault_wrapper = 0x100 if gdt_idt else 0
    sig = Sigstruct.from_bytes(bytes(SIGSTRUCT_SIZE)).replace(
        header_type=HEADER_TYPE_GENERIC_FW,
        header_length=HEADER_LENGTH_DWORDS,
        header_version=HEADER_VERSION,
        module_type=MODULE_TYPE_DEBUG if debug else 0,
        module_vendor=MODULE_VENDOR_INTEL,
        date=_bcd(date),
        size=SIZE_DWORDS,
        key_size=KEY_SIZE_DWORDS,
        modulus_size=MODULUS_SIZE_DWORDS,
        exponent_size=EXPONENT_SIZE_DWORDS,
        seamhash=seamhash(module),
        seamsvn=(major_svn << 8) | minor_svn,
        rip_offset=SYNTH_HEADER_SIZE,  # "entry point" right after the identity header
        num_stack_pages=1,
        num_tls_pages=1,
        num_keyhole_pages=127,
        num_global_data_pages=global_pages,
        module_hv=module_hv,
        min_update_hv=min_update_hv,
        no_downgrade=no_downgrade,
        num_handoff_pages=handoff,
        gdt_idt_offset=gdt_idt,
        fault_wrapper_offset=fault_wrapper,
        reserved3=declared_version_bytes(version, build) if style == "2.0" else bytes(24),
        cpuid_table_size=len(cpuids),
        cpuid_table=cpuids + (0,) * (MAX_CPUID_TABLE_SIZE - len(cpuids)),
    )
    return sign_sigstruct(sig, key).to_bytes(), module


def _elf_with_rodata(record: bytes, filler: bytes, size: int) -> bytes:
    """A minimal ELF64 file of `size` bytes: .text (filler) and .rodata holding `record`, as a
    clang build keeps its build constants."""
    import struct

    names = b"\0.text\0.rodata\0.shstrtab\0"
    text_off, text_size = 0x40, 0x200
    ro_off = text_off + text_size
    ro = filler[text_size:text_size + 0x40].replace(b"\0", b"\1")
    ro = ro[:0x18] + record + ro[0x18 + len(record):]
    str_off = ro_off + len(ro)
    sh_off = (str_off + len(names) + 7) & ~7
    shdrs = b"".join(struct.pack("<IIQQQQIIQQ", *h) for h in (
        (0, 0, 0, 0, 0, 0, 0, 0, 0, 0),
        (1, 1, 6, text_off, text_off, text_size, 0, 0, 16, 0),  # .text: PROGBITS, AX
        (7, 1, 2, ro_off, ro_off, len(ro), 0, 0, 8, 0),  # .rodata: PROGBITS, A
        (15, 3, 0, 0, str_off, len(names), 0, 0, 1, 0),  # .shstrtab
    ))
    ehdr = struct.pack("<4sBBBBB7sHHIQQQIHHHHHH", b"\x7fELF", 2, 1, 1, 0, 0, bytes(7), 3, 62, 1,
                       text_off, 0, sh_off, 0, 64, 0, 0, 64, 4, 3)
    body = ehdr + filler[:text_size] + ro + names
    body += bytes(sh_off - len(body)) + shdrs
    return body + filler[len(body):size] if len(body) < size else body[:size]


def make_image(version: ModuleVersion | str = ModuleVersion(1, 5, 8), **kwargs) -> bytes:
    """`make_module` packed as a v2 update image (what the kernel's fw_upload takes)."""
    return _image.build_v2(*make_module(version, **kwargs))


def make_blob(version: ModuleVersion | str = ModuleVersion(1, 5, 8), **kwargs) -> bytes:
    """`make_module` packed as an Intel-style v1 blob."""
    return _image.build_v1(*make_module(version, **kwargs))
