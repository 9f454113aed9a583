"""The tree, mounted at a directory through libfuse3 (mfusepy), for real programs.

Mount options and why:
- `default_permissions`: the kernel's own VFS checks the caller against the modes and owners this
  filesystem reports, with the caller's real credentials and capabilities, exactly as it would for
  sysfs (a non-root caller cannot open `loading` for writing or read the 0400 files: EACCES). The
  tree repeats the check with the caller's credentials read from /proc (harmless: same answer) and
  adds what only the filesystem knows: kernfs's EACCES for root writing a 0444 attribute, EPERM for
  a `data` write without CAP_SYS_RAWIO, the errnos of the callbacks.
- `allow_other` (when permitted: as root, or with user_allow_other in /etc/fuse.conf): other users
  may use the mount at all, as everyone may use /sys.
- `direct_io`: no page cache. Attribute files are 4096 bytes by stat but their text changes with
  every read (sysfs semantics); every read and write goes to the tree, and short writes (at most
  PAGE_SIZE per call, as kernfs takes) reach the writer, whose `cat` or buffered writer goes on.
- attr/entry/negative timeouts 0: permission changes (chmod) apply at once.
Requests are served by libfuse's worker threads, each waiting on the machine thread for its
answer; the update keeps running between them.
"""

from __future__ import annotations

import errno
import functools
import os
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tdxseam import get_logger
from tdxseam.sysfs.tree import Cred, Stat

if TYPE_CHECKING:
    from tdxseam.sysfs.tree import SysfsTree

log = get_logger("tdxseam.sysfs.fuse")


def fuse_unavailable_reason() -> str | None:
    """Why a FUSE mount cannot work here, or None if it can."""
    if not os.path.exists("/dev/fuse"):
        return "/dev/fuse is absent (no FUSE in this kernel or container)"
    if shutil.which("fusermount3") is None:
        return "fusermount3 is not installed (Debian: apt-get install fuse3)"
    try:
        import mfusepy  # noqa: F401  (loads libfuse at import)
    except ImportError:
        return "mfusepy is not installed (pip install mfusepy)"
    except OSError as e:
        return f"libfuse3 cannot be loaded ({e}); Debian: apt-get install libfuse3-3"
    import mfusepy

    if getattr(mfusepy, "fuse_version_major", 3) != 3:
        return "mfusepy found libfuse 2, not libfuse3"
    return None


def allow_other_permitted() -> bool:
    if os.geteuid() == 0:
        return True
    try:
        with open("/etc/fuse.conf", encoding="utf-8") as f:
            return any(line.strip() == "user_allow_other" for line in f)
    except OSError:
        return False


def is_mounted(mountpoint: str) -> bool:
    target = os.path.realpath(mountpoint)
    try:
        with open("/proc/self/mountinfo", encoding="utf-8") as f:
            for line in f:
                parts = line.split()
                if len(parts) > 4 and parts[4].replace("\\040", " ") == target:
                    return True
    except OSError:
        pass
    return False


def unmount(mountpoint: str, *, busy_wait: float = 1.0) -> str | None:
    """`fusermount3 -u`, retried while the mount is busy (a `cat` finishing), then lazily (`-z`):
    the mount point is detached at once and files still open go on working until closed or until
    this process exits. Returns "unmounted", "lazy", or None if it failed."""
    deadline = time.monotonic() + busy_wait
    while True:
        if not is_mounted(mountpoint):
            return "unmounted"
        r = subprocess.run(["fusermount3", "-u", mountpoint], capture_output=True, text=True)
        if r.returncode == 0:
            return "unmounted"
        if time.monotonic() >= deadline:
            break
        time.sleep(0.05)
    r = subprocess.run(["fusermount3", "-u", "-z", mountpoint], capture_output=True, text=True)
    if r.returncode != 0 and is_mounted(mountpoint):
        log.error("could not unmount %s: %s", mountpoint, r.stderr.strip())
        return None
    log.warning("%s was busy (a file still open): unmounted lazily", mountpoint)
    return "lazy"


