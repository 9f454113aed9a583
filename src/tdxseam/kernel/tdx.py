"""TDX module management in the host kernel (tdx.c): boot-time enabling, per-CPU init, metadata.

The runtime-update steps (shutdown, run_update) live here too, as upstream keeps them in tdx.c.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tdxseam.formats.leaves import TdxLeaf
from tdxseam.formats.metadata import MdField
from tdxseam.formats.version import ModuleVersion
from tdxseam.kernel.locks import RawSpinlock, raw_spin_lock, raw_spin_unlock
from tdxseam.kernel.seamcall import seamcall_prerr, seamcall_prerr_ret
from tdxseam.platform.cpu import Regs

if TYPE_CHECKING:
    from tdxseam.kernel.kernel import Kernel

PR_FMT = "virt/tdx: "



@dataclass
class TdxSysInfo:
    """The part of `struct tdx_sys_info` the update path touches."""

    version: ModuleVersion = ModuleVersion(0, 0, 0)
    tdx_features0: int = 0


@dataclass
class TdxModuleState:
    initialized: bool = False
    sysinit_done: bool = False
    sysinit_ret: int = 0


@dataclass
class TdxHost:
    """tdx.c's file-scope state for one kernel."""

    state: TdxModuleState = field(default_factory=TdxModuleState)
    sysinfo: TdxSysInfo = field(default_factory=TdxSysInfo)
    sysinit_lock: RawSpinlock | None = None


def tdx_of(k: Kernel) -> TdxHost:
    t = getattr(k, "_tdx", None)
    if t is None:
        t = k._tdx = TdxHost(sysinit_lock=RawSpinlock(k, "sysinit_lock"))
    return t


def tdx_get_sysinfo(k: Kernel) -> TdxSysInfo | None:
    """NULL (None) until the module is initialised, and again after a failed update."""
    t = tdx_of(k)
    return t.sysinfo if t.state.initialized else None


def read_sys_metadata_field(k: Kernel, field_id: int) -> tuple[int, int]:
    """TDH.SYS.RD of one field: (errno, value)."""
    args = Regs(rdx=field_id)
    ret = seamcall_prerr_ret(k, PR_FMT, TdxLeaf.TDH_SYS_RD, args)
    return ret, (args.r8 if ret == 0 else 0)


def read_version(k: Kernel) -> tuple[int, ModuleVersion]:
    out = []
    for fid in (MdField.MAJOR_VERSION, MdField.MINOR_VERSION, MdField.UPDATE_VERSION):
        ret, v = read_sys_metadata_field(k, fid)
        if ret:
            return ret, ModuleVersion(0, 0, 0)
        out.append(v)
    return 0, ModuleVersion(*out)


def try_init_module_global(k: Kernel) -> int:
    """TDH.SYS.INIT exactly once; every CPU sees the cached result."""
    t = tdx_of(k)
    raw_spin_lock(t.sysinit_lock)
    try:
        if t.state.sysinit_done:
            return t.state.sysinit_ret
        ret = seamcall_prerr(k, PR_FMT, TdxLeaf.TDH_SYS_INIT, Regs(rcx=0))
        if ret == -errno.ENODEV:
            k.pr_err(PR_FMT, "module not loaded")
        t.state.sysinit_done = True
        t.state.sysinit_ret = ret
        return ret
    finally:
        raw_spin_unlock(t.sysinit_lock)


def tdx_cpu_enable(k: Kernel) -> int:
    """Global init (once) and LP init (this CPU); interrupts must be off, as the caller ensures."""
    pc = k.this_percpu()
    if pc.tdx_lp_initialized:
        return 0
    ret = try_init_module_global(k)
    if ret:
        return ret
    ret = seamcall_prerr(k, PR_FMT, TdxLeaf.TDH_SYS_LP_INIT, Regs())
    if ret:
        return ret
    pc.tdx_lp_initialized = True
    return 0


def tdx_module_config(k: Kernel) -> int:
    """Boot-only configuration after every CPU ran LP.INIT (CONFIG, KEY.CONFIG, TDMR.INIT).

    tdxseam models no TDMR or PAMT memory, so each is one call on the lead CPU (KEY.CONFIG once
    per package, which on a one-package emulated host is once).
    """
    for leaf in (TdxLeaf.TDH_SYS_CONFIG, TdxLeaf.TDH_SYS_KEY_CONFIG, TdxLeaf.TDH_SYS_TDMR_INIT):
        ret = seamcall_prerr(k, PR_FMT, leaf, Regs())
        if ret:
            return ret
    return 0


def tdx_init(k: Kernel) -> None:
    """Early boot (tdx_init): report the KeyID split the BIOS programmed.

    The model platform gives TDX every KeyID from 1 (no MKTME KeyIDs), `num_private_hkids` of them.
    """
    start = 1
    k.pr_info(PR_FMT, f"BIOS enabled: private KeyID range [{start}, {start + k.machine.num_private_hkids})")


def tdx_enable(k: Kernel) -> int:
    """subsys_initcall tdx_enable(), after every CPU ran tdx_cpu_enable(): configure the module
    and read its metadata (init_tdx_module), then say how it went, as the kernel does."""
    ret = tdx_module_config(k) or tdx_read_sysinfo(k)
    if ret:
        k.pr_err(PR_FMT, f"TDX-Module initialization failed ({ret})")
        return ret
    k.pr_info(PR_FMT, "TDX-Module initialized")
    return 0


def tdx_read_sysinfo(k: Kernel) -> int:
    t = tdx_of(k)
    ret, version = read_version(k)
    if ret:
        return ret
    ret, features0 = read_sys_metadata_field(k, MdField.TDX_FEATURES0)
    if ret:
        return ret
    t.sysinfo = TdxSysInfo(version=version, tdx_features0=features0)
    t.state.initialized = True
    return 0




# ---- runtime update steps (run inside stop_machine, so no lock guards tdx.c's state) ----------

def tdx_module_shutdown(k: Kernel) -> int:
    """Lead CPU: hand the running module's state off and shut it down (TDH.SYS.SHUTDOWN)."""
    ret, module_hv = read_sys_metadata_field(k, MdField.MODULE_HV)
    if ret:
        k.warn("failed to read the TDX module's handoff version")
        module_hv = 0  # upstream goes on with the lowest version
    # Only upgrades are designed for: ask for the running module's highest handoff version.
    ret = seamcall_prerr(k, PR_FMT, TdxLeaf.TDH_SYS_SHUTDOWN, Regs(rcx=module_hv))
    if ret:
        return ret
    t = tdx_of(k)
    t.state = TdxModuleState()  # tdx_get_sysinfo() now returns None
    for pc in k.percpu:  # every possible CPU, so offline ones run LP.INIT when they come up
        pc.tdx_lp_initialized = False
    return 0


def tdx_module_run_update(k: Kernel) -> int:
    """Lead CPU: the new module takes the handed-off state (TDH.SYS.UPDATE)."""
    ret = seamcall_prerr(k, PR_FMT, TdxLeaf.TDH_SYS_UPDATE, Regs())
    if ret:
        return ret
    t = tdx_of(k)
    ret, version = read_version(k)
    if ret:
        k.warn("failed to read the new TDX module's version")
    else:
        # Only the version is refreshed: consumers keep the boot-time features on purpose.
        t.sysinfo.version = version
    t.state.initialized = True
    return 0
