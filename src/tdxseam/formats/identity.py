"""Which module is this? Each fact from the files, with the source that stated it.

Sources, most authoritative first (`Source`):
1. FIRMWARE: the module's own TDH.SYS.RD answers, when a real-firmware engine ran the binary
   (passed in as `firmware=`: `formats` runs nothing itself);
2. SIGSTRUCT: a 2.0 sigstruct's declared version and build (reserved3), signed by the vendor;
3. BINARY: the build constants compiled into the `.bin` (`formats.buildinfo`: major, minor,
   build number and build date; never the update number);
4. SYNTHETIC: the identity header of a synthetic test module;
5. FILE_NAME: Intel's file name `tdx_module_X.Y.Z.*`;
6. OPTION: the operator's `--module-version X.Y.Z`, for a file that carries nothing;
7. MAPPING: the mapping file's row for the version (TDX_FEATURES0 only; Intel has changed it
   after release, so it never overrides and is never compared with a better source).
Every source that states a fact must agree with every other (`IdentityError`, code "conflict");
a version that no source completes is `IdentityError` code "unknown", naming the missing fact
and what supplies it. `formats.releases` is a cross-check, never a source: an Intel-signed file
whose identity contradicts it is refused, one it does not list is fine.

Handoff fields (module_hv, min_update_hv, no_downgrade, num_handoff_pages) always come from the
sigstruct, because that is what the P-SEAMLDR copies into SYS_INFO_TABLE.
"""

from __future__ import annotations

import re
from enum import Enum
from collections.abc import Callable

from tdxseam.formats.buildinfo import FORM_TEXT, BuildConstants, find_build_constants
from tdxseam.formats.errors import FormatError, VersionError
from tdxseam.formats.mapping import MappingFile
from tdxseam.formats.record import field, record
from tdxseam.formats.releases import known_release, known_version
from tdxseam.formats.sigstruct import INTEL_KEY_HASH, Sigstruct
from tdxseam.formats.synthetic import SyntheticHeader
from tdxseam.formats.version import ModuleVersion

TYPE_CHECKING = False  # typing costs start-up; annotations are strings (PEP 563)
if TYPE_CHECKING:
    from typing import Any, Protocol

OPTION = "--module-version"
_NAME_RE = re.compile(r"tdx_module_(\d+\.\d+\.\d+)")


class Source(Enum):
    FIRMWARE = "firmware"
    SIGSTRUCT = "sigstruct"
    BINARY = "binary"
    SYNTHETIC = "synthetic"
    FILE_NAME = "file-name"
    OPTION = "option"
    MAPPING = "mapping"



SOURCE_TEXT = {
    Source.FIRMWARE: "the module's own TDH.SYS.RD answers",
    Source.SIGSTRUCT: "the sigstruct",
    Source.BINARY: "the binary",
    Source.SYNTHETIC: "the synthetic module's identity header",
    Source.FILE_NAME: "the file name",
    Source.OPTION: OPTION,
    Source.MAPPING: "the mapping file",
}
_ORDER = list(Source)
VERSION_FACTS = ("major", "minor", "update")
FACTS = (*VERSION_FACTS, "build_num", "build_date", "tdx_features0")


class IdentityError(FormatError):
    """Facts about a module that disagree (code "conflict"), or a version no source completes
    (code "unknown"). One line, naming the file, the fact and the sources."""


class FirmwareFacts(Protocol if TYPE_CHECKING else object):
    """What a real-firmware engine read from the module with TDH.SYS.RD."""

    ok: bool
    major: int
    minor: int
    update: int
    build_num: int
    build_date: int
    tdx_features0: int | None


def version_from_name(name: str) -> ModuleVersion | None:
    """The version in Intel's file name `tdx_module_<x.y.zz>.*`, if it has one."""
    m = _NAME_RE.search(name)
    if m is None:
        return None
    try:
        return ModuleVersion.parse(m.group(1))
    except VersionError:
        return None


