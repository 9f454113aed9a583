"""Turning any module file into the image a kernel's upload takes (spec-formats §7).

The merged kernel (`tdx_module` interface) takes only v2 (0x200) images; the older
`seamldr_upload` patch sets took Intel's v1 (0x100) blobs. Conversion never changes the
sigstruct or the module pages, so MRSEAM is the same whatever the container.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from tdxseam.formats.errors import FormatError
from tdxseam.formats.files import FileError, OutputRefused, write_file
from tdxseam.formats.image import build_v1, build_v2, kernel_check_v2, parse_v1, parse_v2
from tdxseam.formats.record import record
from tdxseam.tool.catalog import ModuleFile, load_module_file
from tdxseam.tool.errors import Kind, ToolError

FORMATS = ("v1", "v2")


def image_for(mf: ModuleFile, fmt: str = "v2", *, check_only: bool = False) -> bytes | None:
    """The container `fmt` holding `mf`'s sigstruct and module; ToolError if it cannot be built.

    A file already in `fmt` and valid is passed through byte for byte. `check_only`: raise what
    building would raise but build nothing (plan judges every release; only update needs bytes).
    """
    if fmt not in FORMATS:
        raise ToolError(f"unknown image format {fmt!r} (v1 or v2)", Kind.USAGE)
    if mf.sigstruct is None or mf.module is None:
        why = "; ".join(str(i) for i in mf.issues) or "sigstruct or module missing"
        raise ToolError(f"{mf.display}: cannot build an image ({why})")
    try:
        if mf.format == fmt and mf.raw is not None and not mf.issues:
            if mf.valid_raw is not mf.raw:  # else its strict parse passed when it was loaded
                (parse_v2 if fmt == "v2" else parse_v1)(mf.raw)
            return mf.raw
        if check_only:
            from tdxseam.formats.image import check_v1_parts, check_v2_parts

            (check_v2_parts if fmt == "v2" else check_v1_parts)(mf.sigstruct, mf.module)
            return None
        out = build_v2(mf.sigstruct, mf.module) if fmt == "v2" else build_v1(mf.sigstruct, mf.module)
    except FormatError as exc:
        raise ToolError(f"{mf.display}: {exc}") from None
    if fmt == "v2":
        rej = kernel_check_v2(out)
        if rej is not None:  # cannot happen for an image build_v2 made; kept as a guard
            raise ToolError(f"{mf.display}: the kernel would reject the image: {rej.message}")
    return out


@record(frozen=True)
class ConvertResult:
    source: str
    source_format: str
    output: str
    output_format: str
    size: int
    sha384: str

    def to_json(self) -> dict[str, object]:
        return {"source": self.source, "source_format": self.source_format, "output": self.output,
                "output_format": self.output_format, "size": self.size, "sha384": self.sha384}


def convert_file(src: str | os.PathLike[str], dst: str | os.PathLike[str], *, fmt: str = "v2",
                 force: bool = False) -> ConvertResult:
    """Write `src` as a `fmt` image at `dst` through the one writer (formats.files): atomically, to
    a new path or, with `force`, over a regular file; never over a device, FIFO or symlink."""
    if fmt not in FORMATS:
        raise ToolError(f"unknown image format {fmt!r} (v1 or v2)", Kind.USAGE)
    mf = load_module_file(src)
    if mf.issues:
        raise ToolError(f"{mf.display}: " + "; ".join(str(i) for i in mf.issues))
    data = image_for(mf, fmt)
    out = Path(dst)
    try:
        write_file(out, data, replace=force)
    except OutputRefused as exc:
        raise ToolError(str(exc), Kind.USAGE) from None
    except FileError as exc:
        raise ToolError(str(exc)) from None
    return ConvertResult(mf.display, mf.format, str(out), fmt, len(data), hashlib.sha384(data).hexdigest())
