"""What the operator tool learns about a host, read only through files under a sysfs root.

The root is `/` on a real TDX host and a directory served by `tdxseam.sysfs` in tests and demos;
the tool never asks anything else about the machine. Paths and their meaning: spec-linux §7
(sysfs ABI) and §8 (userspace procedure).

Two kernel interfaces exist in the wild:
- merged (`tdx_module`): `/sys/class/firmware/tdx_module/`, `tdx_host/seamldr_version` and
  `tdx_host/num_remaining_updates`; it takes only v2 (0x200) images;
- pre-v4 patch sets (`seamldr_upload`): `/sys/class/firmware/seamldr_upload/`,
  `tdx_host/seamldr/version` and `tdx_host/seamldr/num_remaining_updates`; they take Intel's
  v1 (0x100) blobs.
"""

from __future__ import annotations

import errno
import os
from enum import Enum
from pathlib import Path

from tdxseam.formats.record import field, record
from tdxseam.formats.sysfs_abi import (
    CLASS_SEAMLDR_UPLOAD,
    CLASS_TDX_MODULE,
    CPU_ONLINE,
    CPU_PRESENT,
    CPUINFO,
    SEAMLDR_UPLOAD,
    TDX_HOST,
    TDX_MODULE_UPLOAD,
    UPLOAD_FILES,
)

TYPE_CHECKING = False  # typing costs start-up; annotations are strings (PEP 563)
if TYPE_CHECKING:
    from typing import Any


READ_ALL_MAX = 64 << 20  # /proc/cpuinfo of a 4096-CPU host is ~6 MiB


class Layout(Enum):
    """Which kernel interface the host offers for runtime update."""

    TDX_MODULE = "tdx_module"  # merged kernel (7.2+) and v4+ patch sets
    SEAMLDR_UPLOAD = "seamldr_upload"  # v3 and earlier patch sets


# per layout: candidate upload directories, P-SEAMLDR attribute paths, image format taken
_LAYOUTS: dict[Layout, tuple[tuple[str, ...], str, str, str]] = {
    Layout.TDX_MODULE: (
        (CLASS_TDX_MODULE, TDX_MODULE_UPLOAD),
        f"{TDX_HOST}/seamldr_version", f"{TDX_HOST}/num_remaining_updates", "v2",
    ),
    Layout.SEAMLDR_UPLOAD: (
        (CLASS_SEAMLDR_UPLOAD, SEAMLDR_UPLOAD),
        f"{TDX_HOST}/seamldr/version", f"{TDX_HOST}/seamldr/num_remaining_updates", "v1",
    ),
}


class SysfsRoot:
    """Plain file I/O under a root directory: the only way the tool touches a host.

    Every method takes a path relative to the root and raises OSError as the kernel's file
    would (ENXIO from a broken `version`, EBUSY from `error` during an upload, EACCES for a
    root-only attribute). A test can subclass this to serve files from memory.
    """

    def __init__(self, root: str | os.PathLike[str] = "/") -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"SysfsRoot({str(self.root)!r})"

    def path(self, rel: str) -> Path:
        return self.root / rel

    def exists(self, rel: str) -> bool:
        return os.path.exists(self.path(rel))

    def is_dir(self, rel: str) -> bool:
        return os.path.isdir(self.path(rel))

    def stat_error(self, rel: str) -> OSError | None:
        """Why `rel` cannot be looked at, when it is not simply absent (a stale FUSE mount gives
        ENOTCONN, which `is_dir` would hide as "no such directory")."""
        try:
            os.stat(self.path(rel))
        except FileNotFoundError:
            return None
        except OSError as exc:
            return exc
        return None

    def read_bytes(self, rel: str, limit: int) -> bytes:
        """Up to `limit` bytes of a file, in reads of at most a page as sysfs serves them."""
        fd = os.open(self.path(rel), os.O_RDONLY)
        try:
            return read_upto(fd, limit, 4096)
        finally:
            os.close(fd)

    def read_text(self, rel: str) -> str:
        # one read() of up to a page, as sysfs attributes are read
        fd = os.open(self.path(rel), os.O_RDONLY)
        try:
            return os.read(fd, 65536).decode("utf-8", "replace")
        finally:
            os.close(fd)

    def read_all(self, rel: str) -> str:
        """A whole file (/proc/cpuinfo is larger than one read on big hosts), bounded."""
        with open(self.path(rel), "rb") as f:
            return f.read(READ_ALL_MAX).decode("utf-8", "replace")

    def write_text(self, rel: str, text: str) -> None:
        """The text in one write() call, as `echo 1 > loading` does (O_TRUNC, which sysfs ignores;
        never O_CREAT: a missing attribute is an error, not a file to make)."""
        fd = os.open(self.path(rel), os.O_WRONLY | os.O_TRUNC)
        try:
            write_all(fd, text.encode())
        finally:
            os.close(fd)

    def open_write(self, rel: str) -> int:
        return os.open(self.path(rel), os.O_WRONLY | os.O_TRUNC)

    def write(self, fd: int, data: memoryview) -> int:
        return os.write(fd, data)

    def close(self, fd: int) -> None:
        os.close(fd)


