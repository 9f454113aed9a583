"""The fw_upload sequence and update outcomes against a scripted fake kernel (in memory), plus the
plain-file path of a real root directory. The emulated kernel itself: test_tool_emulated.py."""

from __future__ import annotations

import errno
import json

import pytest

from _tool_host import make_root
from tdxseam.formats import testsign
from tdxseam.formats.sigstruct import INTEL_KEY_HASH
from tdxseam.tool.catalog import load_catalog
from tdxseam.tool.hostinfo import SysfsRoot
from tdxseam.tool.plan import PlanOptions
from tdxseam.tool.update import Outcome, UpdateOptions, run_update
from tdxseam.tool.upload import UploadOutcome, upload_image
from tdxseam.tool.verify import VerifyOptions

UP = "sys/class/firmware/tdx_module"
HOST = "sys/devices/faux/tdx_host"


class FakeKernel(SysfsRoot):
    """Plain files for everything but the upload directory and `version`, which follow a script:
    the worker takes `polls` status reads, then ends with `result` ("" = success)."""

    def __init__(self, root, *, polls=2, result="", new_version="1.5.13", max_write=4096,
                 fail_data=None, fail_loading0=None, lose_module=False):
        super().__init__(root)
        self.polls, self.result, self.new_version = polls, result, new_version
        self.max_write, self.fail_data, self.fail_loading0 = max_write, fail_data, fail_loading0
        self.lose_module = lose_module
        self.loading = False
        self.buf = bytearray()
        self.busy = 0
        self.error = ""
        self.version = "1.5.06"
        self.log: list[str] = []
        self.uploaded: bytes | None = None

    def read_text(self, rel):
        if rel == f"{UP}/status":
            if self.busy:
                self.busy -= 1
                if not self.busy:
                    self._finish()
                return "transferring\n"
            return "idle\n"
        if rel == f"{UP}/error":
            if self.busy:
                raise OSError(errno.EBUSY, "Device or resource busy")
            return self.error + ("\n" if self.error else "")
        if rel == f"{HOST}/version":
            if self.version is None:
                raise OSError(errno.ENXIO, "No such device or address")
            return self.version + "\n"
        return super().read_text(rel)

    def _finish(self):
        self.error = self.result
        if not self.result:
            self.version = self.new_version
        elif self.lose_module:
            self.version = None

    def write_text(self, rel, text):
        self.log.append(f"{rel.rsplit('/', 1)[-1]}={text}")
        if rel != f"{UP}/loading":
            return super().write_text(rel, text)
        if text == "1":
            self.loading, self.buf = True, bytearray()
        elif text == "0" and self.loading:
            if self.fail_loading0:
                raise OSError(self.fail_loading0, "injected")
            self.loading = False
            self.uploaded = bytes(self.buf)
            self.busy = self.polls
            if not self.busy:
                self._finish()
        else:
            self.loading, self.buf = False, bytearray()

    def open_write(self, rel):
        assert rel == f"{UP}/data"
        self.pos = 0
        return 99

    def write(self, fd, data):
        if self.fail_data is not None and self.pos >= 8192:
            raise OSError(self.fail_data, "injected")
        n = min(len(data), self.max_write)
        self.buf[self.pos:self.pos + n] = bytes(data[:n])
        self.pos += n
        return n

    def close(self, fd):
        if self.intruder is not None:  # another root writer, between our last write and `0`
            self.intruder(self.buf)

    def read_bytes(self, rel, limit):
        assert rel == f"{UP}/data"
        return bytes(self.buf[:limit])

    intruder = None


def _no_sleep(_):
    pass


def test_sequence_partial_writes_and_busy_error(tmp_path):
    fk = FakeKernel(make_root(tmp_path), polls=3, max_write=1000)
    image = bytes(range(256)) * 100
    seen = []
    res = upload_image(fk, UP, image, sleep=_no_sleep, progress=seen.append)
    assert res.outcome is UploadOutcome.DONE and fk.uploaded == image
    assert fk.log == ["loading=1", "loading=0"]
    assert res.statuses == ["idle", "transferring", "idle"]
    phases = [p.phase for p in seen]
    assert phases[0] == "writing" and phases[-1] == "done" and "waiting" in phases
    assert max(p.written for p in seen) == len(image)


