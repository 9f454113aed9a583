"""Module files and catalogs: what the operator tool can install.

A *module file* is one of: an Intel v1 blob (0x100), a Linux v2 image (0x200), or a `.bin` +
`.sigstruct` pair (either half named; the other is found beside it). Loading is lenient: a
container that fails validation is still split where possible, so `verify` can name every
failure (a bad checksum *and* the SEAMHASH mismatch behind it), not just the first.

A *catalog* is a directory laid out like Intel's binaries repository (spec-formats §0):
`mapping_file.json`, `joined_files/<a.b>/tdx_module_<x.y.zz>.blob` and
`separate_files/<a.b>/<x.y.zz>/tdx_module_<x.y.zz>.{bin,sigstruct}`. The mapping file is parsed
by `formats.mapping`, which turns unknown or missing fields into drift warnings.
"""

from __future__ import annotations

import os
import re
import stat
import struct
from pathlib import Path

from tdxseam.formats.errors import FormatError, MappingError
from tdxseam.formats.files import FileError, errno_text, read_file
from tdxseam.formats.identity import ModuleIdentity, resolve_identity, version_from_name
from tdxseam.formats.image import (
    MODULE_FILE_MAX_SIZE,
    PAGE_SIZE,
    TDX_BLOB_SIGNATURE,
    TDX_IMAGE_VERSION_1,
    TDX_IMAGE_VERSION_2,
    V1_MIN_MODULE_OFFSET,
    V1_SIGSTRUCT_OFFSET,
    parse_v1,
    parse_v2,
)
from tdxseam.formats.mapping import MAPPING_FILE_MAX_SIZE, MappingFile, MappingRelease, parse_mapping
from tdxseam.formats.record import field, record
from tdxseam.formats.sigstruct import SIGSTRUCT_SIZE
from tdxseam.formats.version import ModuleVersion
from tdxseam.tool.errors import ToolError

TYPE_CHECKING = False  # typing costs start-up; annotations are strings (PEP 563)
if TYPE_CHECKING:
    from typing import Any

MAPPING_FILE = "mapping_file.json"
MAX_FILE_SIZE = MODULE_FILE_MAX_SIZE
_LINE_DIR_RE = re.compile(r"^\d+\.\d+$")


@record(frozen=True)
class Issue:
    """A named problem: a stable `code` for scripts and a one-line `message` for people."""

    code: str
    message: str

    def to_json(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}

    def __str__(self) -> str:
        return f"{self.code}: {self.message}"


@record
class ModuleFile:
    """A module as found on disk: its parts if they could be located, and container issues."""

    path: Path  # the blob / image, or the .bin of a pair
    format: str  # "v1", "v2", "pair" or "unknown"
    sigstruct: bytes | None
    module: bytes | None
    issues: list[Issue] = field(default_factory=list)
    sigstruct_path: Path | None = None  # the .sigstruct of a pair
    raw: bytes | None = None  # the container as read (v1/v2)
    # `raw` itself when its strict parse passed at load (module_from_bytes): not parsed again
    valid_raw: bytes | None = field(default=None, repr=False, compare=False)

    @property
    def name_version(self) -> ModuleVersion | None:
        """The version in Intel's file name `tdx_module_<x.y.zz>.*`, if it has one."""
        return version_from_name(self.path.name)

    @property
    def display(self) -> str:
        if self.sigstruct_path is not None:
            return f"{self.path} + {self.sigstruct_path.name}"
        return str(self.path)


def _read(path: Path) -> bytes:
    """A module file's bytes through the one reader: a regular file, at most the largest module
    file of any format (FileError, exit 3, otherwise)."""
    return read_file(path, MODULE_FILE_MAX_SIZE, "a TDX module file")


def container_kind(data: bytes) -> str | None:
    """"v1"/"v2" by header version *or* magic, so a damaged header is still recognised."""
    version = int.from_bytes(data[:2], "little") if len(data) >= 2 else -1
    if data[8:16] == TDX_BLOB_SIGNATURE or (version == TDX_IMAGE_VERSION_1 and len(data) >= PAGE_SIZE):
        return "v1"
    if data[4:12] == TDX_BLOB_SIGNATURE or (version == TDX_IMAGE_VERSION_2 and len(data) >= PAGE_SIZE):
        return "v2"
    return None


