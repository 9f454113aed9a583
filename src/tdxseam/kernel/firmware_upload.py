"""The generic firmware-upload device (drivers/base/firmware_loader/sysfs_upload.c and sysfs.c).

A userspace program writes `1` to `loading`, the image to `data`, `0` to `loading`; the kernel then
runs the driver's ops in a worker while `status` reports progress, and `error` tells how it ended.
Every store/show returns what the kernel's would: text, a byte count, or a negative errno.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum, IntEnum
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from tdxseam.kernel.kernel import Kernel

# How much the paged upload buffer may grow before fw_realloc_pages fails (-ENOMEM).
FW_UPLOAD_BUFFER_LIMIT = 64 << 20


class FwUploadProg(IntEnum):
    FW_UPLOAD_PROG_IDLE = 0
    FW_UPLOAD_PROG_RECEIVING = 1
    FW_UPLOAD_PROG_PREPARING = 2
    FW_UPLOAD_PROG_TRANSFERRING = 3
    FW_UPLOAD_PROG_PROGRAMMING = 4
    FW_UPLOAD_PROG_MAX = 5


class FwUploadErr(IntEnum):
    FW_UPLOAD_ERR_NONE = 0
    FW_UPLOAD_ERR_HW_ERROR = 1
    FW_UPLOAD_ERR_TIMEOUT = 2
    FW_UPLOAD_ERR_CANCELED = 3
    FW_UPLOAD_ERR_BUSY = 4
    FW_UPLOAD_ERR_INVALID_SIZE = 5
    FW_UPLOAD_ERR_RW_ERROR = 6
    FW_UPLOAD_ERR_WEAROUT = 7
    FW_UPLOAD_ERR_FW_INVALID = 8
    FW_UPLOAD_ERR_MAX = 9


PROG_STR = ["idle", "receiving", "preparing", "transferring", "programming"]
ERR_STR = ["none", "hw-error", "timeout", "user-abort", "device-busy", "invalid-file-size",
           "read-write-error", "flash-wearout", "firmware-invalid"]


def fw_upload_progress(p: int) -> str:
    return PROG_STR[p] if 0 <= p < len(PROG_STR) else "unknown-status"


def fw_upload_error(e: int) -> str:
    return ERR_STR[e] if 0 <= e < len(ERR_STR) else "unknown-error"


class FwState(Enum):
    """fw_priv's state (fw_state in firmware.h)."""

    INIT = "init"
    LOADING = "loading"
    DONE = "done"
    ABORTED = "aborted"


class FwUploadOps(Protocol):
    def prepare(self, data: bytes, size: int) -> FwUploadErr: ...
    def write(self, data: bytes, offset: int, size: int) -> tuple[FwUploadErr, int]: ...
    def poll_complete(self) -> FwUploadErr: ...
    def cancel(self) -> None: ...


@dataclass
class UploadRecord:
    """One finished upload, kept for tests and the emulator's log."""

    size: int
    err_progress: int
    err_code: int


def simple_strtol(text: str) -> int:
    """The kernel's simple_strtol: an optional '-', then leading decimal digits; no digits = 0."""
    neg = text.startswith("-")
    body = text[1:] if neg else text
    digits = ""
    for ch in body:
        if not ch.isdigit() or not ch.isascii():
            break
        digits += ch
    v = int(digits) if digits else 0
    return -v if neg else v


INT_MIN, INT_MAX = -(1 << 31), (1 << 31) - 1
_ULLONG_MAX, _LLONG_MAX = (1 << 64) - 1, (1 << 63) - 1


def _kstrtoull(s: str) -> tuple[int, int]:
    """lib/kstrtox.c _kstrtoull(s, 10): decimal digits, one optional trailing newline, nothing else."""
    n = 0
    while n < len(s) and "0" <= s[n] <= "9":
        n += 1
    if n == 0:
        return -errno.EINVAL, 0
    v = int(s[:n])
    if v > _ULLONG_MAX:
        return -errno.ERANGE, 0  # overflow is found while parsing, before the tail is looked at
    rest = s[n:]
    if rest.startswith("\n"):
        rest = rest[1:]
    if rest:
        return -errno.EINVAL, 0
    return 0, v


