"""`tdxseam update`: plan, build the image the kernel takes, upload, confirm, record.

Nothing is written to the host unless the plan selected a release and the host checks pass
(runtime update offered, upload idle, updates remaining, all CPUs online). One history line is
appended for every attempt that wrote to the host.
"""

from __future__ import annotations

import errno
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

from tdxseam.tool import history as hist
from tdxseam.tool.catalog import Catalog
from tdxseam.tool.convert import image_for
from tdxseam.tool.errors import ToolError
from tdxseam.tool.hostinfo import SysfsRoot, read_attr, read_host
from tdxseam.tool.lock import LockHeld, update_lock
from tdxseam.tool.plan import Plan, PlanOptions, make_plan
from tdxseam.tool.upload import DEFAULT_POLL, DEFAULT_TIMEOUT, Progress, UploadOutcome, UploadResult, upload_image


class Outcome(Enum):
    UPDATED = "updated"
    DRY_RUN = "dry_run"
    UP_TO_DATE = "up_to_date"
    REFUSED = "refused"
    BLOCKED = "blocked"
    DECLINED = "declined"
    UPLOAD_FAILED = "upload_failed"
    MODULE_LOST = "module_lost"
    TIMEOUT = "timeout"
    VERSION_MISMATCH = "version_mismatch"

    @property
    def wrote(self) -> bool:
        return self in (Outcome.UPDATED, Outcome.UPLOAD_FAILED, Outcome.MODULE_LOST, Outcome.TIMEOUT,
                        Outcome.VERSION_MISMATCH)


@dataclass
class UpdateOptions:
    dry_run: bool = False
    timeout: float = DEFAULT_TIMEOUT
    poll_interval: float = DEFAULT_POLL
    confirm: Callable[[Plan, bytes], bool] | None = None  # None: no question asked
    progress: Callable[[Progress], None] | None = None
    history: Path | None = None  # None: do not record
    lock: Path | None = None  # the update lock (tool.lock); None: not taken (library use, dry runs)


@dataclass
class UpdateResult:
    outcome: Outcome
    message: str
    plan: Plan | None
    from_version: str | None = None
    to_version: str | None = None
    file: str | None = None
    image_format: str | None = None
    image_size: int | None = None
    image_sha384: str | None = None
    mrseam: str | None = None
    upload: UploadResult | None = None
    version_after: str | None = None
    version_after_error: str | None = None
    remaining_before: int | None = None
    remaining_after: int | None = None
    duration: float = 0.0
    history_path: str | None = None
    history_error: str | None = None
    started: str = field(default_factory=hist.now_utc)

    def to_json(self, *, with_plan: bool = True) -> dict[str, Any]:
        out = {
            "outcome": self.outcome.value,
            "message": self.message,
            "dry_run": self.outcome is Outcome.DRY_RUN,
            "from_version": self.from_version,
            "to_version": self.to_version,
            "file": self.file,
            "image_format": self.image_format,
            "image_size": self.image_size,
            "image_sha384": self.image_sha384,
            "mrseam": self.mrseam,
            "upload": self.upload.to_json() if self.upload else None,
            "version_after": self.version_after,
            "version_after_error": self.version_after_error,
            "num_remaining_updates_before": self.remaining_before,
            "num_remaining_updates_after": self.remaining_after,
            "duration_s": round(self.duration, 3),
            "history": self.history_path,
            "history_error": self.history_error,
        }
        if with_plan:
            out["plan"] = self.plan.to_json() if self.plan else None
        return out

    def history_record(self, root: str) -> dict[str, Any]:
        rec = self.to_json(with_plan=False)
        for k in ("history", "history_error", "dry_run"):
            rec.pop(k)
        plan = self.plan
        return {"time": self.started, "root": root,
                "seamldr_version": plan.host.seamldr_version.value if plan else None, **rec}


def run_update(fs: SysfsRoot, catalog: Catalog | None, target: str | None, plan_opts: PlanOptions,
               opts: UpdateOptions) -> UpdateResult:
    """Plan and install under the update lock (held from reading the host to recording the
    outcome, so a second run plans on what the first one left); a held lock is BLOCKED."""
    if opts.lock is None or opts.dry_run:
        return _run_update(fs, catalog, target, plan_opts, opts)
    try:
        with update_lock(opts.lock):
            return _run_update(fs, catalog, target, plan_opts, opts)
    except LockHeld as exc:
        return UpdateResult(Outcome.BLOCKED, str(exc), None)