def _stat_dict(s: Stat) -> dict[str, Any]:
    return {
        "st_mode": s.st_mode, "st_ino": s.st_ino, "st_nlink": s.st_nlink, "st_uid": s.st_uid,
        "st_gid": s.st_gid, "st_size": s.st_size, "st_atime": s.st_atime_ns,
        "st_mtime": s.st_mtime_ns, "st_ctime": s.st_ctime_ns, "st_blksize": s.st_blksize,
        "st_blocks": s.st_blocks,
    }


def _errno_boundary(fn: Callable[..., Any]) -> Callable[..., Any]:
    """Tree errors carry the kernel's errno; anything else is a bug here and reads as EIO."""
    import mfusepy

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except OSError as e:
            if isinstance(e.errno, int) and e.errno > 0:
                raise mfusepy.FuseOSError(e.errno) from None
            log.exception("FUSE %s: OSError without errno", fn.__name__)
            raise mfusepy.FuseOSError(errno.EIO) from None
        except Exception:
            log.exception("FUSE %s failed", fn.__name__)
            raise mfusepy.FuseOSError(errno.EIO) from None
    return wrapper


def make_operations(tree: SysfsTree, *, on_init: Callable[[], None] | None = None) -> Any:
    """An mfusepy `Operations` object serving `tree`."""
    import mfusepy

    class SysfsOperations(mfusepy.Operations):
        use_ns = True

        def _cred(self) -> Cred:
            uid, gid, pid = mfusepy.fuse_get_context()
            return Cred.of_process(uid, gid, pid)

        def init(self, path: str) -> None:
            if on_init is not None:
                on_init()

        @_errno_boundary
        def getattr(self, path: str, fh: int | None = None) -> dict[str, Any]:
            return _stat_dict(tree.lstat(path, self._cred()))

        @_errno_boundary
        def readlink(self, path: str) -> str:
            return tree.readlink(path, self._cred())

        @_errno_boundary
        def readdir(self, path: str, fh: int) -> list[tuple[str, dict[str, int], int]]:
            # inode numbers must be real: readdir(3) hides entries whose d_ino is 0
            return [(name, {"st_mode": s.st_mode, "st_ino": s.st_ino}, 0)
                    for name, s in tree.scandir(path, self._cred())]

        @_errno_boundary
        def access(self, path: str, amode: int) -> int:
            tree.access(path, amode, self._cred())
            return 0

        @_errno_boundary
        def open(self, path: str, flags: int) -> int:
            return tree.open(path, flags, self._cred())

        @_errno_boundary
        def create(self, path: str, mode: int, flags: int | None = None) -> int:
            acc = os.O_WRONLY if flags is None else flags
            return tree.open(path, acc | os.O_CREAT, self._cred())

        @_errno_boundary
        def read(self, path: str, size: int, offset: int, fh: int) -> bytes:
            return tree.read_fh(fh, offset, size)

        @_errno_boundary
        def write(self, path: str, data: bytes, offset: int, fh: int) -> int:
            return tree.write_fh(fh, offset, data)

        @_errno_boundary
        def truncate(self, path: str, length: int, fh: int | None = None) -> int:
            tree.truncate(path, length, self._cred())
            return 0

        def flush(self, path: str, fh: int) -> int:
            return 0

        @_errno_boundary
        def release(self, path: str, fh: int) -> int:
            tree.release(fh)
            return 0

        @_errno_boundary
        def chmod(self, path: str, mode: int) -> int:
            tree.chmod(path, mode, self._cred())
            return 0

        @_errno_boundary
        def chown(self, path: str, uid: int, gid: int) -> int:
            tree.chown(path, uid, gid, self._cred())
            return 0

        @_errno_boundary
        def utimens(self, path: str, times: tuple[int, int] | None = None) -> int:
            tree.utimens(path, times, self._cred())
            return 0

        @_errno_boundary
        def statfs(self, path: str) -> dict[str, int]:
            return tree.statfs()

        @_errno_boundary
        def mkdir(self, path: str, mode: int) -> int:
            tree.refuse("mkdir", path, self._cred())
            return 0

        @_errno_boundary
        def mknod(self, path: str, mode: int, dev: int) -> int:
            tree.refuse("mknod", path, self._cred())
            return 0

        @_errno_boundary
        def symlink(self, target: str, source: str) -> int:
            tree.refuse("symlink", target, self._cred())
            return 0

        @_errno_boundary
        def link(self, target: str, source: str) -> int:
            tree.refuse("link", target, self._cred())
            return 0

        @_errno_boundary
        def unlink(self, path: str) -> int:
            tree.refuse("unlink", path, self._cred())
            return 0

        @_errno_boundary
        def rmdir(self, path: str) -> int:
            tree.refuse("rmdir", path, self._cred())
            return 0

        @_errno_boundary
        def rename(self, old: str, new: str) -> int:
            tree.refuse("rename", old, self._cred())
            return 0

    return SysfsOperations()


