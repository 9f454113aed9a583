"""Offline verification of a module file: everything a P-SEAMLDR would check, and more, named.

Order of the problems reported: container (v1/v2 header, checksum, reserved bytes), then the
sigstruct checks in the P-SEAMLDR's order (spec-firmware §7.4, via `check_sigstruct`: structure,
key pin, debug bit, SVN, GDT/IDT ranges, CPUID table, RSA signature), then SEAMHASH against the
module, then what only a tool can see (ELF entry point vs rip_offset, size limit of the v2 image), then
the module's identity (`formats.identity`: the firmware's own answers, the sigstruct, the build
constants in the binary, the file name, --module-version, the mapping row): sources that disagree
are the problem `identity.conflict`, a version nothing states is `identity.unknown`; the CLI
makes either a one-line error with exit 3.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from collections.abc import Callable

from tdxseam.formats.identity import IdentityError, ModuleIdentity, resolve_identity
from tdxseam.formats.mapping import MappingFile
from tdxseam.formats.page import nr_pages, pad_to_pages
from tdxseam.formats.record import field, record
from tdxseam.formats.seamldr_params import SEAMLDR_MAX_NR_MODULE_PAGES
from tdxseam.formats.measure import check_seamhash
from tdxseam.formats.sigstruct import INTEL_KEY_HASH, Sigstruct, check_sigstruct
from tdxseam.formats.version import ModuleVersion
from tdxseam.tool.catalog import Issue, ModuleFile, mapping_beside

TYPE_CHECKING = False  # typing costs start-up; annotations are strings (PEP 563)
if TYPE_CHECKING:
    from typing import Any

_NO_MODULE_SIZE = 1 << 40  # range checks cannot fail without a module; it is reported instead


@record(frozen=True)
class VerifyOptions:
    trusted_key_hashes: tuple[bytes, ...] = (INTEL_KEY_HASH,)
    allow_debug: bool = False
    module_version: ModuleVersion | None = None  # --module-version, for a file that states nothing
    mapping: MappingFile | None = None  # the catalog's mapping file (else one beside the file)
    probe: Callable[[bytes, bytes], Any] | None = field(default=None, compare=False)  # real firmware


@record
class VerifyResult:
    file: ModuleFile
    problems: list[Issue]
    notes: list[str]
    sig: Sigstruct | None
    identity: ModuleIdentity | None
    version: ModuleVersion | None
    version_source: str | None  # formats.identity.Source value: "firmware", "sigstruct", "binary", ...
    signing_key: str | None  # "intel", "trusted", "untrusted"

    @property
    def identity_problem(self) -> Issue | None:
        """Facts that disagree, or a version nothing states: the CLI's exit 3."""
        return next((p for p in self.problems if p.code.startswith("identity.")), None)

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def codes(self) -> list[str]:
        return [p.code for p in self.problems]

    def to_json(self) -> dict[str, Any]:
        s = self.sig
        return {
            "file": self.file.display,
            "ok": self.ok,
            "version": str(self.version) if self.version else None,
            "problems": [p.to_json() for p in self.problems],
            "format": self.file.format,
            "version_source": self.version_source,
            "identity": self.identity.to_json() if self.identity else None,
            "signing_key": self.signing_key,
            "debug": s.is_debug if s else None,
            "seamsvn": f"{s.major_svn}.{s.minor_svn}" if s else None,
            "cpuids": [f"0x{c:x}" for c in s.cpuids] if s else [],
            "date": s.date_text if s else None,
            "mrseam": s.seamhash.hex() if s else None,
            "notes": self.notes,
        }


def _elf_entry(module: bytes) -> int | None:
    if len(module) >= 32 and module[:4] == b"\x7fELF" and module[4] == 2:  # ELFCLASS64
        return struct.unpack_from("<Q", module, 24)[0]
    return None