def test_kernel_error_and_timeout(tmp_path):
    fk = FakeKernel(make_root(tmp_path), result="transferring:firmware-invalid")
    res = upload_image(fk, UP, b"x" * 5000, sleep=_no_sleep)
    assert res.outcome is UploadOutcome.KERNEL_ERROR and res.error == "transferring:firmware-invalid"
    t = iter(range(1000))
    fk = FakeKernel(make_root(tmp_path / "b"), polls=10**6)
    res = upload_image(fk, UP, b"x" * 5000, timeout=5, sleep=_no_sleep, clock=lambda: next(t))
    assert res.outcome is UploadOutcome.TIMEOUT and "may still be running" in res.error


def test_write_failures_abort(tmp_path):
    fk = FakeKernel(make_root(tmp_path), fail_data=errno.EPERM)
    res = upload_image(fk, UP, b"x" * 20000, sleep=_no_sleep)
    assert res.outcome is UploadOutcome.WRITE_ERROR and "CAP_SYS_RAWIO" in res.error
    assert fk.log[-1] == "loading=-1" and fk.uploaded is None
    fk = FakeKernel(make_root(tmp_path / "b"), fail_loading0=errno.EBUSY)
    res = upload_image(fk, UP, b"x" * 100, sleep=_no_sleep)
    assert res.outcome is UploadOutcome.BUSY and fk.log[-1] == "loading=-1"


def test_busy_before_start_writes_nothing(tmp_path):
    fk = FakeKernel(make_root(tmp_path))
    fk.busy = 5
    res = upload_image(fk, UP, b"x" * 100, sleep=_no_sleep)
    assert res.outcome is UploadOutcome.BUSY and res.written == 0 and fk.log == []


# -- update outcomes --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def catalog(intel_dir):
    return load_catalog(intel_dir)


def _update(fk, catalog, tmp_path, **kw):
    opts = UpdateOptions(poll_interval=0, history=tmp_path / "history.jsonl", **kw)
    return run_update(fk, catalog, None, PlanOptions(), opts)


@pytest.mark.parametrize("kw,outcome", [
    ({}, Outcome.UPDATED),
    ({"new_version": "1.5.09"}, Outcome.VERSION_MISMATCH),
    ({"result": "transferring:firmware-invalid"}, Outcome.UPLOAD_FAILED),
    ({"result": "transferring:firmware-invalid", "lose_module": True}, Outcome.MODULE_LOST),
    ({"polls": 10**6}, Outcome.TIMEOUT),
])
def test_update_outcomes_and_history(tmp_path, catalog, kw, outcome):
    fk = FakeKernel(make_root(tmp_path), **kw)
    res = _update(fk, catalog, tmp_path, timeout=0.05)
    assert res.outcome is outcome, res.message
    assert "\n" not in res.message
    assert fk.uploaded is not None and fk.uploaded[:2] == b"\x00\x02"  # a v2 image reached the kernel
    rec = json.loads((tmp_path / "history.jsonl").read_text().splitlines()[-1])
    assert rec["outcome"] == outcome.value and rec["to_version"] == "1.5.13" and rec["v"] == 1
    assert rec["from_version"] == "1.5.06" and rec["root"] == str(tmp_path)
    assert rec["image_sha384"] == res.image_sha384


def test_dry_run_declined_and_blocked_write_nothing(tmp_path, catalog):
    fk = FakeKernel(make_root(tmp_path))
    res = _update(fk, catalog, tmp_path, dry_run=True)
    assert res.outcome is Outcome.DRY_RUN and res.image_size == 454656 and fk.log == []
    res = _update(fk, catalog, tmp_path, confirm=lambda plan, image: False)
    assert res.outcome is Outcome.DECLINED and fk.log == []
    fk = FakeKernel(make_root(tmp_path / "b", remaining=0))
    res = _update(fk, catalog, tmp_path)
    assert res.outcome is Outcome.BLOCKED and fk.log == [] and "num_remaining_updates is 0" in res.message
    assert not (tmp_path / "history.jsonl").exists()  # nothing written, nothing recorded


def test_plain_directory_root(tmp_path, catalog):
    """The real file path (os.open/os.write) on a directory with no kernel behind it: the image
    lands in `data`, status stays idle, and the unchanged version is reported as a mismatch."""
    root = make_root(tmp_path / "root")
    res = _update(SysfsRoot(root), catalog, tmp_path)
    data = (root / UP / "data").read_bytes()
    assert res.outcome is Outcome.VERSION_MISMATCH
    assert len(data) == 454656 and data[:2] == b"\x00\x02" and (root / UP / "loading").read_text() == "0"


