"""TDX module management in the host kernel (tdx.c): boot-time enabling, per-CPU init, metadata.

The runtime-update steps (shutdown, run_update) live here too, as upstream keeps them in tdx.c.
"""

from __future__ import annotations

import errno
import struct
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from tdxseam.formats.leaves import TdxLeaf
from tdxseam.formats.metadata import TDX_SYS_SHUTDOWN_AVOID_COMPAT_SENSITIVE, MdField
from tdxseam.formats.page import PAGE_SIZE
from tdxseam.formats.status import TDX_SEAMCALL_STATUS_MASK, TdxStatus
from tdxseam.formats.version import ModuleVersion
from tdxseam.kernel.locks import RawSpinlock, raw_spin_lock, raw_spin_unlock
from tdxseam.kernel.seamcall import seamcall, seamcall_err, seamcall_prerr, seamcall_prerr_ret
from tdxseam.platform.cpu import Regs
from tdxseam.platform.cpumodel import tdx_keyid_start

if TYPE_CHECKING:
    from tdxseam.kernel.kernel import Kernel

PR_FMT = "virt/tdx: "
# bound once: every CPU's bring-up and every metadata read make these SEAMCALLs, and on Python
# 3.11 a member looked up on its enum class costs a Python-level hook (EnumType.__getattr__)
_SYS_RD, _SYS_LP_INIT = TdxLeaf.TDH_SYS_RD, TdxLeaf.TDH_SYS_LP_INIT



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
    tdmrs: list = field(default_factory=list)


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
    ret = seamcall_prerr_ret(k, PR_FMT, _SYS_RD, args)
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
    ret = seamcall_prerr(k, PR_FMT, _SYS_LP_INIT, Regs())
    if ret:
        return ret
    pc.tdx_lp_initialized = True
    return 0


TDMR_ALIGNMENT = 1 << 30  # a TDMR starts and ends on 1 GiB
TDMR_INFO_ALIGNMENT = 512  # each TDMR_INFO and the array of their addresses
_TDMR_HEADER = struct.Struct("<8Q")  # base, size, then (base, size) of the 1G, 2M and 4K PAMTs
_TDMR_RSVD = struct.Struct("<QQ")  # offset from the TDMR base, size
_PAMT_PAGE_SIZES = (1 << 30, 2 << 20, 4 << 10)


@dataclass
class TdxSysInfoTdmr:
    """`struct tdx_sys_info_tdmr`: what the module says a TDMR may hold."""

    max_tdmrs: int = 0
    max_reserved_per_tdmr: int = 0
    pamt_entry_size: tuple[int, int, int] = (0, 0, 0)  # 1G, 2M, 4K


@dataclass
class Tdmr:
    base: int
    size: int
    pamt: list[tuple[int, int]]  # (base, size) for 1G, 2M, 4K
    reserved: list[tuple[int, int]]  # (PA, size), sorted

    def to_bytes(self, max_reserved: int) -> bytes:
        out = _TDMR_HEADER.pack(self.base, self.size, *(v for p in self.pamt for v in p))
        for i in range(max_reserved):
            pa, size = self.reserved[i] if i < len(self.reserved) else (self.base, 0)
            out += _TDMR_RSVD.pack(pa - self.base, size)
        return out


def get_tdx_sys_info_tdmr(k: Kernel) -> tuple[int, TdxSysInfoTdmr]:
    vals = []
    for fid in (MdField.MAX_TDMRS, MdField.MAX_RESERVED_PER_TDMR, MdField.PAMT_1G_ENTRY_SIZE,
                MdField.PAMT_2M_ENTRY_SIZE, MdField.PAMT_4K_ENTRY_SIZE):
        ret, v = read_sys_metadata_field(k, fid)
        if ret:
            return ret, TdxSysInfoTdmr()
        vals.append(v)
    return 0, TdxSysInfoTdmr(vals[0], vals[1], tuple(vals[2:]))