class DirCachedRoot(SysfsRoot):
    """A SysfsRoot that opens each directory once and reaches files relative to it (openat).

    The same answers as SysfsRoot, with fewer lookups: on a FUSE mount with zero entry timeouts
    (the emulated host's) every path component of every access is a round trip to the server,
    so `read_host` alone took ~100 of them. `read_host` uses one for its reads and drops it; the
    directories are O_PATH handles, closed with the object.
    """

    def __init__(self, root: str | os.PathLike[str] = "/") -> None:
        super().__init__(root)
        self._dirs: dict[str, int | tuple[int, str]] = {}  # fd, or (errno, strerror) of the open

    def _dir(self, rel: str) -> int:
        got = self._dirs.get(rel)
        if got is None:
            parent, _, name = rel.rpartition("/")
            flags = os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC
            try:
                got = os.open(name, flags, dir_fd=self._dir(parent)) if rel else os.open(self.root, flags)
            except OSError as exc:  # kept as numbers: an exception would hold this frame, and self
                got = (exc.errno or 0, exc.strerror or "")
            self._dirs[rel] = got
        if isinstance(got, tuple):
            raise OSError(got[0], got[1], str(self.path(rel)))
        return got

    def _at(self, rel: str) -> tuple[int, str]:
        parent, _, name = rel.strip("/").rpartition("/")
        return self._dir(parent), name

    def exists(self, rel: str) -> bool:
        try:
            fd, name = self._at(rel)
            os.stat(name, dir_fd=fd)
        except (OSError, ValueError):
            return False
        return True

    def is_dir(self, rel: str) -> bool:
        # the directory's own handle answers (O_DIRECTORY opens only a directory) and is kept for
        # the reads under it: one lookup where a stat and then the open were two
        try:
            self._dir(rel.strip("/"))
        except (OSError, ValueError):
            return False
        return True

    def read_text(self, rel: str) -> str:
        d, name = self._at(rel)
        fd = os.open(name, os.O_RDONLY, dir_fd=d)
        try:
            return os.read(fd, 65536).decode("utf-8", "replace")
        finally:
            os.close(fd)

    def read_all(self, rel: str) -> str:
        # read() to the end without the fstat() and buffer set-up of open(): one round trip less
        d, name = self._at(rel)
        fd = os.open(name, os.O_RDONLY, dir_fd=d)
        try:
            return read_upto(fd, READ_ALL_MAX).decode("utf-8", "replace")
        finally:
            os.close(fd)

    def close(self) -> None:
        dirs, self._dirs = self._dirs, {}
        for fd in dirs.values():
            if isinstance(fd, int):
                os.close(fd)

    def __del__(self) -> None:
        self.close()