def split_container(data: bytes, kind: str) -> tuple[bytes | None, bytes | None, list[Issue]]:
    """(sigstruct, module, issues): strict validation first, then a best-effort split."""
    issues: list[Issue] = []
    try:
        if kind == "v1":
            v1 = parse_v1(data)
            return v1.sigstruct, v1.module, issues
        v2 = parse_v2(data)
        return v2.sigstruct, v2.module, issues
    except FormatError as exc:
        issues.append(Issue(f"{kind}.{exc.code}", str(exc)))
    sig = data[PAGE_SIZE : PAGE_SIZE + SIGSTRUCT_SIZE] if len(data) >= PAGE_SIZE + SIGSTRUCT_SIZE else None
    if kind == "v1":
        off = struct.unpack_from("<I", data, 4)[0] if len(data) >= 8 else 0
        if off % PAGE_SIZE or not V1_MIN_MODULE_OFFSET <= off < len(data):
            off = V1_MIN_MODULE_OFFSET
        assert V1_SIGSTRUCT_OFFSET == PAGE_SIZE
    else:
        sig_pages = struct.unpack_from("<I", data, 12)[0] if len(data) >= 16 else 1
        off = PAGE_SIZE * (1 + sig_pages) if sig_pages == 1 else 2 * PAGE_SIZE
    module = data[off:] if len(data) > off else None
    return sig, module, issues


def _looks_like_sigstruct(data: bytes) -> bool:
    return len(data) == SIGSTRUCT_SIZE


def load_module_file(path: str | os.PathLike[str]) -> ModuleFile:
    """Load one module file; ToolError (BAD_INPUT) only if it cannot be read at all."""
    path = Path(path)
    data = _read(path)
    kind = container_kind(data)
    if kind is not None:
        return module_from_bytes(data, path)
    if path.suffix == ".sigstruct" or (_looks_like_sigstruct(data) and path.suffix != ".bin"):
        return _load_pair(path.with_suffix(".bin"), path, sigstruct=data)
    return _load_pair(path, path.with_suffix(".sigstruct"), module=data)


def module_from_bytes(data: bytes, path: str | os.PathLike[str] = "image") -> ModuleFile:
    """A v1 blob or v2 image already in memory (`path` only names it, e.g. for its version)."""
    data = bytes(data)
    kind = container_kind(data)
    if kind is None:
        return ModuleFile(Path(path), "unknown", None, None,
                          [Issue("format", "not a v1 blob (0x100) or v2 image (0x200)")], raw=data)
    sig, module, issues = split_container(data, kind)
    return ModuleFile(Path(path), kind, sig, module, issues, raw=data, valid_raw=None if issues else data)


def _load_pair(bin_path: Path, sig_path: Path, *, sigstruct: bytes | None = None,
               module: bytes | None = None) -> ModuleFile:
    issues: list[Issue] = []
    if sigstruct is None:
        try:
            sigstruct = _read(sig_path)
        except FileError as exc:
            if exc.code != "missing":
                raise
            return ModuleFile(bin_path, "unknown", None, module, [Issue(
                "format", f"not a v1 blob or v2 image, and no {sig_path.name} beside it")])
    if module is None:
        try:
            module = _read(bin_path)
        except FileError as exc:
            if exc.code != "missing":
                raise
            return ModuleFile(bin_path, "pair", sigstruct, None, [Issue(
                "pair.missing_module", f"{sig_path.name} has no {bin_path.name} beside it")],
                sigstruct_path=sig_path)
    if len(sigstruct) != SIGSTRUCT_SIZE:
        issues.append(Issue("pair.sigstruct_length",
                            f"{sig_path.name} is {len(sigstruct)} bytes, a sigstruct is {SIGSTRUCT_SIZE}"))
        sigstruct = None
    if not module:
        issues.append(Issue("pair.empty_module", f"{bin_path.name} is empty"))
        module = None
    return ModuleFile(bin_path, "pair", sigstruct, module, issues, sigstruct_path=sig_path)


