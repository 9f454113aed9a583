"""Errors raised by the `tdxseam.formats` parsers.

Every parser in `formats` raises only `FormatError` subclasses, so a caller that feeds it
untrusted bytes (a fw_upload write, a file on disk, a mapping file from the network) needs one
`except FormatError` and gets a one-line message naming the structure, the field and the offset.
`code` is a short stable name for the failed check, for tests, `--json` output and emulators that
must tell one rejection from another without parsing English.
"""

from __future__ import annotations


class FormatError(ValueError):
    """Malformed or invalid data; `str()` is one line: "<what>: <field> @0x<offset>: <detail>"."""

    def __init__(
        self,
        what: str,
        detail: str,
        *,
        code: str = "invalid",
        field: str | None = None,
        offset: int | None = None,
    ) -> None:
        self.what = what
        self.detail = detail
        self.code = code
        self.field = field
        self.offset = offset
        where = what
        if field is not None:
            where += f": {field}"
        if offset is not None:
            where += f" @0x{offset:x}"
        super().__init__(f"{where}: {detail}")


class VersionError(FormatError):
    """A version string that is not "major.minor.update" with decimal integers."""


class SigstructError(FormatError):
    """A SEAM sigstruct that cannot even be parsed (wrong length)."""


class BlobError(FormatError):
    """An Intel v1 "TDX-BLOB" container (header version 0x100) that fails validation."""


class ImageError(FormatError):
    """A Linux v2 update image (header version 0x200) that fails validation."""


class MappingError(FormatError):
    """A `mapping_file.json` that is not JSON or breaks the schema for a required key."""