@record(frozen=True)
class ModuleIdentity:
    version: ModuleVersion
    build_num: int | None
    build_date: int | None  # decimal yyyymmdd
    tdx_features0: int | None  # None when no source states it
    sources: tuple[tuple[str, Source], ...]  # (fact, the source its value came from)
    binary_form: str | None  # which form of build constants matched (buildinfo.FORM_*), if any
    seamsvn: int
    seamhash: bytes
    module_hv: int
    min_update_hv: int
    no_downgrade: int
    num_handoff_pages: int
    notes: tuple[str, ...] = ()
    # bytes of handoff data the binary's TDH.SYS.SHUTDOWN wrote when the real-firmware engine ran
    # it (the least its TDH.SYS.UPDATE reads); None when nothing ran it: no file states it
    handoff_size: int | None = None

    @property
    def build(self) -> int | None:
        return self.build_num

    def source_of(self, fact: str) -> Source | None:
        return dict(self.sources).get(fact)

    @property
    def source(self) -> Source:
        """The most authoritative source that stated any part of the version."""
        return min((s for f, s in self.sources if f in VERSION_FACTS), key=_ORDER.index)

    @property
    def date_text(self) -> str | None:
        if self.build_date is None:
            return None
        d = f"{self.build_date:08d}"
        return f"{d[0:4]}-{d[4:6]}-{d[6:8]}"

    @property
    def provenance(self) -> str:
        """Where each fact came from, e.g. "build constants from the binary (the TDH.SYS.INFO
        immediates), update number from the file name"."""
        by_source: dict[Source, list[str]] = {}
        for f, s in self.sources:
            by_source.setdefault(s, []).append(f)
        parts = []
        for s in sorted(by_source, key=_ORDER.index):
            facts = set(by_source[s])
            if s is Source.BINARY:
                what = "build date" if facts == {"build_date"} else "build constants"
            elif s in (Source.FIRMWARE, Source.SYNTHETIC):
                what = "identity"
            elif facts >= set(VERSION_FACTS) and "build_num" in facts:
                what = "version and build"
            elif facts >= set(VERSION_FACTS):
                what = "version"
            elif facts == {"update"}:
                what = "update number"
            elif facts == {"tdx_features0"}:
                what = "TDX_FEATURES0"
            else:
                what = ", ".join(sorted(facts))
            text = f"{what} from {SOURCE_TEXT[s]}"
            if s is Source.BINARY and self.binary_form:
                text += f" ({FORM_TEXT[self.binary_form]})"
            parts.append(text)
        return ", ".join(parts)

    def describe(self) -> str:
        """`1.5.16 build 869 (2025-02-19): build constants from the binary, ...`"""
        head = str(self.version)
        if self.build_num is not None:
            head += f" build {self.build_num}"
        if self.date_text:
            head += f" ({self.date_text})"
        return f"{head}: {self.provenance}"

    def to_json(self) -> dict[str, Any]:
        return {
            "version": str(self.version),
            "build_num": self.build_num,
            "build_date": self.build_date,
            "tdx_features0": None if self.tdx_features0 is None else f"0x{self.tdx_features0:X}",
            "sources": {f: s.value for f, s in self.sources},
            "binary_form": self.binary_form,
            "handoff_size": self.handoff_size,
            "summary": self.describe(),
            "notes": list(self.notes),
        }