def read_upto(fd: int, limit: int, chunk: int = 1 << 16) -> bytes:
    """At most `limit` bytes from `fd`, to its end, in reads of at most `chunk` (sysfs binary
    attributes serve a page per read(); a short read is not the end, an empty one is)."""
    out = bytearray()
    while len(out) < limit:
        b = os.read(fd, min(chunk, limit - len(out)))
        if not b:
            break
        out += b
    return bytes(out)


def write_all(fd: int, data: bytes, *, chunk: int = 4096, write=os.write, on_chunk=None) -> int:
    """Write all of `data`, in chunks, continuing after partial writes (sysfs binary attributes
    take at most a page per write() call). A write() returning 0 is an error (EIO)."""
    mv = memoryview(data)
    done = 0
    while done < len(mv):
        n = write(fd, mv[done : done + chunk])
        if n <= 0:
            raise OSError(errno.EIO, f"write() returned {n} after {done} of {len(mv)} bytes")
        done += n
        if on_chunk is not None:
            on_chunk(done, len(mv))
    return done


def os_error_text(exc: OSError) -> str:
    """`ENXIO (No such device or address)`: the errno name first, so scripts can match it."""
    if exc.errno == errno.ENOTCONN:
        return "ENOTCONN (a stale FUSE mount: its server is gone; unmount it with fusermount3 -u)"
    name = errno.errorcode.get(exc.errno or 0, "E?")
    return f"{name} ({exc.strerror or exc})"


# -- CPU identification from /proc/cpuinfo ---------------------------------------------------------


def cpuid_1_eax(family: int, model: int, stepping: int) -> int:
    """CPUID.1.EAX from the family/model/stepping Linux prints (the inverse of x86_family and
    x86_model): family above 0xF goes to extended family, and for family >= 6 the model's high
    nibble goes to extended model. Processor type (bits 13:12) is not shown by Linux; taken as 0.
    """
    if family < 0 or model < 0 or not 0 <= stepping <= 0xF:
        raise ValueError(f"impossible family/model/stepping {family}/{model}/{stepping}")
    base_family = min(family, 0xF)
    ext_family = family - 0xF if family >= 0xF else 0
    if family >= 6:
        base_model, ext_model = model & 0xF, model >> 4
    else:
        base_model, ext_model = model, 0
    if ext_family > 0xFF or ext_model > 0xF or base_model > 0xF:
        raise ValueError(f"family {family} / model {model} do not fit CPUID.1.EAX")
    return (ext_family << 20) | (ext_model << 16) | (base_family << 8) | (base_model << 4) | stepping


@record(frozen=True)
class CpuId:
    family: int
    model: int
    stepping: int
    cpuid_1_eax: int

    def to_json(self) -> dict[str, Any]:
        return {"family": self.family, "model": self.model, "stepping": self.stepping,
                "cpuid_1_eax": f"0x{self.cpuid_1_eax:x}"}

    def __str__(self) -> str:
        return (f"0x{self.cpuid_1_eax:x} (family {self.family}, model 0x{self.model:x}, "
                f"stepping {self.stepping})")


def parse_cpuinfo(text: str) -> list[CpuId]:
    """Distinct CPU identities in /proc/cpuinfo, in order of appearance (one per socket type)."""
    out: list[CpuId] = []
    for block in text.split("\n\n"):
        fields: dict[str, str] = {}
        for line in block.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields[key.strip()] = value.strip()
        if not {"cpu family", "model", "stepping"} <= fields.keys():
            continue
        try:
            fam, mod, step = int(fields["cpu family"]), int(fields["model"]), int(fields["stepping"])
            cid = CpuId(fam, mod, step, cpuid_1_eax(fam, mod, step))
        except ValueError:
            continue
        if cid not in out:
            out.append(cid)
    return out


