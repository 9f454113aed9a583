"""The one way tdxseam reads an input file and writes an output file.

The operator tool runs as root on production hosts, where a path given to it may name anything:

- reading opens without blocking (a FIFO must not hang us), refuses anything but a regular file
  (a device's `stat` size is 0, and /dev/zero never ends), and reads at most the format's largest
  valid size plus one byte, so a file that is too large is named, never swallowed;
- writing goes to a new path or replaces an existing regular file, atomically (a temporary file
  beside it, then a rename), with the umask honoured for a new file and the old file's mode kept
  for a replaced one; a device, FIFO, socket, directory or symbolic link at the path is refused
  and left as it was;
- `append_line` (the update history) and `open_lock` (the update lock) follow the same rules.

Errors are `FileError` (a `FormatError`, so every caller already turns it into exit 3, "an input
file is unreadable"); `OutputRefused` says what is at an output path and that it was left alone.
"""

from __future__ import annotations

import errno
import os
import stat

from tdxseam.formats.errors import FormatError

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISLNK, "a symbolic link"),
)


def kind_of(mode: int) -> str:
    """'a character device', 'a FIFO', ... for a st_mode; 'a regular file' for S_IFREG."""
    if stat.S_ISREG(mode):
        return "a regular file"
    return next((name for test, name in _KINDS if test(mode)), "not a regular file")


def errno_text(exc: OSError) -> str:
    """`ENOTCONN: a stale FUSE mount ...`: the errno name first; a dead mount said as such."""
    if exc.errno == errno.ENOTCONN:
        return "ENOTCONN: a stale FUSE mount (its server is gone; unmount it with fusermount3 -u)"
    name = errno.errorcode.get(exc.errno or 0, "E?")
    return f"{name}: {exc.strerror or exc}"


class FileError(FormatError):
    """An input file that cannot be used: missing, not a regular file, too large, unreadable."""

    def __init__(self, path: str | os.PathLike[str], detail: str, *, code: str,
                 err: int | None = None) -> None:
        super().__init__(os.fspath(path), detail, code=code)
        self.path = os.fspath(path)
        self.errno = err


class OutputRefused(FileError):
    """An output path that tdxseam will not write: it names something other than a regular file,
    or it exists and replacing was not asked for. Nothing was written."""


def _io_error(path: str | os.PathLike[str], exc: OSError, what: str = "cannot read") -> FileError:
    code = {errno.ENOENT: "missing", errno.EISDIR: "not_regular", errno.ENOTCONN: "stale_mount"}.get(
        exc.errno or 0, "io")
    return FileError(path, f"{what} ({errno_text(exc)})", code=code, err=exc.errno)


def read_file(path: str | os.PathLike[str], limit: int, what: str = "file") -> bytes:
    """The whole regular file at `path`, at most `limit` bytes; FileError otherwise.

    `what` names the format in the too-large message ("a TDX module file", "mapping_file.json").
    Symbolic links to regular files are followed (a catalog may be a tree of links).
    """
    try:
        st = os.stat(path)
        if not stat.S_ISREG(st.st_mode):
            raise FileError(path, f"is {kind_of(st.st_mode)}, not a regular file", code="not_regular")
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise _io_error(path, exc) from None
    try:
        st = os.fstat(fd)  # what was opened, not what was looked at a moment before
        if not stat.S_ISREG(st.st_mode):
            raise FileError(path, f"is {kind_of(st.st_mode)}, not a regular file", code="not_regular")
        chunks: list[bytes] = []
        size = 0
        # the first read asks for the size stat gives, plus one byte to see a file that grew: a
        # larger buffer would be allocated, then shrunk with a copy
        step = st.st_size + 1 if 0 < st.st_size < 1 << 20 else 1 << 20
        while size <= limit:
            b = os.read(fd, min(limit + 1 - size, step))
            step = 1 << 20
            if not b:
                break
            chunks.append(b)
            size += len(b)
    except OSError as exc:
        raise _io_error(path, exc) from None
    finally:
        os.close(fd)
    if size > limit:
        raise FileError(path, f"is larger than {what} can be ({limit} bytes at most)", code="too_large")
    return b"".join(chunks)


def _check_output(path: str | os.PathLike[str], replace: bool) -> os.stat_result | None:
    """The existing regular file at `path` (to be replaced), None for a new path; refuse the rest."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise _io_error(path, exc, "cannot write") from None
    if not stat.S_ISREG(st.st_mode):
        raise OutputRefused(path, f"is {kind_of(st.st_mode)}; tdxseam writes only a new path or a regular "
                                  "file, so it was left as it was", code="refused")
    if not replace:
        raise OutputRefused(path, "exists (use --force to replace it)", code="exists")
    return st


def write_file(path: str | os.PathLike[str], data: bytes, *, replace: bool = False) -> None:
    """Write `data` at `path` atomically: the readers of `path` see the old file or the new one.

    A new file gets mode 0666 minus the umask; a replaced regular file keeps its mode. A path
    that appears meanwhile is not replaced (a new file is linked into place, which fails if the
    name exists); a replaced file must still be the regular file that was checked.
    """
    old = _check_output(path, replace)
    directory = os.path.dirname(os.fspath(path)) or "."
    base = os.path.basename(os.fspath(path))
    tmp = None
    try:
        for n in range(100):
            tmp = os.path.join(directory, f".{base}.tdxseam-{os.getpid()}-{n}")
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC,
                             0o666 if old is None else stat.S_IMODE(old.st_mode))
                break
            except FileExistsError:
                continue
        else:
            raise OSError(errno.EEXIST, "no free temporary name")
        try:
            if old is not None:
                os.fchmod(fd, stat.S_IMODE(old.st_mode))  # the umask applied to the open above
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        finally:
            os.close(fd)
        if old is None:
            os.link(tmp, path)  # EEXIST if something took the name since the check
            os.unlink(tmp)
        else:
            now = _check_output(path, True)
            if now is None or (now.st_dev, now.st_ino) != (old.st_dev, old.st_ino):
                raise OutputRefused(path, "changed while being written; left as it is", code="raced")
            os.replace(tmp, path)
        tmp = None
    except FileExistsError:
        raise OutputRefused(path, "appeared while being written; left as it is", code="raced") from None
    except OSError as exc:
        raise _io_error(path, exc, "cannot write") from None
    finally:
        if tmp is not None:
            try:
                os.unlink(tmp)
            except OSError:
                pass


def _open_regular(path: str | os.PathLike[str], flags: int, mode: int) -> int:
    """open(2) for writing that never follows a symbolic link, never blocks on a FIFO and refuses
    anything but a regular file (checked on what was opened)."""
    try:
        _check_output(path, True)
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC, mode)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise OutputRefused(path, "is a symbolic link; not followed", code="refused") from None
        raise _io_error(path, exc, "cannot open for writing") from None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise OutputRefused(path, f"is {kind_of(st.st_mode)}; left as it was", code="refused")
    return fd


def append_line(path: str | os.PathLike[str], line: bytes) -> None:
    """Append one line to a log (a new file, mode 0666 minus the umask, or a regular file)."""
    fd = _open_regular(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        view = memoryview(line)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except OSError as exc:
        raise _io_error(path, exc, "cannot write") from None
    finally:
        os.close(fd)


def open_lock(path: str | os.PathLike[str]) -> int:
    """A descriptor of the lock file at `path` (created if missing) to flock(); FileError if it
    is anything but a regular file."""
    return _open_regular(path, os.O_RDWR | os.O_CREAT, 0o644)
