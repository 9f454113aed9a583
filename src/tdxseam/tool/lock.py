"""The update lock: two tdxseam runs never upload to a host at the same time.

The kernel's `data` buffer is one per device, shared by every writer: two uploads that overlap
write into the same buffer and the kernel installs the mix (or nothing at all, after the first
`echo 0` consumed half of the other's image). An exclusive flock(2), taken before the host is
read and held until the outcome is recorded, keeps two `tdxseam update` runs apart; a second run
is turned away at once, naming the holder (the read-back of `data` catches other writers).

Path: `--lock PATH`, else `$TDXSEAM_LOCK`, else /run/tdxseam/update.lock (a root-only directory,
so no other user can hold the lock or plant a link there).
"""

from __future__ import annotations

import errno
import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tdxseam.formats.files import FileError, open_lock
from tdxseam.tool.errors import ToolError

DEFAULT_PATH = "/run/tdxseam/update.lock"
ENV = "TDXSEAM_LOCK"


class LockHeld(Exception):
    """Another process holds the update lock."""

    def __init__(self, path: Path, holder: str) -> None:
        super().__init__(f"another tdxseam update holds {path} ({holder}); nothing written")
        self.path = path


def lock_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    if explicit:
        return Path(explicit)
    return Path(os.environ.get(ENV) or DEFAULT_PATH)


@contextmanager
def update_lock(path: Path) -> Iterator[None]:
    """Hold the exclusive lock at `path` for the block; LockHeld if another run has it, ToolError
    if the lock file cannot be used (a FIFO, a link, an unwritable directory)."""
    try:
        path.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        fd = open_lock(path)
    except FileError as exc:
        raise ToolError(f"update lock: {exc}") from None
    except OSError as exc:
        raise ToolError(f"update lock {path}: cannot create its directory ({exc.strerror or exc})") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise ToolError(f"update lock {path}: {exc.strerror or exc}") from None
            holder = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
            raise LockHeld(path, f"pid {holder}" if holder.isdigit() else "pid unknown") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the flock