def load_module_files(paths: list[str]) -> list[ModuleFile]:
    """Load FILE arguments; `x.bin x.sigstruct` given together count as one module."""
    out: list[ModuleFile] = []
    seen: set[tuple[str, str]] = set()
    for p in paths:
        path = Path(p)
        if path.suffix in (".bin", ".sigstruct"):
            key = (str(path.parent), path.stem)
            if key in seen:
                continue
            seen.add(key)
        out.append(load_module_file(path))
    return out


# -- catalog -----------------------------------------------------------------------------------------


@record
class CatalogRelease:
    """One version in a catalog: its file (if any), its mapping entry (if any), and notes."""

    version: ModuleVersion
    file: ModuleFile | None
    mapping: MappingRelease | None
    in_joined_files: bool  # Intel's tool sees only joined_files blobs
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        m = self.mapping
        return {
            "version": str(self.version),
            "file": self.file.display if self.file else None,
            "format": self.file.format if self.file else None,
            "mapping": None if m is None else {
                "min_module_version_for_td_preserving": str(m.min_module_version_for_td_preserving),
                "min_seamldr_versions": [str(v) for v in m.min_seamldr_versions],
                "tdx_feature0": None if m.tdx_feature0 is None else f"0x{m.tdx_feature0:X}",
                "strict_compat_versions": [str(v) for v in m.strict_compat_versions],
            },
            "notes": self.notes,
        }


@record
class Catalog:
    path: Path
    mapping: MappingFile
    releases: list[CatalogRelease]  # newest first
    warnings: list[str]  # mapping drift and catalog oddities

    def get(self, version: ModuleVersion) -> CatalogRelease | None:
        return next((r for r in self.releases if r.version == version), None)

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "mapping_version": self.mapping.header.version,
            "release_count": len(self.releases),
            "warnings": self.warnings,
        }


def _same_parts(a: ModuleFile, b: ModuleFile) -> bool:
    return a.sigstruct == b.sigstruct and a.module == b.module


def _entries(d: Path, root: Path) -> list[Path] | None:
    """The entries of directory `d`, sorted; None if there is nothing at `d`. A directory that
    cannot be listed is an error, never an empty one: skipping it would hide releases."""
    try:
        with os.scandir(d) as it:
            return sorted(Path(e.path) for e in it)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        raise ToolError(f"catalog {root}: {d.relative_to(root) if d != root else d} is not a directory") from None
    except OSError as exc:
        raise ToolError(f"catalog {root}: cannot list {d} ({errno_text(exc)})") from None


def _is_dir(p: Path, root: Path) -> bool:
    try:
        return stat.S_ISDIR(os.stat(p).st_mode)
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise ToolError(f"catalog {root}: cannot look at {p} ({errno_text(exc)})") from None


