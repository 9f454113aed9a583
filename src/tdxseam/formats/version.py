"""TDX module and P-SEAMLDR versions as integer triples.

Versions are compared as integer tuples, never as strings or semver (spec-formats §10.1):
"1.5.10" > "1.5.09" and "1.5.9" == "1.5.09".
"""

from __future__ import annotations

import re
from collections import namedtuple

from tdxseam.formats.errors import VersionError

_VERSION_RE = re.compile(r"([0-9]{1,5})\.([0-9]{1,5})\.([0-9]{1,5})")  # ASCII only: `\d` also matches other scripts' digits


# collections.namedtuple rather than typing.NamedTuple: the same class, without loading typing
class ModuleVersion(namedtuple("ModuleVersion", "major minor update")):
    """major.minor.update; tuple order is version order. `str()` gives Intel's "x.y.zz"."""

    __slots__ = ()

    @classmethod
    def parse(cls, text: str) -> ModuleVersion:
        """Parse "1.5.08" (surrounding whitespace allowed); each part must fit in a u16."""
        if not isinstance(text, str):
            raise VersionError("version", f"expected a string, got {type(text).__name__}", code="type")
        m = _VERSION_RE.fullmatch(text.strip())
        if m is None:
            raise VersionError("version", f"{text!r} is not major.minor.update", code="syntax")
        parts = tuple(int(g) for g in m.groups())
        if any(p > 0xFFFF for p in parts):
            raise VersionError("version", f"{text!r} has a part above 65535", code="range")
        return cls(*parts)

    def __str__(self) -> str:
        return "%u.%u.%02u" % (self.major, self.minor, self.update)

    @property
    def major_minor(self) -> tuple[int, int]:
        """The release line ("1.5", "2.0"): TD-preserving updates stay within one line."""
        return (self.major, self.minor)