class FuseMount:
    """The tree mounted at `mountpoint` by a thread of its own, until `unmount()`."""

    def __init__(self, tree: SysfsTree, mountpoint: str, *, allow_other: bool | None = None,
                 debug: bool = False) -> None:
        reason = fuse_unavailable_reason()
        if reason:
            raise OSError(errno.ENODEV, f"cannot mount with FUSE: {reason}")
        if not os.path.isdir(mountpoint):
            raise NotADirectoryError(errno.ENOTDIR, "mount point is not a directory", mountpoint)
        self.tree = tree
        self.mountpoint = os.path.abspath(mountpoint)
        self.allow_other = allow_other_permitted() if allow_other is None else allow_other
        self.debug = debug
        self.ready = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="tdxseam-fuse", daemon=True)

    def start(self, timeout: float = 10.0) -> None:
        """Mount; returns once the kernel has initialised the connection."""
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self.ready.wait(0.05):
            if not self._thread.is_alive():
                raise OSError(errno.EIO, f"FUSE mount at {self.mountpoint} failed: {self.error!r}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"FUSE mount at {self.mountpoint} did not come up")

    def _run(self) -> None:
        import mfusepy

        # libfuse's worker threads inherit this mask: termination signals go to the main thread,
        # whose handler unmounts. (libfuse installs its own handlers only where none is set.)
        if hasattr(signal, "pthread_sigmask"):
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM, signal.SIGHUP})
        ops = make_operations(self.tree, on_init=self.ready.set)
        opts: dict[str, Any] = {
            "foreground": True, "default_permissions": True, "direct_io": True,
            "attr_timeout": 0, "entry_timeout": 0, "negative_timeout": 0,
            "fsname": "tdxseam", "subtype": "tdxseam", "use_ino": True,
            "max_idle_threads": 10,  # libfuse 3.12-3.15 warns about its own default (UINT_MAX) otherwise
        }
        if self.allow_other:
            opts["allow_other"] = True
        if self.debug:
            opts["debug"] = True
        try:
            mfusepy.FUSE(ops, self.mountpoint, **opts)
        except BaseException as e:  # noqa: BLE001 - reported by start() / wait()
            self.error = e

    @property
    def alive(self) -> bool:
        return self._thread.is_alive()

    def unmount(self, timeout: float = 5.0) -> bool:
        """Unmount and wait for the serving thread; False if it did not stop. After a lazy unmount
        it serves the files still open until they are closed, so it is not waited for long: it
        is a daemon thread, and the connection ends with the process."""
        how = unmount(self.mountpoint)
        self._thread.join(timeout if how == "unmounted" else min(timeout, 0.5))
        return how is not None and not self._thread.is_alive()

    def wait(self, timeout: float | None = None) -> bool:
        self._thread.join(timeout)
        return not self._thread.is_alive()


def serve_until_signal(mount: FuseMount, *, on_ready: Callable[[], None] | None = None,
                       on_stop: Callable[[], None] | None = None,
                       signals: tuple[int, ...] = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP),
                       ) -> int | None:
    """Main thread: mount, then wait for a termination signal (or an external unmount) and
    unmount cleanly. `on_stop` runs when the signal is noticed, before the unmount. Returns the
    signal number that ended it (None: unmounted from outside)."""
    stop = threading.Event()
    got: list[int] = []

    def handler(signum: int, frame: Any) -> None:
        got.append(signum)
        stop.set()

    old = {s: signal.signal(s, handler) for s in signals}
    try:
        mount.start()
        if on_ready is not None:
            on_ready()
        while not stop.is_set() and mount.alive:
            stop.wait(0.25)
        if on_stop is not None:
            on_stop()
        mount.unmount()
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    return got[0] if got else None
