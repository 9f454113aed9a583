"""The tdx_host faux device: its attributes and the "tdx_module" upload (drivers/virt/coco/tdx-host).

Each `*_show` returns the text a read gives or a negative errno, as the kernel's sysfs callbacks do.
The P-SEAMLDR attributes and the upload directory exist only when runtime update is supported,
decided once when the device is probed (spec-linux.md §5.1, §7.1).
"""

from __future__ import annotations

import errno
from typing import TYPE_CHECKING

from tdxseam.formats.metadata import TDX_FEATURES0_TD_PRESERVING
from tdxseam.kernel.firmware_upload import FwUpload, FwUploadErr
from tdxseam.kernel.locks import preempt_disable, preempt_enable
from tdxseam.kernel.seamldr import seamldr_get_info, seamldr_install_module
from tdxseam.kernel.tdx import tdx_get_sysinfo

if TYPE_CHECKING:
    from tdxseam.kernel.kernel import Kernel


def supports_runtime_update(k: Kernel) -> bool:
    """Module up, TD-preserving updates offered, and the boot CPU free of the VMCS erratum."""
    sysinfo = tdx_get_sysinfo(k)
    if sysinfo is None:
        return False
    if not sysinfo.tdx_features0 & TDX_FEATURES0_TD_PRESERVING:
        return False
    return not k.machine.cpus[0].has_seamret_invd_vmcs


class TdxFwOps:
    """tdx_fw_ops: only `write` does anything; it hands the whole image to the P-SEAMLDR driver."""

    def __init__(self, k: Kernel) -> None:
        self.k = k

    def prepare(self, data: bytes, size: int) -> FwUploadErr:
        return FwUploadErr.FW_UPLOAD_ERR_NONE

    def write(self, data: bytes, offset: int, size: int) -> tuple[FwUploadErr, int]:
        ret = seamldr_install_module(self.k, data)
        if ret == -errno.EBUSY and self.k.profile.td_build_guard != "none":
            # a TD build is in flight (the kernel gate, or v10's compat-sensitive shutdown): retry later
            return FwUploadErr.FW_UPLOAD_ERR_BUSY, 0
        if ret:
            # merged kernel: every other failure, image or SEAMCALL, is "firmware-invalid"
            return FwUploadErr.FW_UPLOAD_ERR_FW_INVALID, 0
        return FwUploadErr.FW_UPLOAD_ERR_NONE, len(data)

    def poll_complete(self) -> FwUploadErr:
        return FwUploadErr.FW_UPLOAD_ERR_NONE

    def cancel(self) -> None:
        """Updates cannot be cancelled: the lockstep runs to the end once started."""


class TdxHostDevice:
    """/sys/devices/faux/tdx_host, probed once at boot."""

    def __init__(self, k: Kernel) -> None:
        if tdx_get_sysinfo(k) is None:
            raise RuntimeError("tdx_host: the TDX module did not initialise (-ENODEV)")
        self.k = k
        self.runtime_update = supports_runtime_update(k)
        self.fw_upload = FwUpload(k, "tdx_module", TdxFwOps(k)) if self.runtime_update else None

    def attributes(self) -> dict[str, int]:
        """Visible attribute names and their modes."""
        attrs = {"version": 0o444}
        if self.runtime_update:
            attrs.update(seamldr_version=0o400, num_remaining_updates=0o400)
        return attrs

    def version_show(self) -> str | int:
        k = self.k
        # merged: seamldr_lock_module_update(), so an update (stop_machine) cannot run in this
        # section and the three numbers are read from one module
        locked = k.profile.version_show_locked
        if locked:
            preempt_disable(k)
        try:
            sysinfo = tdx_get_sysinfo(k)
            if sysinfo is None:
                return -errno.ENXIO
            return f"{sysinfo.version}\n"
        finally:
            if locked:
                preempt_enable(k)

    def seamldr_version_show(self) -> str | int:
        ret, info = seamldr_get_info(self.k)
        if ret:
            return ret
        return f"{info.version_str}\n"

    def num_remaining_updates_show(self) -> str | int:
        if "cached-remaining" in self.k.mutations and getattr(self, "_cached_remaining", None):
            return self._cached_remaining  # the planted bug: a stale value
        ret, info = seamldr_get_info(self.k)
        if ret:
            return ret
        self._cached_remaining = f"{info.num_remaining_updates}\n"
        return self._cached_remaining


def tdx_host_init(k: Kernel) -> TdxHostDevice:
    """Module init + probe, once per kernel: later calls return the same device."""
    dev = getattr(k, "tdx_host", None)
    if dev is None:
        dev = k.tdx_host = TdxHostDevice(k)
    return dev