def test_update_named_test_module(tmp_path):
    img = tmp_path / "tdx_module_1.5.20.img"
    img.write_bytes(testsign.make_image("1.5.20"))
    cat_dir = tmp_path / "cat"
    from _tool_host import synthetic_catalog

    cat = load_catalog(synthetic_catalog(cat_dir, [{"version": "1.5.20", "td_floor": "1.5.01"}]))
    fk = FakeKernel(make_root(tmp_path / "root"), new_version="1.5.20", polls=0)
    opts = PlanOptions(VerifyOptions((INTEL_KEY_HASH, testsign.signing_key().key_hash)))
    res = run_update(fk, cat, str(img), opts, UpdateOptions(poll_interval=0))
    assert res.outcome is Outcome.UPDATED and fk.uploaded == img.read_bytes()  # valid v2 sent as is


# -- upload integrity: the read-back of `data` and the update lock ------------------------------------


def _scribble(buf):
    buf[5000:5004] = b"EVIL"  # a second writer's bytes land in the shared buffer


def test_readback_cancels_a_mixed_image(tmp_path, catalog):
    fk = FakeKernel(make_root(tmp_path))
    fk.intruder = _scribble
    res = _update(fk, catalog, tmp_path)
    assert res.outcome is Outcome.UPLOAD_FAILED and res.upload.outcome is UploadOutcome.READBACK_MISMATCH
    assert "different from byte 5000" in res.message and "cancelled" in res.message
    assert fk.log == ["loading=1", "loading=-1"] and fk.uploaded is None  # nothing reached the kernel
    assert res.version_after == "1.5.06"


def test_readback_switched_off_lets_the_mixed_image_through(tmp_path, catalog, monkeypatch):
    import tdxseam.tool.upload as upload

    monkeypatch.setattr(upload, "_readback", lambda fs, data, image: None)
    fk = FakeKernel(make_root(tmp_path))
    fk.intruder = _scribble
    res = _update(fk, catalog, tmp_path)
    assert fk.uploaded is not None and fk.uploaded[5000:5004] == b"EVIL"  # what the check prevents
    assert res.outcome is Outcome.UPDATED  # the scripted kernel takes anything; a real one would not


def test_readback_catches_a_longer_buffer(tmp_path):
    fk = FakeKernel(make_root(tmp_path))
    fk.intruder = lambda buf: buf.extend(b"more")
    res = upload_image(fk, UP, b"x" * 5000, sleep=_no_sleep)
    assert res.outcome is UploadOutcome.READBACK_MISMATCH and "more than 5000 bytes" in res.error


def test_a_held_update_lock_turns_a_second_run_away(tmp_path, catalog):
    import fcntl
    import os

    from tdxseam.tool.lock import update_lock

    lock = tmp_path / "run" / "update.lock"
    with update_lock(lock):  # the first run, still in its update
        fk = FakeKernel(make_root(tmp_path))
        res = _update(fk, catalog, tmp_path, lock=lock)
        assert res.outcome is Outcome.BLOCKED and fk.log == [] and fk.uploaded is None
        assert f"pid {os.getpid()}" in res.message and str(lock) in res.message
        # without the lock, the second run would have written into the same buffer
        res = _update(fk, catalog, tmp_path, lock=None)
        assert fk.log[0] == "loading=1"
    fk = FakeKernel(make_root(tmp_path / "b"))
    assert _update(fk, catalog, tmp_path, lock=lock).outcome is Outcome.UPDATED
    fd = os.open(lock, os.O_RDWR)  # released at the end of the run
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.close(fd)


def test_update_cli_exits_blocked_while_locked(tmp_path, intel_dir, capsys):
    from tdxseam.cli import exits, main
    from tdxseam.tool.lock import update_lock

    lock = tmp_path / "update.lock"
    root = make_root(tmp_path / "root")
    with update_lock(lock):
        with pytest.raises(SystemExit) as ei:
            main(["update", "--yes", "--json", "--catalog", str(intel_dir), "--sysfs-root", str(root),
                  "--lock", str(lock), "--history", str(tmp_path / "h.jsonl")])
    out, err = capsys.readouterr()
    doc = json.loads(out)
    assert ei.value.code == exits.BLOCKED and doc["outcome"] == "blocked" and "holds" in doc["message"]
    assert (root / UP / "data").read_bytes() == b""