@record
class _Claims:
    """Every source's statement of every fact, in authority order."""

    what: str
    by_fact: dict[str, list[tuple[Source, int]]] = field(default_factory=lambda: {f: [] for f in FACTS})
    said: dict[Source, str] = field(default_factory=dict)  # how each source put it, for messages

    def add(self, source: Source, text: str, **facts: int | None) -> None:
        self.said[source] = text
        for f, v in facts.items():
            if v is not None:
                self.by_fact[f].append((source, v))

    def settle(self, fact: str, compare: bool = True) -> tuple[int, Source] | None:
        claims = self.by_fact[fact]
        if not claims:
            return None
        first_src, first = claims[0]
        if compare:
            for src, v in claims[1:]:
                if v != first:
                    raise IdentityError(
                        self.what, f"{_says(first_src)} {self.said[first_src]}, {_says(src)} {self.said[src]}",
                        code="conflict", field=_FACT_TEXT[fact])
        return first, first_src


def _says(src: Source) -> str:
    return SOURCE_TEXT[src] + (" say" if src is Source.FIRMWARE else " says")


_FACT_TEXT = {"major": "major version", "minor": "minor version", "update": "update number",
              "build_num": "build number", "build_date": "build date", "tdx_features0": "TDX_FEATURES0"}


def _fmt_build(c: BuildConstants) -> str:
    return f"{c.major}.{c.minor} build {c.build_num} ({c.date_text})"


def resolve_identity(
    sig: Sigstruct,
    module: bytes | None = None,
    *,
    name: str | None = None,
    option: ModuleVersion | None = None,
    mapping: MappingFile | None = None,
    firmware: FirmwareFacts | None = None,
    probe: Callable[[bytes, bytes], FirmwareFacts] | None = None,
    what: str = "module",
) -> ModuleIdentity:
    """The module's identity from every source given (see the module docstring).

    `name` is the file name (Intel's `tdx_module_X.Y.Z.*`), `option` the operator's
    --module-version, `mapping` a mapping file whose row for the version gives TDX_FEATURES0,
    `firmware` what a real-firmware engine read from the running binary (or `probe`, a callable
    (sigstruct, module) -> those facts, to run it). `what` names the file in errors.
    IdentityError if the sources disagree or the version stays unknown.
    """
    if firmware is None and probe is not None and module is not None:
        firmware = probe(sig.to_bytes(), bytes(module))
    c = _Claims(what)
    notes: list[str] = []
    if firmware is not None and getattr(firmware, "ok", False):
        fv = ModuleVersion(firmware.major, firmware.minor, firmware.update)
        c.add(Source.FIRMWARE, f"{fv} build {firmware.build_num}", major=fv.major, minor=fv.minor,
              update=fv.update, build_num=firmware.build_num, build_date=firmware.build_date,
              tdx_features0=firmware.tdx_features0)
    elif firmware is not None:
        notes.append(f"the real-firmware engine could not run it: {getattr(firmware, 'error', None) or 'no answer'}")
    declared = sig.declared_version
    if declared is not None:
        dv = declared.version
        c.add(Source.SIGSTRUCT, f"{dv} build {declared.build}", major=dv.major, minor=dv.minor,
              update=dv.update, build_num=declared.build)
    consts = find_build_constants(module) if module is not None else None
    if consts is not None:
        c.add(Source.BINARY, _fmt_build(consts), major=consts.major, minor=consts.minor,
              build_num=consts.build_num, build_date=consts.build_date)
    synth = SyntheticHeader.find(module) if module is not None else None
    if synth is not None:
        sv = synth.version
        c.add(Source.SYNTHETIC, f"{sv} build {synth.build_num}", major=sv.major, minor=sv.minor,
              update=sv.update, build_num=synth.build_num, build_date=synth.build_date,
              tdx_features0=synth.tdx_features0)
    named = version_from_name(name) if name else None
    if named is not None:
        c.add(Source.FILE_NAME, str(named), major=named.major, minor=named.minor, update=named.update)
    if option is not None:
        c.add(Source.OPTION, str(option), major=option.major, minor=option.minor, update=option.update)

    settled = {f: c.settle(f) for f in (*VERSION_FACTS, "build_num", "build_date")}
    missing = [f for f in VERSION_FACTS if settled[f] is None]
    if missing:
        raise _unknown(what, missing, consts)
    version = ModuleVersion(*(settled[f][0] for f in VERSION_FACTS))

    row = mapping.get(version) if mapping is not None else None
    if row is not None and row.tdx_feature0 is not None:
        c.add(Source.MAPPING, f"0x{row.tdx_feature0:X}", tdx_features0=row.tdx_feature0)
    settled["tdx_features0"] = c.settle("tdx_features0", compare=False)  # informational (see above)

    ident = ModuleIdentity(
        version=version,
        build_num=settled["build_num"][0] if settled["build_num"] else None,
        build_date=settled["build_date"][0] if settled["build_date"] else None,
        tdx_features0=settled["tdx_features0"][0] if settled["tdx_features0"] else None,
        sources=tuple((f, s[1]) for f, s in settled.items() if s is not None),
        binary_form=consts.form if consts is not None else None,
        seamsvn=sig.seamsvn, seamhash=sig.seamhash, module_hv=sig.module_hv,
        min_update_hv=sig.min_update_hv, no_downgrade=sig.no_downgrade,
        num_handoff_pages=sig.num_handoff_pages, notes=tuple(notes),
        handoff_size=getattr(firmware, "handoff_size", None) if getattr(firmware, "ok", False) else None,
    )
    cross_check(ident, sig, what)
    return ident