def load_catalog(path: str | os.PathLike[str]) -> Catalog:
    """Read a catalog directory; ToolError if it, a directory in it or its mapping file is unusable."""
    root = Path(path)
    if _entries(root, root) is None:
        raise ToolError(f"catalog {root}: not a directory (nothing there)")
    mpath = root / MAPPING_FILE
    try:
        mapping = parse_mapping(read_file(mpath, MAPPING_FILE_MAX_SIZE, "a mapping file"), source=MAPPING_FILE)
    except FileError as exc:
        if exc.code == "missing":
            raise ToolError(f"catalog {root}: no {MAPPING_FILE} (is this a copy of Intel's binaries "
                            "repository?)") from None
        raise ToolError(f"catalog {root}: {exc}") from None
    except MappingError as exc:
        raise ToolError(f"catalog {root}: {exc}") from None
    warnings = [f"{MAPPING_FILE}: {w}" for w in mapping.warnings]

    files: dict[ModuleVersion, tuple[ModuleFile, bool]] = {}
    dup_notes: dict[ModuleVersion, list[str]] = {}
    for line_dir in _entries(root / "joined_files", root) or []:
        if not (_LINE_DIR_RE.match(line_dir.name) and _is_dir(line_dir, root)):
            continue
        for f in _entries(line_dir, root) or []:
            if not (f.name.startswith("tdx_module_") and f.name.endswith(".blob")):
                continue
            v = version_from_name(f.name)
            if v is None:
                warnings.append(f"{f.relative_to(root)}: no version in the file name; skipped")
                continue
            if f"{v.major}.{v.minor}" != line_dir.name:
                warnings.append(f"{f.relative_to(root)}: version {v} filed under {line_dir.name}/")
            files[v] = (load_module_file(f), True)
    bins: list[Path] = []
    for line_dir in _entries(root / "separate_files", root) or []:
        if not _is_dir(line_dir, root):
            continue
        for rel_dir in _entries(line_dir, root) or []:
            if _is_dir(rel_dir, root):
                bins += [f for f in _entries(rel_dir, root) or []
                         if f.name.startswith("tdx_module_") and f.name.endswith(".bin")]
    for f in sorted(bins):
        v = version_from_name(f.name)
        if v is None:
            warnings.append(f"{f.relative_to(root)}: no version in the file name; skipped")
            continue
        mf = load_module_file(f)
        if v in files:
            if not _same_parts(files[v][0], mf):
                dup_notes.setdefault(v, []).append(
                    f"{f.relative_to(root)} and its sigstruct differ from the joined blob")
            continue
        files[v] = (mf, False)

    releases: list[CatalogRelease] = []
    for v, (mf, in_joined) in files.items():
        rel = CatalogRelease(v, mf, mapping.get(v), in_joined, dup_notes.get(v, []))
        if rel.mapping is None:
            rel.notes.append(f"no entry in {MAPPING_FILE}")
        if not in_joined:
            rel.notes.append("only in separate_files (Intel's tool looks at joined_files only)")
        releases.append(rel)
    for m in mapping:
        if m.version not in files:
            releases.append(CatalogRelease(m.version, None, m, False, ["listed in the mapping file, no file"]))
    releases.sort(key=lambda r: r.version, reverse=True)
    return Catalog(root, mapping, releases, warnings)


# -- identity --------------------------------------------------------------------------------------


def identify(mf: ModuleFile, *, mapping: MappingFile | None = None, option: ModuleVersion | None = None,
             probe=None) -> ModuleIdentity:
    """What a module file is, from its bytes, its name, the mapping row and --module-version
    (`formats.identity.resolve_identity`). IdentityError when they disagree or say too little;
    ToolError when the file has no sigstruct to speak of."""
    from tdxseam.formats.sigstruct import Sigstruct

    if mf.sigstruct is None or len(mf.sigstruct) != SIGSTRUCT_SIZE:
        raise ToolError(f"{mf.display}: no sigstruct could be located in the file")
    return resolve_identity(Sigstruct.from_bytes(mf.sigstruct), mf.module, name=mf.path.name, option=option,
                            mapping=mapping, probe=probe, what=mf.display)


def catalog_root_of(path: Path) -> Path | None:
    """The catalog a module file sits in (joined_files/<a.b>/f or separate_files/<a.b>/<x.y.zz>/f,
    with a mapping file at the top), or None."""
    path = Path(path).absolute()
    up = path.parent.parent
    if up.name == "joined_files":
        root = up.parent
    elif up.parent.name == "separate_files":
        root = up.parent.parent
    else:
        return None
    return root if (root / MAPPING_FILE).is_file() else None


def mapping_beside(path: Path) -> MappingFile | None:
    """The mapping file of the catalog a module file sits in, for its row's TDX_FEATURES0; None
    elsewhere or if unusable."""
    root = catalog_root_of(path)
    if root is None:
        return None
    try:
        return parse_mapping(read_file(root / MAPPING_FILE, MAPPING_FILE_MAX_SIZE, "a mapping file"),
                             source=MAPPING_FILE)
    except (MappingError, FileError):
        return None


def catalog_identities(cat: Catalog, probe=None) -> list[ModuleIdentity]:
    """The identity of every module file in a catalog (what an emulated platform is told)."""
    return [identify(r.file, mapping=cat.mapping, probe=probe) for r in cat.releases if r.file is not None]
