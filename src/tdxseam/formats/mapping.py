"""Intel's `mapping_file.json`: per-release compatibility data (spec-formats §10.1).

Intel changes this file over time (new keys such as `strict_compat_versions`, changed values), so
the parser separates *drift* from *breakage*: unknown keys, missing optional keys and odd but
usable values become `warnings` on the result; a missing or mistyped required key raises
`MappingError` naming the release and the key. Versions become integer tuples.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

from tdxseam.formats.errors import MappingError, VersionError
from tdxseam.formats.files import FileError, read_file
from tdxseam.formats.record import field, record
from tdxseam.formats.version import ModuleVersion

TYPE_CHECKING = False  # typing costs start-up; annotations are strings (PEP 563)
if TYPE_CHECKING:
    from typing import Any

SCHEMA_VERSION = "1.0"
_REQUIRED = ("version", "min_module_version_for_td_preserving", "min_seamldr_versions")
_OPTIONAL = ("tdx_feature0", "strict_compat_versions")
_HEADER_KEYS = ("Copyright", "Info", "Version")
_TOP_KEYS = ("Header", "tdx_module_releases")
_HEX_RE = re.compile(r"0[xX][0-9a-fA-F]+")
# Intel's file is ~3 KB for nine releases; a thousand times that is not a mapping file.
MAPPING_FILE_MAX_SIZE = 4 << 20


@record(frozen=True)
class MappingHeader:
    copyright: str | None = None
    info: str | None = None
    version: str | None = None


@record(frozen=True)
class MappingRelease:
    version: ModuleVersion
    min_module_version_for_td_preserving: ModuleVersion
    min_seamldr_versions: tuple[ModuleVersion, ...]
    tdx_feature0: int | None  # informational; Intel has changed it after release
    strict_compat_versions: tuple[ModuleVersion, ...] = ()  # absent in older copies: empty
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)  # unknown keys


@record(frozen=True)
class MappingFile:
    header: MappingHeader
    releases: tuple[MappingRelease, ...]
    warnings: tuple[str, ...] = ()

    def get(self, version: ModuleVersion | str) -> MappingRelease | None:
        if isinstance(version, str):
            version = ModuleVersion.parse(version)
        return next((r for r in self.releases if r.version == version), None)

    def __iter__(self) -> Iterator[MappingRelease]:
        return iter(self.releases)

    def __len__(self) -> int:
        return len(self.releases)


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.warnings: list[str] = []
        self.missing_optional: dict[str, list[str]] = {}
        self.unknown_keys: dict[str, list[str]] = {}  # key -> releases that have it

    def fail(self, where: str, detail: str, code: str) -> MappingError:
        return MappingError(self.source, detail, code=code, field=where)

    def version(self, value: Any, where: str) -> ModuleVersion:
        if not isinstance(value, str):
            raise self.fail(where, f"expected a version string, got {type(value).__name__}", "type")
        try:
            v = ModuleVersion.parse(value)
        except VersionError:
            raise self.fail(where, f"{value!r} is not a version x.y.zz", "value") from None
        if str(v) != value:
            self.warnings.append(f"{where}: version {value!r} is not in canonical form {str(v)!r}")
        return v

    def version_list(self, value: Any, where: str) -> tuple[ModuleVersion, ...]:
        if not isinstance(value, list):
            raise self.fail(where, f"expected a list of version strings, got {type(value).__name__}", "type")
        return tuple(self.version(v, f"{where}[{i}]") for i, v in enumerate(value))

    def header(self, raw: Any) -> MappingHeader:
        if raw is None:
            self.warnings.append("Header: missing")
            return MappingHeader()
        if not isinstance(raw, dict):
            raise self.fail("Header", f"expected an object, got {type(raw).__name__}", "type")
        vals: dict[str, str | None] = {}
        for key in _HEADER_KEYS:
            v = raw.get(key)
            if v is None:
                self.warnings.append(f"Header.{key}: missing")
            elif not isinstance(v, str):
                raise self.fail(f"Header.{key}", f"expected a string, got {type(v).__name__}", "type")
            vals[key] = v
        for key in sorted(raw.keys() - set(_HEADER_KEYS), key=str):
            self.warnings.append(f"Header.{key}: unknown key")
        if vals["Version"] is not None and vals["Version"] != SCHEMA_VERSION:
            self.warnings.append(f"Header.Version: {vals['Version']!r}, this parser knows {SCHEMA_VERSION!r}")
        return MappingHeader(vals["Copyright"], vals["Info"], vals["Version"])

    def release(self, raw: Any, index: int) -> MappingRelease:
        name = f"tdx_module_releases[{index}]"
        if not isinstance(raw, dict):
            raise self.fail(name, f"expected an object, got {type(raw).__name__}", "type")
        if isinstance(raw.get("version"), str):
            name += f" ({raw['version']})"
        for key in _REQUIRED:
            if key not in raw:
                raise self.fail(f"{name}.{key}", "required key is missing", "missing")
        version = self.version(raw["version"], f"{name}.version")
        td_floor = self.version(raw["min_module_version_for_td_preserving"],
                                f"{name}.min_module_version_for_td_preserving")
        seamldrs = self.version_list(raw["min_seamldr_versions"], f"{name}.min_seamldr_versions")
        if not seamldrs:
            self.warnings.append(f"{name}.min_seamldr_versions: empty, no P-SEAMLDR accepts it")
        feature0: int | None = None
        if "tdx_feature0" in raw:
            f = raw["tdx_feature0"]
            if not isinstance(f, str):
                raise self.fail(f"{name}.tdx_feature0", f"expected a hex string, got {type(f).__name__}", "type")
            if not _HEX_RE.fullmatch(f.strip()):
                raise self.fail(f"{name}.tdx_feature0", f"{f!r} is not a hex number like '0xF0FBF'", "value")
            feature0 = int(f.strip(), 16)
        else:
            self.missing_optional.setdefault("tdx_feature0", []).append(str(version))
        strict: tuple[ModuleVersion, ...] = ()
        if "strict_compat_versions" in raw:
            strict = self.version_list(raw["strict_compat_versions"], f"{name}.strict_compat_versions")
        else:
            self.missing_optional.setdefault("strict_compat_versions", []).append(str(version))
        extra = {k: raw[k] for k in raw if k not in _REQUIRED + _OPTIONAL}
        for key in sorted(extra, key=str):
            self.unknown_keys.setdefault(str(key), []).append(str(version))
        if td_floor.major_minor != version.major_minor or td_floor > version:
            self.warnings.append(
                f"{name}: min_module_version_for_td_preserving {td_floor} is not in {version}'s line at or below it"
            )
        return MappingRelease(version, td_floor, seamldrs, feature0, strict, extra)

    def parse(self, doc: Any) -> MappingFile:
        if not isinstance(doc, dict):
            raise self.fail("(top level)", f"expected an object, got {type(doc).__name__}", "type")
        header = self.header(doc.get("Header"))
        if "tdx_module_releases" not in doc:
            raise self.fail("tdx_module_releases", "required key is missing", "missing")
        raw_releases = doc["tdx_module_releases"]
        if not isinstance(raw_releases, list):
            raise self.fail("tdx_module_releases", f"expected a list, got {type(raw_releases).__name__}", "type")
        for key in sorted(doc.keys() - set(_TOP_KEYS), key=str):
            self.warnings.append(f"{key}: unknown top-level key")
        releases = tuple(self.release(r, i) for i, r in enumerate(raw_releases))
        seen: set[ModuleVersion] = set()
        for r in releases:
            if r.version in seen:
                raise self.fail("tdx_module_releases", f"release {r.version} is listed twice", "duplicate")
            seen.add(r.version)
        # drift is said once per kind: one line per unknown key, one per optional key that some
        # releases have and others lack (a key no release has is an older file, not drift)
        for key, versions in sorted(self.unknown_keys.items()):
            self.warnings.append(f"tdx_module_releases[].{key}: unknown key in {len(versions)} release(s) "
                                 f"({', '.join(versions)})")
        for key, versions in self.missing_optional.items():
            if len(versions) == len(releases):
                continue
            default = "[]" if key == "strict_compat_versions" else "unknown"
            self.warnings.append(f"{key}: missing in {len(versions)} release(s) ({', '.join(versions)}); "
                                 f"treated as {default}")
        return MappingFile(header, releases, tuple(self.warnings))


def parse_mapping(data: str | bytes | dict, *, source: str = "mapping_file.json") -> MappingFile:
    """Parse the JSON text (or an already-decoded object); MappingError if it is unusable."""
    if isinstance(data, (str, bytes, bytearray)):
        try:
            doc = json.loads(data)
        except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeDecodeError
            raise MappingError(source, f"not valid JSON ({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})",
                               code="json") from None
    else:
        doc = data
    return _Parser(source).parse(doc)


def load_mapping(path: str | Path) -> MappingFile:
    """Read (formats.files: a regular file, bounded) and parse; FileError or MappingError."""
    path = Path(path)
    try:
        data = read_file(path, MAPPING_FILE_MAX_SIZE, "a mapping file")
    except FileError as exc:
        raise MappingError(str(path), exc.detail, code="io") from None
    return parse_mapping(data, source=path.name)