def kstrtoint(text: str) -> tuple[int, int]:
    """The kernel's kstrtoint(s, 10, &v): (0, value), or (-EINVAL or -ERANGE, 0).

    An optional '-' (or one '+'), decimal digits, an optional newline; anything else (spaces, a
    second sign, "1abc") is -EINVAL, a value outside int is -ERANGE. The store sees the text up
    to its first NUL, as the kernel's string does.
    """
    s = text.split("\0", 1)[0]
    if s.startswith("-"):
        err, v = _kstrtoull(s[1:])
        if err:
            return err, 0
        if v > _LLONG_MAX + 1:
            return -errno.ERANGE, 0
        v = -v
    else:
        err, v = _kstrtoull(s[1:] if s.startswith("+") else s)
        if err:
            return err, 0
        if v > _LLONG_MAX:
            return -errno.ERANGE, 0
    if not INT_MIN <= v <= INT_MAX:
        return -errno.ERANGE, 0
    return 0, v


def kstrtobool(text: str) -> bool | None:
    """The kernel's kstrtobool: None where it would return -EINVAL."""
    if not text:
        return None
    c = text[0]
    if c in "yYtT1":
        return True
    if c in "nNfF0":
        return False
    if c in "oO" and len(text) > 1:
        if text[1] in "nN":
            return True
        if text[1] in "fF":
            return False
    return None


