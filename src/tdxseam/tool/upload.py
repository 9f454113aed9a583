"""The firmware-upload sequence, done with plain file I/O under a sysfs root (spec-linux §5.2, §7.2, §8).

    echo 1 > loading; cat image > data; echo 0 > loading; poll status until idle; cat error

Details a careful client gets right:
- `data` is written in chunks, continuing after partial writes (a sysfs binary attribute takes at
  most a page per write() call);
- `echo 0 > loading` returns at once; the update runs in a kernel worker, so the outcome is read
  from `error` only after `status` is back to `idle` (reading `error` earlier gives EBUSY, which
  here means "still busy", not a failure);
- a failed write before `echo 0` is undone with `echo -1 > loading` (abort), so no half image is
  ever handed to the kernel;
- `data` is read back before `echo 0`: another root writer (a second tool, a script) may have
  written into the same buffer meanwhile; anything but the verified image byte for byte is
  cancelled with `echo -1 > loading`, so a mixed image never reaches the kernel;
- the wait has a timeout; a timeout does not mean failure (the update may still finish), so it is
  reported as its own outcome.
"""

from __future__ import annotations

import errno
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from tdxseam.tool.hostinfo import SysfsRoot, os_error_text, write_all

DEFAULT_TIMEOUT = 30.0  # seconds; Intel's script allows 10, hardware needs milliseconds
DEFAULT_POLL = 0.05
DEFAULT_CHUNK = 4096


class UploadOutcome(Enum):
    DONE = "done"  # status back to idle, `error` empty
    KERNEL_ERROR = "kernel_error"  # status back to idle, `error` says why (e.g. transferring:firmware-invalid)
    WRITE_ERROR = "write_error"  # a write to loading/data failed; the upload was aborted
    BUSY = "busy"  # another upload was in progress; nothing written
    READBACK_MISMATCH = "readback_mismatch"  # `data` was not the verified image; cancelled before `0`
    TIMEOUT = "timeout"  # status not idle within the timeout; the update may still be running


@dataclass
class Progress:
    """What a progress callback sees: a phase, bytes written so far, the status last read."""

    phase: str  # "writing" | "waiting" | "done"
    written: int
    total: int
    status: str | None
    elapsed: float


@dataclass
class UploadResult:
    outcome: UploadOutcome
    error: str | None  # `error` file text, or the failed write's errno text
    written: int
    total: int
    duration: float
    statuses: list[str] = field(default_factory=list)  # distinct statuses seen, in order

    def to_json(self) -> dict[str, Any]:
        return {"outcome": self.outcome.value, "error": self.error, "written": self.written,
                "total": self.total, "duration_s": round(self.duration, 3), "statuses": self.statuses}


def upload_image(fs: SysfsRoot, upload_dir: str, image: bytes, *, timeout: float = DEFAULT_TIMEOUT,
                 poll_interval: float = DEFAULT_POLL, chunk: int = DEFAULT_CHUNK,
                 progress: Callable[[Progress], None] | None = None,
                 clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep) -> UploadResult:
    """Run the whole sequence; never raises OSError (failures are outcomes)."""
    t0 = clock()
    total = len(image)
    statuses: list[str] = []

    def p(path: str) -> str:
        return f"{upload_dir}/{path}"

    def report(phase: str, written: int, status: str | None) -> None:
        if progress is not None:
            progress(Progress(phase, written, total, status, clock() - t0))

    def result(outcome: UploadOutcome, error: str | None, written: int) -> UploadResult:
        return UploadResult(outcome, error, written, total, clock() - t0, statuses)

    # 0. refuse to interfere with an upload already running (nothing written yet)
    try:
        status = fs.read_text(p("status")).strip()
    except OSError as exc:
        return result(UploadOutcome.WRITE_ERROR, f"cannot read status: {os_error_text(exc)}", 0)
    statuses.append(status)
    if status != "idle":
        return result(UploadOutcome.BUSY, f"an upload is already in progress (status {status!r})", 0)

    # 1-3. loading=1, data, loading=0
    written = 0
    try:
        fs.write_text(p("loading"), "1")
    except OSError as exc:
        return result(UploadOutcome.WRITE_ERROR, f"writing 1 to loading: {os_error_text(exc)}", 0)
    try:
        fd = fs.open_write(p("data"))
        try:
            def on_chunk(done: int, _total: int) -> None:
                nonlocal written
                written = done
                report("writing", done, None)

            write_all(fd, image, chunk=chunk, write=fs.write, on_chunk=on_chunk)
        finally:
            fs.close(fd)
    except OSError as exc:
        _abort(fs, p("loading"))
        hint = " (CAP_SYS_RAWIO needed: run as root)" if exc.errno == errno.EPERM else ""
        return result(UploadOutcome.WRITE_ERROR,
                      f"writing data at byte {written}: {os_error_text(exc)}{hint}; upload aborted", written)
    bad = _readback(fs, p("data"), image)
    if bad is not None:
        _abort(fs, p("loading"))
        return result(UploadOutcome.READBACK_MISMATCH,
                      f"data read back {bad}, not the verified image (another writer?); cancelled with "
                      "-1 > loading, nothing handed to the kernel", written)
    try:
        fs.write_text(p("loading"), "0")
    except OSError as exc:
        _abort(fs, p("loading"))
        if exc.errno == errno.EBUSY:
            return result(UploadOutcome.BUSY, "writing 0 to loading: EBUSY (another upload started meanwhile)",
                          written)
        return result(UploadOutcome.WRITE_ERROR, f"writing 0 to loading: {os_error_text(exc)}", written)

    # 4-5. wait for idle, then read error (EBUSY there means the worker is still running)
    while True:
        try:
            status = fs.read_text(p("status")).strip()
        except OSError as exc:
            return result(UploadOutcome.WRITE_ERROR, f"cannot read status: {os_error_text(exc)}", written)
        if status != statuses[-1]:
            statuses.append(status)
        report("waiting", written, status)
        if status == "idle":
            try:
                err = fs.read_text(p("error")).strip()
            except OSError as exc:
                if exc.errno != errno.EBUSY:
                    return result(UploadOutcome.WRITE_ERROR, f"cannot read error: {os_error_text(exc)}", written)
            else:
                report("done", written, status)
                if err:
                    return result(UploadOutcome.KERNEL_ERROR, err, written)
                return result(UploadOutcome.DONE, None, written)
        if clock() - t0 > timeout:
            return result(UploadOutcome.TIMEOUT,
                          f"status still {status!r} after {timeout:g} s; the update may still be running: "
                          "do not reboot, read status and version again", written)
        sleep(poll_interval)


def _readback(fs: SysfsRoot, data: str, image: bytes) -> str | None:
    """None if `data` holds exactly `image`; else what differs, for the error message."""
    try:
        back = fs.read_bytes(data, len(image) + 1)
    except OSError as exc:
        return f"failed ({os_error_text(exc)})"
    if back == image:
        return None
    if len(back) != len(image):
        return f"as {len(back) if len(back) <= len(image) else 'more than ' + str(len(image))} bytes"
    first = next(i for i, (a, b) in enumerate(zip(back, image)) if a != b)
    return f"different from byte {first}"


def _abort(fs: SysfsRoot, loading: str) -> None:
    """`echo -1 > loading`: drop the partial buffer so the device is usable again."""
    try:
        fs.write_text(loading, "-1")
    except OSError:
        pass