def _run_update(fs: SysfsRoot, catalog: Catalog | None, target: str | None, plan_opts: PlanOptions,
                opts: UpdateOptions) -> UpdateResult:
    t0 = time.monotonic()
    host = read_host(fs)
    plan = make_plan(host, catalog, target=target, opts=plan_opts)
    res = UpdateResult(Outcome.REFUSED, plan.message, plan, from_version=str(host.version),
                       remaining_before=host.remaining_updates)
    cand = plan.selected or plan.best or plan.target
    if cand is not None:
        res.to_version = str(cand.version) if cand.version else None
        res.file = cand.file.display if cand.file else None
        if cand.verified and cand.verified.sig:
            res.mrseam = cand.verified.sig.seamhash.hex()

    if plan.outcome != "update":
        res.outcome = {"up_to_date": Outcome.UP_TO_DATE, "blocked": Outcome.BLOCKED}.get(plan.outcome, Outcome.REFUSED)
        res.duration = time.monotonic() - t0
        return res

    sel = plan.selected
    assert sel is not None and sel.file is not None and host.image_format is not None and host.upload_dir
    image = image_for(sel.file, host.image_format)
    res.image_format = host.image_format
    res.image_size = len(image)
    res.image_sha384 = hashlib.sha384(image).hexdigest()

    if opts.dry_run:
        res.outcome = Outcome.DRY_RUN
        res.message = (f"dry run: would upload {sel.version} as a {len(image)}-byte {host.image_format} image "
                       f"to /{host.upload_dir}; nothing written")
        res.duration = time.monotonic() - t0
        return res
    if opts.confirm is not None and not opts.confirm(plan, image):
        res.outcome = Outcome.DECLINED
        res.message = "not confirmed; nothing written"
        res.duration = time.monotonic() - t0
        return res

    up = upload_image(fs, host.upload_dir, image, timeout=opts.timeout, poll_interval=opts.poll_interval,
                      progress=opts.progress)
    res.upload = up
    after = read_attr(fs, host.module_version.path)
    res.version_after = after.value
    res.version_after_error = after.error
    nru = read_attr(fs, host.num_remaining_updates.path)
    try:
        res.remaining_after = int(nru.value) if nru.value is not None else None
    except ValueError:
        res.remaining_after = None
    lost = after.errno == errno.ENXIO

    if up.outcome is UploadOutcome.DONE:
        if lost:
            res.outcome, res.message = Outcome.MODULE_LOST, (
                "the upload reported success but version reads ENXIO: the TDX module is gone; TDs are lost, "
                "reboot the host")
        elif after.value == str(sel.version):
            res.outcome = Outcome.UPDATED
            res.message = f"updated the TDX module from {host.version} to {after.value}"
        else:
            res.outcome = Outcome.VERSION_MISMATCH
            res.message = (f"the upload reported success but version reads "
                           f"{after.value if after.ok else after.error}, expected {sel.version}")
    elif up.outcome is UploadOutcome.TIMEOUT:
        res.outcome, res.message = Outcome.TIMEOUT, up.error or "timeout"
    elif up.outcome is UploadOutcome.BUSY and up.written == 0:
        res.outcome, res.message = Outcome.BLOCKED, f"{up.error}; nothing written"
    elif lost:
        res.outcome, res.message = Outcome.MODULE_LOST, (
            f"the update failed ({up.error}) after the old module was shut down: version reads ENXIO, TDs are "
            "lost; reboot the host")
    else:
        res.outcome = Outcome.UPLOAD_FAILED
        res.message = f"the update failed: {up.error}; {after.value or after.error} is still running"
    res.duration = time.monotonic() - t0

    if opts.history is not None and res.outcome.wrote:
        res.history_path = str(opts.history)
        try:
            hist.append(opts.history, res.history_record(str(host.root)))
        except ToolError as exc:
            res.history_error = str(exc)
    return res
