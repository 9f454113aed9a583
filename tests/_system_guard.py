"""Tests never write under /var, /run or /etc: where a root-run suite would change the machine.

Two nets, because a test runs code in-process and in subprocesses:
- an audit hook (PEP 578) sees every open-for-write, mkdir, rename, removal and link this
  process makes, and records those under the system prefixes, with the test that made them;
- a snapshot of tdxseam's own system paths (history, lock, state) before and after the session
  catches what a subprocess (the CLI, an emulator, Ansible) wrote there.
The tdxseam defaults are pointed at the session's temporary directory (TDXSEAM_HISTORY,
TDXSEAM_LOCK), so a command run without --history or --lock stays there too.
"""

from __future__ import annotations

import os
import sys

PREFIXES = ("/var/", "/run/", "/etc/")
SYSTEM_PATHS = ("/var/lib/tdxseam", "/run/tdxseam", "/etc/tdxseam", "/var/log/tdxseam", "/run/lock/tdxseam.lock")
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_APPEND
_PATH_EVENTS = {"os.mkdir": 0, "os.remove": 0, "os.rmdir": 0, "os.rename": 1, "os.link": 1, "os.symlink": 1,
                "os.truncate": 0, "os.chmod": 0, "os.chown": 0, "os.utime": 0, "shutil.rmtree": 0}


class Guard:
    def __init__(self) -> None:
        self.writes: list[str] = []
        self.armed = False

    def _note(self, path: object, what: str) -> None:
        if isinstance(path, bytes):
            path = path.decode("utf-8", "replace")
        if not isinstance(path, str):
            return
        full = os.path.abspath(path)
        if full.startswith(PREFIXES) or full in ("/var", "/run", "/etc"):
            test = os.environ.get("PYTEST_CURRENT_TEST", "outside a test").split(" ")[0]
            self.writes.append(f"{what} {full} ({test})")

    def check(self, event: str, args: tuple) -> None:
        if not self.armed:
            return
        if event == "open" and args:
            path, mode, flags = (tuple(args) + (None, None))[:3]
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (
                isinstance(flags, int) and flags & _WRITE_FLAGS)
            if writing:
                self._note(path, "open-for-write")
        elif event in _PATH_EVENTS and args:
            self._note(args[0], event)
            if _PATH_EVENTS[event] and len(args) > 1:
                self._note(args[1], event)


def snapshot() -> dict[str, tuple]:
    """Every file under tdxseam's system paths, with size and mtime (absent paths: nothing)."""
    out: dict[str, tuple] = {}
    for top in SYSTEM_PATHS:
        if os.path.isfile(top):
            st = os.stat(top)
            out[top] = (st.st_size, st.st_mtime_ns)
        for d, _dirs, files in os.walk(top):
            out[d] = ("dir",)
            for f in files:
                p = os.path.join(d, f)
                try:
                    st = os.lstat(p)
                except OSError:
                    continue
                out[p] = (st.st_size, st.st_mtime_ns)
    return out


def changes(before: dict[str, tuple], after: dict[str, tuple]) -> list[str]:
    return [f"{'created' if p not in before else 'changed'} {p}" for p in sorted(after)
            if before.get(p) != after[p]] + [f"removed {p}" for p in sorted(before) if p not in after]


GUARD = Guard()
sys.addaudithook(GUARD.check)
