"""Finding and killing this process's Ray workers, for the tests and the bench that show a
campaign survives a worker's death."""

from __future__ import annotations

import os
import signal
import time

BATCH_TITLE = b"ray::run_chunk"  # a worker's process title while it runs a campaign batch


def _ppid(pid: int | str) -> int:
    with open(f"/proc/{pid}/stat") as f:
        return int(f.read().rsplit(")", 1)[1].split()[1])


def our_ray_workers(title: bytes = BATCH_TITLE) -> list[int]:
    """PIDs of this process's Ray workers (its raylet's children) whose process title is `title`."""
    me, out = os.getpid(), []
    for p in os.listdir("/proc"):
        if not p.isdigit():
            continue
        try:
            with open(f"/proc/{p}/cmdline", "rb") as f:
                if f.read().split(b"\0")[0] != title:
                    continue
            if _ppid(_ppid(p)) == me:
                out.append(int(p))
        except (OSError, ValueError, IndexError):
            continue
    return out


def kill_a_busy_worker(killed: list[int]) -> None:
    """SIGKILL one of our workers that is in the middle of a batch (busy on two looks 30 ms apart,
    so not one that is just handing its result back), once; its PID goes into `killed`."""
    if killed:
        return
    busy = set(our_ray_workers())
    time.sleep(0.03)
    for pid in sorted(busy & set(our_ray_workers())):
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)
        return
