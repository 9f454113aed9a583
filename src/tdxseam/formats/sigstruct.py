"""The 2048-byte SEAM sigstruct: layout, signature, and the P-SEAMLDR's checks as data.

Layout: spec-formats §1 / spec-firmware §9.3. Signature recipe: spec-formats §2. Check order:
spec-firmware §7.4. `check_sigstruct` returns *every* failed check in the loader's order, so the
P-SEAMLDR emulator takes the first problem's status and the operator tool lists them all.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Iterable
from functools import lru_cache

from tdxseam.formats.errors import SigstructError
from tdxseam.formats.page import PAGE_SIZE
from tdxseam.formats.record import record, replace
from tdxseam.formats.status import SeamldrStatus
from tdxseam.formats.version import ModuleVersion

SIGSTRUCT_SIZE = 2048
SEAM_SIGSTRUCT_HEADER_SIZE = 128  # signed header: bytes 0..0x7F
SIG_SIZE = 384 + 4 + 384  # modulus + exponent + signature, left out of the signed message
BODY_OFFSET = SEAM_SIGSTRUCT_HEADER_SIZE + SIG_SIZE  # 900 = 0x384
BODY_SIZE = SIGSTRUCT_SIZE - BODY_OFFSET  # 1148
SIGNED_MESSAGE_SIZE = SEAM_SIGSTRUCT_HEADER_SIZE + BODY_SIZE  # 1276

HEADER_TYPE_GENERIC_FW = 6
HEADER_LENGTH_DWORDS = 0xE1  # 900 bytes: header + key + signature
HEADER_VERSION = 0x0001_0000
MODULE_VENDOR_INTEL = 0x8086
SIZE_DWORDS = 0x200  # 2048 bytes
KEY_SIZE_DWORDS = 0x60  # 384 bytes
MODULUS_SIZE_DWORDS = 0x60
EXPONENT_SIZE_DWORDS = 1
RSA_EXPONENT = 0x10001
RSA_KEY_BYTES = 384  # RSA-3072
MAX_CPUID_TABLE_SIZE = 255
MODULE_TYPE_DEBUG = 1 << 31
CPUID_STEPPING_MASK = 0xF  # CPUID.1.EAX bits 3:0, ignored when matching the table
EXCEPTION_TABLE_SIZE = 32 * 16  # 32 vectors x 16-byte fault-wrapper stubs

# SHA-384 of Intel's production modulus as stored (little-endian); the P-SEAMLDR's built-in
# INTEL_SIGNER_KEY_HASH (spec-formats §2, spec-firmware §7.4 step 8).
INTEL_KEY_HASH = bytes.fromhex(
    "c8572f548869a0beca19376b81c2dffc2a23b5a5f71da0b87579b43f408daa1a"
    "33bad9c149eb56c634f883737968a34c"
)

# (field name, struct code) in layout order; bytes fields are kept raw so to_bytes() round-trips.
_LAYOUT: tuple[tuple[str, str], ...] = (
    ("header_type", "I"),  # 0x000
    ("header_length", "I"),  # 0x004
    ("header_version", "I"),  # 0x008
    ("module_type", "I"),  # 0x00C
    ("module_vendor", "I"),  # 0x010
    ("date", "I"),  # 0x014
    ("size", "I"),  # 0x018
    ("key_size", "I"),  # 0x01C
    ("modulus_size", "I"),  # 0x020
    ("exponent_size", "I"),  # 0x024
    ("reserved0", "88s"),  # 0x028
    ("modulus", "384s"),  # 0x080
    ("exponent", "I"),  # 0x200
    ("signature", "384s"),  # 0x204
    ("seamhash", "48s"),  # 0x384
    ("seamsvn", "H"),  # 0x3B4
    ("attributes", "Q"),  # 0x3B6
    ("rip_offset", "I"),  # 0x3BE
    ("num_stack_pages", "B"),  # 0x3C2
    ("num_tls_pages", "B"),  # 0x3C3
    ("num_keyhole_pages", "H"),  # 0x3C4
    ("num_global_data_pages", "H"),  # 0x3C6
    ("max_tdmrs", "H"),  # 0x3C8
    ("max_rsvd_per_tdmr", "H"),  # 0x3CA
    ("pamt_entry_size_4k", "H"),  # 0x3CC
    ("pamt_entry_size_2m", "H"),  # 0x3CE
    ("pamt_entry_size_1g", "H"),  # 0x3D0
    ("reserved1", "6s"),  # 0x3D2
    ("module_hv", "H"),  # 0x3D8
    ("min_update_hv", "H"),  # 0x3DA
    ("no_downgrade", "B"),  # 0x3DC
    ("reserved2", "1s"),  # 0x3DD
    ("num_handoff_pages", "H"),  # 0x3DE
    ("gdt_idt_offset", "I"),  # 0x3E0
    ("fault_wrapper_offset", "I"),  # 0x3E4
    ("reserved3", "24s"),  # 0x3E8
    ("cpuid_table_size", "I"),  # 0x400
)
_STRUCT = struct.Struct("<" + "".join(code for _, code in _LAYOUT) + f"{MAX_CPUID_TABLE_SIZE}I")
assert _STRUCT.size == SIGSTRUCT_SIZE

# Offsets of every field, for error messages and tests ("what lives at 0x3B4?").
FIELD_OFFSETS: dict[str, int] = {}
_off = 0
for _name, _code in _LAYOUT:
    FIELD_OFFSETS[_name] = _off
    _off += struct.calcsize("<" + _code)
FIELD_OFFSETS["cpuid_table"] = _off
del _off, _name, _code

# 2.0 sigstructs use reserved3 for the module version (spec-formats §1; layout inferred).
_RESERVED3_VERSION = struct.Struct("<HBBHH")


@record(frozen=True)
class DeclaredVersion:
    """The version a 2.0-style sigstruct carries in reserved3 (absent in 1.5 sigstructs)."""

    version: ModuleVersion
    build: int
    unknown: int  # u16 @0x3EE; 0x0008 in 2.0.04 only, meaning not known


@record(frozen=True)
class Sigstruct:
    """Every field of the SEAM sigstruct, little-endian, exactly as stored.

    Parsing never judges values (any 2048 bytes parse); `check_sigstruct` does that, so a tool can
    show a bad sigstruct before explaining why a loader would refuse it.
    """

    header_type: int
    header_length: int
    header_version: int
    module_type: int
    module_vendor: int
    date: int
    size: int
    key_size: int
    modulus_size: int
    exponent_size: int
    reserved0: bytes
    modulus: bytes
    exponent: int
    signature: bytes
    seamhash: bytes
    seamsvn: int
    attributes: int
    rip_offset: int
    num_stack_pages: int
    num_tls_pages: int
    num_keyhole_pages: int
    num_global_data_pages: int
    max_tdmrs: int
    max_rsvd_per_tdmr: int
    pamt_entry_size_4k: int
    pamt_entry_size_2m: int
    pamt_entry_size_1g: int
    reserved1: bytes
    module_hv: int
    min_update_hv: int
    no_downgrade: int
    reserved2: bytes
    num_handoff_pages: int
    gdt_idt_offset: int
    fault_wrapper_offset: int
    reserved3: bytes
    cpuid_table_size: int
    cpuid_table: tuple[int, ...]  # all 255 slots, so unused slots round-trip too

    @classmethod
    def from_bytes(cls, data: bytes, *, what: str = "sigstruct") -> Sigstruct:
        """Parse exactly 2048 bytes; the only failure is a wrong length."""
        if len(data) != SIGSTRUCT_SIZE:
            raise SigstructError(
                what, f"is {len(data)} bytes, expected {SIGSTRUCT_SIZE}", code="length"
            )
        values = _STRUCT.unpack(bytes(data))
        n = len(_LAYOUT)
        fields = dict(zip((name for name, _ in _LAYOUT), values[:n]))
        return cls(**fields, cpuid_table=tuple(values[n:]))

    def to_bytes(self) -> bytes:
        values = [getattr(self, name) for name, _ in _LAYOUT]
        table = tuple(self.cpuid_table)
        if len(table) != MAX_CPUID_TABLE_SIZE:
            raise SigstructError(
                "sigstruct", f"has {len(table)} slots, expected {MAX_CPUID_TABLE_SIZE}",
                code="cpuid_table", field="cpuid_table",
            )
        try:
            return _STRUCT.pack(*values, *table)
        except struct.error as exc:  # a field out of range after replace()
            raise SigstructError("sigstruct", f"cannot pack: {exc}", code="pack") from None

    def replace(self, **changes: object) -> Sigstruct:
        """A copy with some fields changed (the signature is NOT recomputed)."""
        return replace(self, **changes)

    # -- derived values ---------------------------------------------------------------------

    @property
    def is_debug(self) -> bool:
        """module_type bit 31: debug-signed, loadable only on debug-unlocked hardware."""
        return bool(self.module_type & MODULE_TYPE_DEBUG)

    @property
    def major_svn(self) -> int:
        return (self.seamsvn >> 8) & 0xFF

    @property
    def minor_svn(self) -> int:
        return self.seamsvn & 0xFF

    @property
    def cpuids(self) -> tuple[int, ...]:
        """The used table entries (at most 255 even if cpuid_table_size claims more)."""
        return self.cpuid_table[: min(self.cpuid_table_size, MAX_CPUID_TABLE_SIZE)]

    @property
    def key_hash(self) -> bytes:
        """SHA-384 of the 384 modulus bytes as stored: what the loader pins."""
        return hashlib.sha384(self.modulus).digest()

    @property
    def modulus_int(self) -> int:
        return int.from_bytes(self.modulus, "little")

    @property
    def signature_int(self) -> int:
        return int.from_bytes(self.signature, "little")

    @property
    def signed_message(self) -> bytes:
        """Bytes 0:0x80 + 0x384:0x800 (1276 bytes): key and signature are omitted, not zeroed."""
        raw = self.to_bytes()
        return raw[:SEAM_SIGSTRUCT_HEADER_SIZE] + raw[BODY_OFFSET:]

    @property
    def declared_version(self) -> DeclaredVersion | None:
        """The 2.0 reserved3 version fields, or None when they are all zero (1.5 sigstructs)."""
        head = self.reserved3[: _RESERVED3_VERSION.size]
        if not any(head):
            return None
        update, minor, major, build, unknown = _RESERVED3_VERSION.unpack(head)
        return DeclaredVersion(ModuleVersion(major, minor, update), build, unknown)

    @property
    def date_text(self) -> str:
        """The BCD yyyymmdd date as "yyyy-mm-dd" (hex digits shown as they are if not BCD)."""
        d = f"{self.date:08x}"
        return f"{d[0:4]}-{d[4:6]}-{d[6:8]}"


def declared_version_bytes(version: ModuleVersion, build: int, unknown: int = 0) -> bytes:
    """reserved3 contents of a 2.0-style sigstruct declaring `version` and `build`."""
    head = _RESERVED3_VERSION.pack(version.update, version.minor, version.major, build, unknown)
    return head + bytes(24 - len(head))


# -- signature --------------------------------------------------------------------------------


def modulus_bytes(n: int) -> bytes:
    """A modulus as the sigstruct stores it: 384 bytes, little-endian."""
    return n.to_bytes(RSA_KEY_BYTES, "little")


def key_hash_of_modulus(n: int) -> bytes:
    """The pin value for a public modulus: SHA-384 of its little-endian 384-byte form."""
    return hashlib.sha384(modulus_bytes(n)).digest()


PEM_MAX_SIZE = 64 << 10  # an RSA-3072 key in PEM is ~0.6 KiB public, ~2.5 KiB private


def key_hash_from_pem(pem: bytes) -> bytes:
    """Pin value for an RSA-3072 public key in PEM (e.g. `--trust-key`); FormatError if unfit."""
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
    from cryptography.hazmat.primitives.serialization import load_pem_public_key

    try:
        key = load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise SigstructError("trusted key", f"not a PEM public key ({exc})", code="pem") from None
    if not isinstance(key, RSAPublicKey) or key.key_size != 3072:
        raise SigstructError("trusted key", "must be an RSA-3072 public key", code="pem")
    numbers = key.public_numbers()
    if numbers.e != RSA_EXPONENT:
        raise SigstructError("trusted key", f"exponent {numbers.e} is not 65537", code="pem")
    return key_hash_of_modulus(numbers.n)


# DER DigestInfo prefix of a SHA-384 digest (RFC 8017 §9.2, note 1)
_SHA384_DIGEST_INFO = bytes.fromhex("3041300d060960864801650304020205000430")


def pkcs1v15_sha384_encoding(message: bytes, k: int = RSA_KEY_BYTES) -> bytes:
    """EMSA-PKCS1-v1_5 (RFC 8017 §9.2) of SHA-384(message) for a k-byte modulus:
    00 01 FF..FF 00 || DigestInfo || H."""
    t = _SHA384_DIGEST_INFO + hashlib.sha384(message).digest()
    return b"\x00\x01" + b"\xff" * (k - len(t) - 3) + b"\x00" + t


def verify_signature(sig: Sigstruct) -> bool:
    """RSA-3072 PKCS#1 v1.5 / SHA-384 over `signed_message`, with the sigstruct's own modulus.

    Whether that modulus is trusted is a separate check (key_hash). Fixed e = 65537 as in
    spec-formats §2; a different stored exponent is a separate check too.

    RFC 8017 §8.2.2: s^e mod n must equal the one valid encoding of the message's digest, byte
    for byte; nothing of the decrypted block is parsed. With public values only this needs no
    constant-time care, and it spares every `plan` and `verify` from loading cryptography (tests
    hold it to cryptography's verdict on valid, forged and mutated signatures).
    """
    n = sig.modulus_int
    s = sig.signature_int
    if n.bit_length() != 3072 or not (0 < s < n):
        return False
    em = pow(s, RSA_EXPONENT, n).to_bytes(RSA_KEY_BYTES, "big")
    return em == pkcs1v15_sha384_encoding(sig.signed_message)


@lru_cache(maxsize=16)
def _openssl_public_key(n: int):  # noqa: ANN202 (a cryptography RSAPublicKey)
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicNumbers

    return RSAPublicNumbers(RSA_EXPONENT, n).public_key()


def verify_signature_openssl(sig: Sigstruct) -> bool:
    """`verify_signature`'s verdict through OpenSSL (cryptography), some six times quicker.

    For callers that verify signatures all day (the emulated P-SEAMLDR checks one at every
    install, boot-time loads included); it loads cryptography, which `plan` and `verify` avoid.
    OpenSSL's PKCS#1 v1.5 check also compares the whole encoding (padding, DigestInfo, digest);
    tests hold both functions to the same verdicts.
    """
    n = sig.modulus_int
    s = sig.signature_int
    if n.bit_length() != 3072 or not (0 < s < n):
        return False
    return _openssl_verdict(n, s, sig.signed_message)


@lru_cache(maxsize=256)
def _openssl_verdict(n: int, s: int, message: bytes) -> bool:
    """The RSA check as a pure function of its inputs, remembered: a simulation campaign installs
    the same few images thousands of times, and each check costs about 90 us."""
    invalid, padding, digest = _openssl_verify_args()
    try:
        _openssl_public_key(n).verify(s.to_bytes(RSA_KEY_BYTES, "big"), message, padding, digest)
    except (invalid, ValueError):
        return False
    return True


@lru_cache(maxsize=1)
def _openssl_verify_args() -> tuple:
    """(InvalidSignature, PKCS1v15(), SHA384()): imported once, when first needed."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.padding import PKCS1v15
    from cryptography.hazmat.primitives.hashes import SHA384

    return InvalidSignature, PKCS1v15(), SHA384()


# -- the P-SEAMLDR's checks as data -----------------------------------------------------------


@record(frozen=True)
class Problem:
    """One failed loader check: a stable code, the §7.4 step, a message, the loader's status.

    `step` orders problems as the loader meets them: 1-16 are spec-firmware §7.4 steps;
    SEAMHASH_STEP (17) is the hash comparison of INSTALL, which comes after all of them.
    """

    code: str
    step: int
    message: str
    status: SeamldrStatus

    def __str__(self) -> str:
        return f"{self.code}: {self.message} ({self.status.name})"


# Every code check_sigstruct can produce, in check order, with its §7.4 step.
CHECK_CODES: tuple[tuple[str, int], ...] = (
    ("reserved0", 1), ("reserved1", 1), ("reserved2", 1), ("reserved3", 1),
    ("header_type", 2), ("header_length", 2), ("header_version", 2),
    ("key_size", 3), ("modulus_size", 3), ("exponent_size", 3),
    ("module_vendor", 4), ("module_type", 4), ("attributes", 4),
    ("size", 5), ("cpuid_table_size", 5),
    ("exponent", 6),
    ("hv_order", 7), ("gdt_idt_alignment", 7), ("gdt_fault_pair", 7),
    ("key_hash", 8),
    ("debug", 9),
    ("major_svn_zero", 10),
    ("major_svn_change", 11), ("svn_downgrade", 11),
    ("cleanup_required", 12),
    ("gdt_idt_range", 13), ("fault_wrapper_range", 13),
    ("cpuid", 14),
    ("no_cpuid_table", 15),
    ("signature", 16),
)
_STEP = dict(CHECK_CODES)
SEAMHASH_STEP = 17


def _problem(code: str, message: str, status: SeamldrStatus = SeamldrStatus.EBADSIG) -> Problem:
    return Problem(code, _STEP[code], message, status)


def check_sigstruct(
    sig: Sigstruct,
    *,
    module_size: int,
    trusted_key_hashes: Iterable[bytes] = (INTEL_KEY_HASH,),
    platform_cpuids: Iterable[int] | None = None,
    debug_unlocked: bool = False,
    current_svn: int | None = None,
    dirty_svn: int | None = None,
    allow_reserved3: bool = False,
    verifier: Callable[[Sigstruct], bool] = verify_signature,
) -> list[Problem]:
    """All sigstruct/manifest checks of SEAMLDR.INSTALL, in the order of spec-firmware §7.4.

    - module_size: num_module_pages x 4096 from SEAMLDR_PARAMS (for the step-13 range checks).
    - trusted_key_hashes: the built-in pin(s); a test P-SEAMLDR may trust a test key as well.
    - platform_cpuids: CPUID.1.EAX of every socket; None skips step 14 (offline verification).
    - current_svn: the running module's seamsvn, for scenario UPDATE; None means LOAD.
    - dirty_svn: for LOAD with key/cache dirty (no CLEANUP since the last install), the seamsvn
      still recorded in SEAMEXTEND; None means clean.
    - allow_reserved3: True for a 2.0 P-SEAMLDR, which accepts the 2.0 version fields.
    - verifier: the RSA check (step 16): `verify_signature`, or `verify_signature_openssl`,
      the same verdict, quicker, for a caller that does not mind loading cryptography.

    The first problem's `status` is what the loader returns; an empty list means it would accept.
    SEAMHASH is not checked here: the loader hashes later, after the range is initialised
    (see `tdxseam.formats.measure.check_seamhash`).
    """
    out: list[Problem] = []
    add = out.append
    EBADSIG, EUNSUPPORTED = SeamldrStatus.EBADSIG, SeamldrStatus.EUNSUPPORTED

    # 1. reserved fields (reserved3 carries the version in 2.0 sigstructs)
    for name in ("reserved0", "reserved1", "reserved2") + (() if allow_reserved3 else ("reserved3",)):
        if any(getattr(sig, name)):
            add(_problem(name, f"{name} @0x{FIELD_OFFSETS[name]:x} is not zero"))
    # 2-6. fixed header values
    for name, want in (
        ("header_type", HEADER_TYPE_GENERIC_FW),
        ("header_length", HEADER_LENGTH_DWORDS),
        ("header_version", HEADER_VERSION),
        ("key_size", KEY_SIZE_DWORDS),
        ("modulus_size", MODULUS_SIZE_DWORDS),
        ("exponent_size", EXPONENT_SIZE_DWORDS),
        ("module_vendor", MODULE_VENDOR_INTEL),
    ):
        got = getattr(sig, name)
        if got != want:
            add(_problem(name, f"{name} is 0x{got:x}, expected 0x{want:x}"))
    if sig.module_type & ~MODULE_TYPE_DEBUG:
        add(_problem("module_type", f"module_type 0x{sig.module_type:08x} has bits 30:0 set"))
    if sig.attributes:
        add(_problem("attributes", f"attributes is 0x{sig.attributes:x}, expected 0"))
    if sig.size != SIZE_DWORDS:
        add(_problem("size", f"size is 0x{sig.size:x} dwords, expected 0x{SIZE_DWORDS:x}"))
    if sig.cpuid_table_size > MAX_CPUID_TABLE_SIZE:
        add(_problem("cpuid_table_size", f"cpuid_table_size {sig.cpuid_table_size} exceeds 255"))
    if sig.exponent != RSA_EXPONENT:
        add(_problem("exponent", f"exponent is 0x{sig.exponent:x}, expected 0x10001"))
    # 7. handoff versions and GDT/IDT layout
    if sig.min_update_hv > sig.module_hv:
        add(_problem("hv_order", f"min_update_hv {sig.min_update_hv} > module_hv {sig.module_hv}"))
    if sig.gdt_idt_offset % PAGE_SIZE:
        add(_problem("gdt_idt_alignment", f"gdt_idt_offset 0x{sig.gdt_idt_offset:x} is not 4 KiB-aligned"))
    if (sig.gdt_idt_offset == 0) != (sig.fault_wrapper_offset == 0):
        add(_problem(
            "gdt_fault_pair",
            f"gdt_idt_offset 0x{sig.gdt_idt_offset:x} and fault_wrapper_offset "
            f"0x{sig.fault_wrapper_offset:x} must be both zero or both non-zero",
        ))
    # 8. key pin
    trusted = {bytes(h) for h in trusted_key_hashes}
    if sig.key_hash not in trusted:
        add(_problem("key_hash", f"signing key {sig.key_hash.hex()[:16]}… is not trusted"))
    # 9. debug-signed modules need debug-unlocked hardware
    if sig.is_debug and not debug_unlocked:
        add(_problem("debug", "module is debug-signed but the platform is not debug-unlocked"))
    # 10-12. SVN policy
    if sig.major_svn == 0:
        add(_problem("major_svn_zero", "major SVN is 0 (not loadable)", EUNSUPPORTED))
    if current_svn is not None:
        cur_major, cur_minor = (current_svn >> 8) & 0xFF, current_svn & 0xFF
        if sig.major_svn != cur_major:
            add(_problem(
                "major_svn_change",
                f"major SVN {sig.major_svn} differs from the running module's {cur_major}",
                EUNSUPPORTED,
            ))
        if sig.minor_svn < cur_minor:
            add(_problem(
                "svn_downgrade", f"minor SVN {sig.minor_svn} is below the running module's {cur_minor}"
            ))
    elif dirty_svn is not None:
        cur_major, cur_minor = (dirty_svn >> 8) & 0xFF, dirty_svn & 0xFF
        if sig.major_svn != cur_major or sig.minor_svn < cur_minor:
            add(_problem(
                "cleanup_required",
                f"SVN {sig.major_svn}.{sig.minor_svn} would replace {cur_major}.{cur_minor} "
                "without SEAMLDR.CLEANUP",
                SeamldrStatus.ECLEANUPREQ,
            ))
    # 13. GDT/IDT and fault wrapper inside the module (checked only when non-zero, as the loader)
    if sig.gdt_idt_offset and sig.gdt_idt_offset > module_size - PAGE_SIZE:
        add(_problem(
            "gdt_idt_range",
            f"gdt_idt_offset 0x{sig.gdt_idt_offset:x} beyond module size 0x{module_size:x} - 4 KiB",
        ))
    if sig.fault_wrapper_offset and sig.fault_wrapper_offset > module_size - EXCEPTION_TABLE_SIZE:
        add(_problem(
            "fault_wrapper_range",
            f"fault_wrapper_offset 0x{sig.fault_wrapper_offset:x} beyond module size "
            f"0x{module_size:x} - 512",
        ))
    # 14. every socket's CPU must be in the table (stepping masked)
    if platform_cpuids is not None and sig.cpuid_table_size > 0:
        table = {c & ~CPUID_STEPPING_MASK for c in sig.cpuids}
        missing = sorted({c for c in platform_cpuids if c & ~CPUID_STEPPING_MASK not in table})
        if missing:
            add(_problem(
                "cpuid",
                "CPUID.1.EAX " + ", ".join(f"0x{c:x}" for c in missing) + " not in the module's table",
                SeamldrStatus.EUNSUPCPU,
            ))
    # 15. a production module must name its CPUs
    if not sig.is_debug and sig.cpuid_table_size == 0:
        add(_problem("no_cpuid_table", "production-signed module has an empty CPUID table"))
    # 16. RSA signature
    if not verifier(sig):
        add(_problem("signature", "RSA-3072/SHA-384 signature does not verify"))
    return out


def first_status(problems: list[Problem]) -> SeamldrStatus:
    """What the loader returns for these problems: the first one's status, else success."""
    return problems[0].status if problems else SeamldrStatus.PSEAMLDR_SUCCESS