def _unknown(what: str, missing: list[str], consts: BuildConstants | None) -> IdentityError:
    if consts is not None and missing == ["update"]:
        line = f"{consts.major}.{consts.minor}"
        detail = (f"the binary states {_fmt_build(consts)} but not its update number (a 1.5 sigstruct "
                  f"carries none); name the file tdx_module_{line}.NN.* as Intel does, or pass "
                  f"{OPTION} {line}.NN")
    else:
        detail = ("version unknown: no version in the sigstruct, no build constants in the binary, no "
                  f"tdx_module_X.Y.Z in the file name; pass {OPTION} X.Y.Z")
    return IdentityError(what, detail, code="unknown")


def cross_check(ident: ModuleIdentity, sig: Sigstruct, what: str) -> None:
    """Refuse an Intel-signed file that contradicts Intel's release data (`formats.releases`).

    The data is keyed two ways: this MRSEAM must be the release the data says, and the release
    this file claims to be must have this MRSEAM. A file the data does not list passes.
    """
    if sig.key_hash != INTEL_KEY_HASH:
        return  # a test-signed module is not Intel's release, whatever it calls itself
    by_hash = known_release(sig.seamhash)
    if by_hash is not None and (by_hash.version != ident.version
                                or (ident.build_num is not None and ident.build_num != by_hash.build)):
        raise IdentityError(what, f"Intel's release data says this MRSEAM is {by_hash.version} build "
                                  f"{by_hash.build}, the file is identified as {_short(ident)}",
                            code="conflict", field="release data")
    by_version = known_version(ident.version)
    if by_version is not None and by_version.mrseam != bytes(sig.seamhash):
        raise IdentityError(what, f"Intel's release data says {by_version.version} is build {by_version.build} "
                                  f"(MRSEAM {by_version.mrseam.hex()[:16]}...), this file is {_short(ident)} "
                                  f"(MRSEAM {bytes(sig.seamhash).hex()[:16]}...)",
                            code="conflict", field="release data")


def _short(ident: ModuleIdentity) -> str:
    return str(ident.version) + (f" build {ident.build_num}" if ident.build_num is not None else "")


def identify_image(data: bytes, *, name: str | None = None, what: str | None = None,
                   **hints: Any) -> ModuleIdentity:
    """`resolve_identity` of a v1 blob or v2 image (FormatError if it cannot be split)."""
    from tdxseam.formats.image import extract

    label = what or name or "image"
    parts = extract(bytes(data), what=label)
    return resolve_identity(Sigstruct.from_bytes(parts.sigstruct), parts.module, name=name, what=label, **hints)