def parse_cpu_list(text: str) -> frozenset[int]:
    """`0-3,8,10-11` -> {0,1,2,3,8,10,11}; ValueError if malformed."""
    out: set[int] = set()
    text = text.strip()
    if not text:
        return frozenset()
    for part in text.split(","):
        lo, sep, hi = part.partition("-")
        a = int(lo)
        b = int(hi) if sep else a
        if b < a:
            raise ValueError(f"bad CPU range {part!r}")
        out.update(range(a, b + 1))
    return frozenset(out)


# -- the host ------------------------------------------------------------------------------------------


@record
class Attr:
    """One attribute read: its path, its text (stripped) or the error that read gave."""

    path: str
    value: str | None = None
    error: str | None = None
    errno: int | None = None

    @property
    def ok(self) -> bool:
        return self.value is not None

    def to_json(self) -> dict[str, Any]:
        return {"path": "/" + self.path, "value": self.value, "error": self.error}


def read_attr(fs: SysfsRoot, rel: str) -> Attr:
    try:
        return Attr(rel, fs.read_text(rel).strip())
    except OSError as exc:
        hint = ""
        if exc.errno in (errno.EACCES, errno.EPERM):
            hint = "; run as root"
        elif exc.errno == errno.ENXIO:
            hint = "; the TDX module is not running (a failed update?)"
        elif exc.errno == errno.ENOENT:
            return Attr(rel, None, "missing", exc.errno)
        return Attr(rel, None, os_error_text(exc) + hint, exc.errno)


@record
class HostInfo:
    """Everything plan and update need from a host, with every read failure kept as text."""

    root: str
    tdx_host: bool
    layout: Layout | None
    upload_dir: str | None  # relative to root
    upload_files: dict[str, bool]
    upload_status: Attr | None  # `status` of the upload directory, if there is one
    module_version: Attr
    seamldr_version: Attr
    num_remaining_updates: Attr
    cpus: list[CpuId]
    cpuinfo_error: str | None
    cpus_online: Attr
    cpus_present: Attr
    notes: list[str] = field(default_factory=list)
    root_error: str | None = None  # the host's files cannot be looked at (not: are absent)

    # -- derived ------------------------------------------------------------------------------

    @property
    def image_format(self) -> str | None:
        """The image format the host kernel's upload takes: "v2" (merged) or "v1" (older)."""
        return _LAYOUTS[self.layout][3] if self.layout else None

    @property
    def version(self):
        """The running module's version as ModuleVersion, or None if unreadable/unparsable."""
        return _parse_version(self.module_version)

    @property
    def seamldr(self):
        return _parse_version(self.seamldr_version)

    @property
    def remaining_updates(self) -> int | None:
        if self.num_remaining_updates.value is None:
            return None
        try:
            return int(self.num_remaining_updates.value)
        except ValueError:
            return None

    @property
    def all_cpus_online(self) -> bool | None:
        if not (self.cpus_online.ok and self.cpus_present.ok):
            return None
        try:
            return parse_cpu_list(self.cpus_online.value or "") >= parse_cpu_list(self.cpus_present.value or "")
        except ValueError:
            return self.cpus_online.value == self.cpus_present.value

    @property
    def cpu(self) -> CpuId | None:
        return self.cpus[0] if self.cpus else None

    def upload_path(self, name: str) -> str:
        assert self.upload_dir is not None
        return f"{self.upload_dir}/{name}"

    def to_json(self) -> dict[str, Any]:
        return {
            "root": self.root,
            "tdx_host": self.tdx_host,
            "layout": self.layout.value if self.layout else None,
            "image_format": self.image_format,
            "upload_dir": "/" + self.upload_dir if self.upload_dir else None,
            "upload_files": self.upload_files,
            "upload_status": self.upload_status.value if self.upload_status else None,
            "module_version": self.module_version.value,
            "seamldr_version": self.seamldr_version.value,
            "num_remaining_updates": self.remaining_updates,
            "cpu": self.cpu.to_json() if self.cpu else None,
            "cpuids": [f"0x{c.cpuid_1_eax:x}" for c in self.cpus],
            "cpus_online": self.cpus_online.value,
            "cpus_present": self.cpus_present.value,
            "all_cpus_online": self.all_cpus_online,
            "errors": {"/" + a.path: a.error for a in self._attrs() if a.error},
            "notes": list(self.notes) + ([f"/proc/cpuinfo: {self.cpuinfo_error}"] if self.cpuinfo_error else []),
            "root_error": self.root_error,
        }

    def _attrs(self) -> list[Attr]:
        return [self.module_version, self.seamldr_version, self.num_remaining_updates,
                self.cpus_online, self.cpus_present]