def verify_module(mf: ModuleFile, opts: VerifyOptions = VerifyOptions()) -> VerifyResult:
    problems: list[Issue] = list(mf.issues)
    notes: list[str] = []
    sig: Sigstruct | None = None
    identity = None
    key = None
    if mf.sigstruct is not None and len(mf.sigstruct) == 2048:
        sig = Sigstruct.from_bytes(mf.sigstruct)
    elif not any(p.code.startswith(("pair.", "format")) for p in problems):
        problems.append(Issue("sigstruct.missing", "no sigstruct could be located in the file"))

    module = mf.module
    if sig is not None:
        declared = sig.declared_version
        # a 2.0 P-SEAMLDR reads reserved3 as version fields; a 1.5 sigstruct must keep it zero
        allow_r3 = declared is not None and declared.version.major >= 2
        size = len(pad_to_pages(module)) if module is not None else _NO_MODULE_SIZE
        for p in check_sigstruct(sig, module_size=size, trusted_key_hashes=opts.trusted_key_hashes,
                                 platform_cpuids=None, debug_unlocked=opts.allow_debug,
                                 allow_reserved3=allow_r3):
            msg = p.message
            if p.code == "debug":
                msg = "module is debug-signed (module_type bit 31); production hosts refuse it (--allow-debug)"
            problems.append(Issue(p.code, msg))
        if sig.key_hash == INTEL_KEY_HASH:
            key = "intel"
        elif sig.key_hash in set(opts.trusted_key_hashes):
            key = "trusted"
        else:
            key = "untrusted"
        if module is not None:
            bad = check_seamhash(sig, module)
            if bad is not None:
                problems.append(Issue("seamhash", bad.message))
            entry = _elf_entry(module)
            if entry is not None and entry != sig.rip_offset:
                problems.append(Issue("entry", f"ELF entry point 0x{entry:x} differs from the "
                                               f"sigstruct's rip_offset 0x{sig.rip_offset:x}"))
            if nr_pages(len(module)) > SEAMLDR_MAX_NR_MODULE_PAGES:
                problems.append(Issue("too_large", f"module has {nr_pages(len(module))} pages, "
                                                   f"an update image holds at most {SEAMLDR_MAX_NR_MODULE_PAGES}"))
            if len(module) % 4096:
                notes.append(f"module is {len(module)} bytes, not a whole number of pages; zero-padded")
        elif not any(p.code == "pair.missing_module" for p in problems):
            problems.append(Issue("module.missing", "no module pages could be located in the file"))
        mapping = opts.mapping if opts.mapping is not None else mapping_beside(mf.path)
        try:
            identity = resolve_identity(sig, module, name=mf.path.name, option=opts.module_version,
                                        mapping=mapping, probe=opts.probe, what=mf.display)
            notes.extend(identity.notes)
        except IdentityError as exc:
            problems.append(Issue(f"identity.{exc.code}", str(exc)))

    version = identity.version if identity is not None else None
    source = identity.source.value if identity is not None else None
    return VerifyResult(mf, problems, notes, sig, identity, version, source, key)


def verify_files(files: Iterable[ModuleFile], opts: VerifyOptions = VerifyOptions()) -> list[VerifyResult]:
    return [verify_module(f, opts) for f in files]


@record
class TrustedKeys:
    """The key pins in force: Intel's production key plus any --trust-key PEM files."""

    hashes: list[bytes] = field(default_factory=lambda: [INTEL_KEY_HASH])

    @classmethod
    def from_pem_files(cls, paths: Iterable[str]) -> TrustedKeys:
        from tdxseam.formats.errors import FormatError
        from tdxseam.formats.files import FileError, read_file
        from tdxseam.formats.sigstruct import PEM_MAX_SIZE, key_hash_from_pem
        from tdxseam.tool.errors import ToolError

        out = cls()
        for p in paths:
            try:
                pem = read_file(p, PEM_MAX_SIZE, "a PEM public key")
            except FileError as exc:
                raise ToolError(f"--trust-key {exc}") from None
            try:
                out.hashes.append(key_hash_from_pem(pem))
            except FormatError as exc:
                raise ToolError(f"--trust-key {p}: {exc}") from None
        return out