def construct_tdmrs(k: Kernel, info: TdxSysInfoTdmr) -> tuple[int, list[Tdmr]]:
    """TDMRs covering the kernel's memory (its e820 RAM, here the machine's memory regions), each
    with its PAMTs in physically contiguous memory and reserved areas for the PAMTs and for the
    parts of the TDMR that are not RAM."""
    tdmrs: list[Tdmr] = []
    regions = k.machine.mem.cmrs()
    for base, size in regions:
        lo = base // TDMR_ALIGNMENT * TDMR_ALIGNMENT
        hi = -(-(base + size) // TDMR_ALIGNMENT) * TDMR_ALIGNMENT
        if tdmrs and lo < tdmrs[-1].base + tdmrs[-1].size:
            return -errno.EINVAL, []  # regions sharing a GiB: not needed on the emulated host
        tdmrs.append(Tdmr(lo, hi - lo, [], []))
    if len(tdmrs) > info.max_tdmrs:
        return -errno.ENOSPC, []
    for t in tdmrs:
        sizes = [-(-(t.size // pg) * es // PAGE_SIZE) * PAGE_SIZE
                 for pg, es in zip(_PAMT_PAGE_SIZES, info.pamt_entry_size)]
        pa = k.machine.mem.alloc_contig(sum(sizes) // PAGE_SIZE)
        t.pamt = []
        for sz in sizes:
            t.pamt.append((pa, sz))
            pa += sz
        holes, cursor = [], t.base
        for base, size in regions:
            if cursor < base:
                holes.append((cursor, base - cursor))
            cursor = max(cursor, base + size)
        if cursor < t.base + t.size:
            holes.append((cursor, t.base + t.size - cursor))
        pamt = (t.pamt[0][0], sum(sizes))
        t.reserved = sorted(holes + [pamt])
        if len(t.reserved) > info.max_reserved_per_tdmr:
            return -errno.E2BIG, []
    return 0, tdmrs


def config_tdx_module(k: Kernel, tdmrs: list[Tdmr], info: TdxSysInfoTdmr, global_keyid: int) -> int:
    """TDH.SYS.CONFIG: the TDMR_INFO array (each entry 512-aligned) and the global KeyID."""
    mem = k.machine.mem
    per = -(-(_TDMR_HEADER.size + _TDMR_RSVD.size * info.max_reserved_per_tdmr)
            // TDMR_INFO_ALIGNMENT) * TDMR_INFO_ALIGNMENT
    pages = -(-len(tdmrs) * per // PAGE_SIZE)
    base = mem.alloc_contig(pages + 1)
    array = base + pages * PAGE_SIZE
    for i, t in enumerate(tdmrs):
        mem.write(base + i * per, t.to_bytes(info.max_reserved_per_tdmr))
        mem.write(array + 8 * i, struct.pack("<Q", base + i * per))
    args = Regs(rcx=array, rdx=len(tdmrs), r8=global_keyid)
    return seamcall_prerr(k, PR_FMT, TdxLeaf.TDH_SYS_CONFIG, args)


def tdx_module_config(k: Kernel, run_on=None) -> int:
    """Boot-only configuration after every CPU ran LP.INIT (CONFIG, KEY.CONFIG, TDMR.INIT).

    The TDMRs and PAMTs are built as Linux builds them and handed to TDH.SYS.CONFIG with the
    global KeyID (the first TDX KeyID). KEY.CONFIG runs once on one CPU of every package
    (`run_on(cpu, fn)` runs it there; without it, on this CPU, enough on a one-package host). TDMR.INIT initialises
    the first chunk of each TDMR's PAMT: the rest is initialised on demand by nothing here, since
    the emulated host's TDs do not depend on it (Linux loops until each TDMR is done).
    """
    t = tdx_of(k)
    ret, info = get_tdx_sys_info_tdmr(k)
    if ret:
        return ret
    ret, tdmrs = construct_tdmrs(k, info)
    if ret:
        return ret
    t.tdmrs = tdmrs
    ret = config_tdx_module(k, tdmrs, info, tdx_global_keyid(k))
    if ret:
        return ret
    m = k.machine
    firsts = sorted({m.package_of(c.id): c.id for c in reversed(m.online_cpus())}.values())
    for cpu in firsts:
        def key_config() -> int:
            return seamcall_prerr(k, PR_FMT, TdxLeaf.TDH_SYS_KEY_CONFIG, Regs())
        ret = run_on(cpu, key_config) if run_on is not None and len(firsts) > 1 else key_config()
        if ret:
            return ret
    for tdmr in tdmrs:
        ret = seamcall_prerr_ret(k, PR_FMT, TdxLeaf.TDH_SYS_TDMR_INIT, Regs(rcx=tdmr.base))
        if ret:
            return ret
    return 0


def tdx_init(k: Kernel) -> None:
    """Early boot (tdx_init): report the KeyID split the BIOS programmed.

    TDX's KeyIDs are the top `num_private_hkids` of the KeyID space (tdx_global_keyid).
    """
    start = tdx_global_keyid(k)
    k.pr_info(PR_FMT, f"BIOS enabled: private KeyID range [{start}, {start + k.machine.num_private_hkids})")


def tdx_enable(k: Kernel, run_on=None) -> int:
    """subsys_initcall tdx_enable(), after every CPU ran tdx_cpu_enable(): configure the module
    and read its metadata (init_tdx_module), then say how it went, as the kernel does.
    `run_on(cpu, fn)` runs KEY.CONFIG on a CPU of each package (tdx_module_config)."""
    ret = tdx_module_config(k, run_on) or tdx_read_sysinfo(k)
    if ret:
        k.pr_err(PR_FMT, f"TDX-Module initialization failed ({ret})")
        return ret
    k.pr_info(PR_FMT, "TDX-Module initialized")
    return 0


def tdx_global_keyid(k: Kernel) -> int:
    """The first TDX private KeyID (IA32_MKTME_KEYID_PARTITIONING): the global KeyID."""
    return tdx_keyid_start(k.machine.num_private_hkids)


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
        if k.profile.shutdown_needs_handoff:
            # merged: handoff information is required for a proper shutdown; refuse without it
            return ret
        k.warn("failed to read the TDX module's handoff version")
        module_hv = 0  # v10 went on with the lowest version
    # Only upgrades are designed for: ask for the running module's highest handoff version.
    if k.profile.td_build_guard == "module" and "update-during-td-build" not in k.mutations:
        # v10: ask the module to refuse while a TD build (or another compat-sensitive
        # operation) is in flight; a module without Update Compatibility rejects the flag
        rcx = module_hv | TDX_SYS_SHUTDOWN_AVOID_COMPAT_SENSITIVE
        sret = seamcall(k, TdxLeaf.TDH_SYS_SHUTDOWN, Regs(rcx=rcx))
        if (sret & TDX_SEAMCALL_STATUS_MASK) == TdxStatus.TDX_UPDATE_COMPAT_SENSITIVE:
            return -errno.EBUSY
        if sret:
            seamcall_err(k, PR_FMT, TdxLeaf.TDH_SYS_SHUTDOWN, sret)
            return -errno.EIO
    else:
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