def _parse_version(attr: Attr):
    from tdxseam.formats.errors import VersionError
    from tdxseam.formats.version import ModuleVersion

    if attr.value is None:
        return None
    try:
        return ModuleVersion.parse(attr.value)
    except VersionError:
        return None


def detect_layout(fs: SysfsRoot) -> tuple[Layout | None, str | None]:
    """The upload interface present: merged `tdx_module` first, then the older `seamldr_upload`."""
    for layout in (Layout.TDX_MODULE, Layout.SEAMLDR_UPLOAD):
        for d in _LAYOUTS[layout][0]:
            if fs.is_dir(d):
                return layout, d
    return None, None


def read_host(fs: SysfsRoot | str | os.PathLike[str] = "/") -> HostInfo:
    """Read every fact the tool uses; never raises for a missing or unreadable file."""
    if not isinstance(fs, SysfsRoot) or type(fs) is SysfsRoot:  # plain files: open each directory once
        fs = DirCachedRoot(fs.root if isinstance(fs, SysfsRoot) else fs)
    notes: list[str] = []
    tdx_host = fs.is_dir(TDX_HOST)
    err = None if tdx_host else fs.stat_error(TDX_HOST)
    layout, upload_dir = detect_layout(fs)
    if layout is not None:
        _, ldr_path, nru_path, _ = _LAYOUTS[layout]
    else:
        # no upload directory: still try both attribute spellings (the attributes and the
        # directory are visible under the same condition, so expect them missing too)
        flat = fs.exists(f"{TDX_HOST}/seamldr_version")
        _, ldr_path, nru_path, _ = _LAYOUTS[Layout.TDX_MODULE if flat or not fs.is_dir(f"{TDX_HOST}/seamldr")
                                            else Layout.SEAMLDR_UPLOAD]
    upload_files = {name: fs.exists(f"{upload_dir}/{name}") for name in UPLOAD_FILES} if upload_dir else {}

    cpus: list[CpuId] = []
    cpuinfo_error = None
    try:
        cpus = parse_cpuinfo(fs.read_all(CPUINFO))
        if not cpus:
            cpuinfo_error = "no 'cpu family' / 'model' / 'stepping' lines"
    except OSError as exc:
        cpuinfo_error = "missing" if exc.errno == errno.ENOENT else os_error_text(exc)
    if len(cpus) > 1:
        notes.append("CPUs of different family/model/stepping: " + ", ".join(str(c) for c in cpus))

    return HostInfo(
        root=str(fs.root),
        tdx_host=tdx_host,
        layout=layout,
        upload_dir=upload_dir,
        upload_files=upload_files,
        upload_status=read_attr(fs, f"{upload_dir}/status") if upload_dir else None,
        module_version=read_attr(fs, f"{TDX_HOST}/version"),
        seamldr_version=read_attr(fs, ldr_path),
        num_remaining_updates=read_attr(fs, nru_path),
        cpus=cpus,
        cpuinfo_error=cpuinfo_error,
        cpus_online=read_attr(fs, CPU_ONLINE),
        cpus_present=read_attr(fs, CPU_PRESENT),
        notes=notes,
        root_error=os_error_text(err) if err is not None else None,
    )