class FwUpload:
    """One registered fw_upload device (`/sys/class/firmware/<name>/`)."""

    def __init__(self, k: Kernel, name: str, ops: FwUploadOps) -> None:
        for op in ("prepare", "write", "poll_complete", "cancel"):
            if not callable(getattr(ops, op, None)):
                raise ValueError(f"firmware_upload_register: ops.{op} missing (-EINVAL)")
        self.k = k
        self.name = name
        self.ops = ops
        self.fw_state = FwState.INIT
        self.buf = bytearray()
        self.size = 0
        self.progress = FwUploadProg.FW_UPLOAD_PROG_IDLE
        self.err_progress = FwUploadProg.FW_UPLOAD_PROG_IDLE
        self.err_code = FwUploadErr.FW_UPLOAD_ERR_NONE
        self.remaining_size = 0
        self.data: bytes | None = None
        self.history: list[UploadRecord] = []
        self.on_idle: list[Callable[[], None]] = []  # called when a worker returns to idle

    # ---- loading ------------------------------------------------------------------------------

    def loading_show(self) -> str:
        return "1\n" if self.fw_state == FwState.LOADING else "0\n"

    def loading_store(self, text: str) -> int:
        count = len(text.encode())
        err, loading = kstrtoint(text)  # parsed before fw_lock is taken: -EINVAL in any state
        if err:
            return err
        if self.fw_state in (FwState.DONE, FwState.ABORTED):
            return count  # silently ignored while an upload is being consumed, or after an abort
        if loading == 1:
            self.buf = bytearray()
            self.size = 0
            self.fw_state = FwState.LOADING
            return count
        if loading == 0 and self.fw_state == FwState.LOADING:
            self.fw_state = FwState.DONE
            ret = self.fw_upload_start()
            return ret if ret else count
        if loading != -1:
            self.k.pr_err("firmware_class: ", f"{self.name}: unexpected value ({loading})")
        # fw_load_abort(), then fw_state_init() for an fw_upload device: usable again. The paged
        # buffer is not freed (only `1` and the worker free it): `data` still reads it back.
        self.fw_state = FwState.INIT
        return count

    # ---- data ---------------------------------------------------------------------------------

    def data_read(self, offset: int, count: int) -> bytes | int:
        if self.fw_state == FwState.DONE:
            return -errno.ENODEV
        if offset >= self.size:
            return b""
        return bytes(self.buf[offset:min(self.size, offset + count)])

    def data_write(self, offset: int, chunk: bytes, *, cap_sys_rawio: bool = True) -> int:
        if not cap_sys_rawio:
            return -errno.EPERM
        if self.fw_state == FwState.DONE:
            return -errno.ENODEV
        end = offset + len(chunk)
        if end > FW_UPLOAD_BUFFER_LIMIT:
            # fw_realloc_pages() failing calls fw_load_abort(): the state is ABORTED, and
            # `loading` is ignored from then on (the kernel has no way back for fw_upload)
            self.fw_state = FwState.ABORTED
            return -errno.ENOMEM
        if end > len(self.buf):
            self.buf.extend(bytes(end - len(self.buf)))
        self.buf[offset:end] = chunk
        self.size = max(self.size, end)
        return len(chunk)

    # ---- start and worker -----------------------------------------------------------------------

    def fw_upload_start(self) -> int:
        if self.size == 0:
            # nothing to do; the last error stays readable
            self.fw_state = FwState.INIT
            return 0
        if self.progress != FwUploadProg.FW_UPLOAD_PROG_IDLE:
            return -errno.EBUSY  # do not interfere with the upload in progress
        self.progress = FwUploadProg.FW_UPLOAD_PROG_RECEIVING
        self.err_code = FwUploadErr.FW_UPLOAD_ERR_NONE
        self.remaining_size = self.size
        self.data = bytes(self.buf[:self.size])
        m = self.k.machine
        cpu = m.current_cpu() if m.sched.current is not None else m.cpus[0]
        m.sched.spawn(cpu, self.fw_upload_main, name=f"kworker/{self.name}")
        return 0

    def _set_error(self, err: FwUploadErr) -> None:
        self.err_progress = self.progress
        self.err_code = err

    def fw_upload_main(self) -> None:
        """The worker on system_long_wq: prepare, write until done, poll, clean up."""
        assert self.data is not None
        data, offset = self.data, 0
        self.progress = FwUploadProg.FW_UPLOAD_PROG_PREPARING
        ret = self.ops.prepare(data, self.remaining_size)
        if ret != FwUploadErr.FW_UPLOAD_ERR_NONE:
            self._set_error(ret)
        else:
            self.progress = FwUploadProg.FW_UPLOAD_PROG_TRANSFERRING
            while self.remaining_size:
                ret, written = self.ops.write(data, offset, self.remaining_size)
                if ret != FwUploadErr.FW_UPLOAD_ERR_NONE or not written:
                    self._set_error(ret if ret != FwUploadErr.FW_UPLOAD_ERR_NONE
                                    else FwUploadErr.FW_UPLOAD_ERR_RW_ERROR)
                    break
                self.remaining_size -= written
                offset += written
            else:
                self.progress = FwUploadProg.FW_UPLOAD_PROG_PROGRAMMING
                ret = self.ops.poll_complete()
                if ret != FwUploadErr.FW_UPLOAD_ERR_NONE:
                    self._set_error(ret)
        self.history.append(UploadRecord(len(data), int(self.err_progress), int(self.err_code)))
        self.buf = bytearray()
        self.size = 0
        self.fw_state = FwState.INIT
        self.data = None
        self.progress = FwUploadProg.FW_UPLOAD_PROG_IDLE
        for cb in self.on_idle:
            cb()

    # ---- status files -----------------------------------------------------------------------------

    def status_show(self) -> str:
        return fw_upload_progress(self.progress) + "\n"

    def error_show(self) -> str | int:
        if self.progress != FwUploadProg.FW_UPLOAD_PROG_IDLE:
            return -errno.EBUSY
        if not self.err_code:
            return ""
        return f"{fw_upload_progress(self.err_progress)}:{fw_upload_error(self.err_code)}\n"

    def remaining_size_show(self) -> str:
        return f"{self.remaining_size}\n"

    def cancel_store(self, text: str) -> int:
        v = kstrtobool(text)
        if not v:
            return -errno.EINVAL
        ret = len(text.encode())
        if self.progress == FwUploadProg.FW_UPLOAD_PROG_IDLE:
            ret = -errno.ENODEV
        self.ops.cancel()
        return ret

    @property
    def busy(self) -> bool:
        return self.progress != FwUploadProg.FW_UPLOAD_PROG_IDLE
