"""The TDX module: boot, metadata, runtime update and TDs (spec-firmware.md §10-§13).

A `TdxModule` is one module *instance*: created by SEAMLDR.INSTALL when a load succeeds, with its
global data zeroed (SYSINIT_PENDING), and discarded when the P-SEAMLDR wipes the module range.
What it knows about itself:
- `build` (`ModuleBuild`): what the binary is (version, build, TDX_FEATURES0) and its compile-time
  handoff constants (TDX_MODULE_HV, TDX_MIN_UPDATE_HV, TDX_NO_DOWNGRADE, TDX_MIN_HANDOFF_PAGES).
  It comes from `module_build`: a synthetic module's identity header (whose constants may
  disagree with its sigstruct: TDH.SYS.INIT then fails with TDX_SYS_INCOMPATIBLE_SIGSTRUCT, as
  the real check would), or, for a vendor's build, the sigstruct's constants and the identity
  resolved from the files (`fw.known_modules`, `formats.identity`).
- `layout` (`SeamLayout`): where INSTALL put its regions; SYS_INFO_TABLE is read from emulated
  memory at SEAMRR.base, the handoff header at the start of the data region.

The TDX module admits many LPs at once (it has its own locks), so the door does not serialise it.
Leaves run in one scheduler step, except TDH.VP.ENTER, which keeps the LP busy while the guest runs
(so TDH.SYS.SHUTDOWN on another LP can meet a busy LP, as on hardware). Because the leaves that
take the module's global lock (SYS.INIT, SYS.SHUTDOWN, SYS.UPDATE; LP.INIT shared) never yield
inside, that lock is never contended here and its TDX_SYS_BUSY paths are not modelled.
`fw.disabled_checks` switches named checks off (see `CHECKS`), to prove tests rely on each.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import IntEnum
from functools import lru_cache
from types import SimpleNamespace
from typing import TYPE_CHECKING

from tdxseam.formats.buildinfo import find_build_constants
from tdxseam.formats.errors import FormatError
from tdxseam.formats.identity import ModuleIdentity, Source, resolve_identity
from tdxseam.formats.metadata import (
    TDX_FEATURES0_TD_PRESERVING,
    TDX_FEATURES0_UPDATE_COMPAT,
    TDX_SYS_SHUTDOWN_AVOID_COMPAT_SENSITIVE,
    MdField,
)
from tdxseam.formats.leaves import TdxLeaf, leaf_name
from tdxseam.formats.sigstruct import Sigstruct
from tdxseam.formats.status import OPERAND_RAX, OPERAND_RCX, TdxStatus
from tdxseam.formats.synthetic import SyntheticHeader
from tdxseam.formats.version import ModuleVersion
from tdxseam.platform.cpu import Cpu, Regs
from tdxseam.seam.layout import (
    HANDOFF_HEADER_SIZE,
    SYSINFO_MODULE_HV,
    SYSINFO_TOT_NUM_LPS,
    HandoffHeader,
    SeamLayout,
    SysInfoHandoff,
    handoff_capacity,
)
from tdxseam.seam.stopped import ModuleStopped
from tdxseam.seam.td import (
    TD_LEAVES,
    HandoffDataError,
    TdRegistry,
    deserialize_handoff,
    scramble_mrtd,
    serialize_handoff,
)

if TYPE_CHECKING:
    from tdxseam.seam.firmware import SeamFirmware

SEAMOPS_NEEDED_BY_SYS_INIT = (1 << 4) | (1 << 5)  # SEAMDB_GETREF, SEAMDB_REPORT


class SysState(IntEnum):
    SYSINIT_PENDING = 0
    SYSINIT_DONE = 1
    SYSCONFIG_DONE = 2
    SYS_READY = 3
    SYS_SHUTDOWN = 4


# bound once: every leaf's dispatch and the leaves compare with them, and on Python 3.11 a member
# looked up on its enum class costs a Python-level hook (EnumType.__getattr__)
SYSINIT_PENDING, SYSINIT_DONE, SYSCONFIG_DONE, SYS_READY, SYS_SHUTDOWN = SysState
TDX_SUCCESS = TdxStatus.TDX_SUCCESS


# Leaves that run before SYS_READY (§10.3); SYS.SHUTDOWN is not among them.
_ALLOWED_NOT_READY = {
    TdxLeaf.TDH_SYS_INFO, TdxLeaf.TDH_SYS_RD, TdxLeaf.TDH_SYS_RDALL, TdxLeaf.TDH_SYS_INIT,
    TdxLeaf.TDH_SYS_LP_INIT, TdxLeaf.TDH_SYS_CONFIG, TdxLeaf.TDH_SYS_KEY_CONFIG,
    TdxLeaf.TDH_SYS_LP_SHUTDOWN, TdxLeaf.TDH_SYS_UPDATE, TdxLeaf.TDH_SYS_TDMR_INIT,
}
_NEEDS_LP_INIT = {TdxLeaf.TDH_SYS_RD, TdxLeaf.TDH_SYS_RDALL, TdxLeaf.TDH_SYS_INFO}
# MdField's ids as plain ints, for the table built at every TDH.SYS.RD (see SYS_READY)
_MD = SimpleNamespace(**{f.name: int(f) for f in MdField})


@dataclass(frozen=True)
class ModuleBuild:
    """What a module binary is, and the constants compiled into it."""

    version: ModuleVersion
    build_num: int
    build_date: int  # decimal yyyymmdd, as TDH.SYS.RD reports it
    features0: int
    module_hv: int  # TDX_MODULE_HV
    min_update_hv: int  # TDX_MIN_UPDATE_HV
    no_downgrade: int  # TDX_NO_DOWNGRADE
    min_handoff_pages: int  # TDX_MIN_HANDOFF_PAGES
    source: str  # formats.identity.Source value of the version ("synthetic", "sigstruct", ...)
    identity: str = ""  # where each fact came from, for people
    gaps: tuple[str, ...] = ()  # facts of the binary the model was not given (reported as 0)
    sources: tuple[tuple[str, str], ...] = ()  # (fact, formats.identity.Source value)
    # bytes of handoff data the binary's SHUTDOWN writes and the least its UPDATE reads, as the
    # real-firmware engine measured it (ModuleIdentity.handoff_size); None: the model's own layout
    handoff_size: int | None = None

    def to_json(self) -> dict:
        return {"version": str(self.version), "build_num": self.build_num, "build_date": self.build_date,
                "tdx_features0": f"0x{self.features0:X}", "sources": dict(self.sources),
                "summary": self.identity, "gaps": list(self.gaps)}


def _sources(ident: ModuleIdentity) -> tuple[tuple[str, str], ...]:
    return tuple((f, s.value) for f, s in ident.sources)


def _bcd_date(d: int) -> int:
    text = f"{d:08x}"
    return int(text) if text.isdigit() else d


@lru_cache(maxsize=32)
def _synthetic_build(sig: Sigstruct, module: bytes) -> ModuleBuild:
    """`module_build` of a synthetic test module: what its identity header declares. A function
    of the two byte strings alone, kept for the next install of the same module (a simulation
    campaign installs the same few thousands of times)."""
    synth = SyntheticHeader.find(module)
    try:
        said = resolve_identity(sig, module)
        source, text, sources = said.source.value, said.describe(), _sources(said)
    except FormatError as exc:  # e.g. a 2.0 sigstruct re-signed to declare another version
        source, text = Source.SYNTHETIC.value, f"identity from the synthetic module's header ({exc.detail})"
        sources = ()
    return ModuleBuild(synth.version, synth.build_num, synth.build_date, synth.tdx_features0,
                       synth.module_hv, synth.min_update_hv, synth.no_downgrade,
                       synth.num_handoff_pages + 1, source=source, identity=text, sources=sources)


def module_build(sig: Sigstruct, module: bytes,
                 known: Mapping[bytes, ModuleIdentity] | None = None) -> ModuleBuild:
    """What a loaded binary is, as the real module would know it about itself.

    Compile-time handoff constants: a synthetic test module declares its own in its identity
    header (so a test can make them disagree with the sigstruct, and TDH.SYS.INIT refuses it);
    any other module is a vendor's build, signed with the very constants it was compiled with,
    so they are the sigstruct's and the consistency check cannot fail on a genuine release.
    Version facts: what the platform was told about this SEAMHASH (`fw.known_modules`, resolved
    from the files), else what the sigstruct and the binary state (`formats.identity`). A fact
    nobody stated (the update number of a renamed 1.5 binary; TDX_FEATURES0, computed by the
    real module at run time) is a gap: reported as 0, except that TDX_FEATURES0 keeps
    TD_PRESERVING, which every module the P-SEAMLDR can take as an update sets.
    """
    if SyntheticHeader.find(module) is not None:
        return _synthetic_build(sig, bytes(module))
    consts = (sig.module_hv, sig.min_update_hv, sig.no_downgrade, sig.num_handoff_pages + 1)
    ident = (known or {}).get(bytes(sig.seamhash))
    if ident is None:
        try:
            ident = resolve_identity(sig, module)
        except FormatError:
            ident = None
    if ident is not None:
        gaps = () if ident.tdx_features0 is not None else ("TDX_FEATURES0",)
        features = ident.tdx_features0 if ident.tdx_features0 is not None else TDX_FEATURES0_TD_PRESERVING
        date = ident.build_date if ident.build_date is not None else _bcd_date(sig.date)
        # the handoff size is no file's fact: the engine measures it by running the binary's
        # SHUTDOWN (tdxseam.probe); unmeasured, the model's own layout stands
        return ModuleBuild(ident.version, ident.build_num or 0, date, features, *consts,
                           source=ident.source.value, identity=ident.describe(), gaps=gaps,
                           sources=_sources(ident), handoff_size=ident.handoff_size)
    # Nothing completes the version: keep what the binary states, report the rest as 0.
    try:
        bc = find_build_constants(module)
    except FormatError:
        bc = None
    declared = sig.declared_version
    if bc is not None:
        major, minor, build, date = bc.major, bc.minor, bc.build_num, bc.build_date
    elif declared is not None:
        major, minor, build, date = declared.version.major, declared.version.minor, declared.build, _bcd_date(sig.date)
    else:
        major, minor, build, date = 0, 0, 0, _bcd_date(sig.date)
    gaps = ("update number", "TDX_FEATURES0") if bc or declared else ("version", "build", "TDX_FEATURES0")
    return ModuleBuild(
        ModuleVersion(major, minor, 0), build, date, TDX_FEATURES0_TD_PRESERVING, *consts,
        source=Source.BINARY.value if bc else "none",
        identity="not identified: " + ", ".join(gaps) + " unknown to the model", gaps=gaps)


class TdxModule:
    """One loaded TDX module instance (see the module docstring)."""

    # Scheduler steps a vCPU spends in the guest inside TDH.VP.ENTER.
    vp_enter_steps = 3
    CHECKS = (
        "shutdown_hv", "shutdown_busy", "shutdown_compat", "update_state", "update_handoff",
        "update_handoff_size",
        "init_sigstruct", "td_op_state", "vcpu_state",
    )

    def __init__(self, fw: SeamFirmware, build: ModuleBuild | None, layout: SeamLayout) -> None:
        self.fw = fw
        self.machine = fw.machine
        self.build = build
        self.layout = layout
        self.sys_state = SYSINIT_PENDING
        self.num_of_lps = 0
        self.lp_init_done: set[int] = set()
        self.packages_configured: set[int] = set()
        self.lp_busy: set[int] = set()
        # global data copied from SYS_INFO_TABLE at TDH.SYS.INIT
        self.module_hv = 0
        self.min_update_hv = 0
        self.no_downgrade = 0
        self.num_handoff_pages = 0
        self.seamdb_index: int | None = None
        self.seamdb_nonce = 0
        self.tds = TdRegistry()
        self.rdrand_failures = 0  # fault knob: the next N RDRANDs fail (TDX_RND_NO_ENTROPY)
        self.updated_from_handoff = False
        self.corrupted_builds: list[int] = []  # TDR PAs of TDs restored mid-build (erratum)

    def __repr__(self) -> str:
        v = self.build.version if self.build else "unidentified"
        return f"<TdxModule {v} {self.sys_state.name}>"

    @property
    def identity(self) -> ModuleBuild | None:
        return self.build

    @property
    def ready(self) -> bool:
        return self.sys_state == SYS_READY

    def enabled(self, check: str) -> bool:
        return check not in self.fw.disabled_checks

    def _rdrand_ok(self) -> bool:
        if self.rdrand_failures > 0:
            self.rdrand_failures -= 1
            return False
        return True

    # ---- SEAM memory ------------------------------------------------------------------------------

    def sysinfo_handoff(self) -> SysInfoHandoff:
        """The sigstruct values the P-SEAMLDR put in SYS_INFO_TABLE."""
        return SysInfoHandoff.from_bytes(self.machine.mem.read(self.layout.sysinfo_pa + SYSINFO_MODULE_HV, 8))

    def handoff_header(self) -> HandoffHeader:
        return HandoffHeader.from_bytes(self.machine.mem.read(self.layout.handoff_pa, HANDOFF_HEADER_SIZE))

    def handoff_capacity(self) -> int:
        return handoff_capacity(self.num_handoff_pages)

    def metadata(self) -> dict[int, int]:
        b = self.build
        if b is None:  # unreachable in practice: SYS.RD needs LP.INIT, which needs SYS.INIT
            return {_MD.VENDOR_ID: 0x8086}
        hdr = self.handoff_header()
        return {
            _MD.VENDOR_ID: 0x8086,
            _MD.BUILD_DATE: b.build_date,
            _MD.BUILD_NUM: b.build_num,
            _MD.MINOR_VERSION: b.version.minor,
            _MD.MAJOR_VERSION: b.version.major,
            _MD.UPDATE_VERSION: b.version.update,
            _MD.INTERNAL_VERSION: 0,
            _MD.MODULE_HV: self.module_hv,
            _MD.MIN_UPDATE_HV: self.min_update_hv,
            _MD.NO_DOWNGRADE: self.no_downgrade,
            _MD.NUM_HANDOFF_PAGES: self.num_handoff_pages,
            _MD.HANDOFF_DATA_VALID: hdr.valid,
            _MD.HANDOFF_DATA_HV: hdr.hv,
            _MD.HANDOFF_DATA_SIZE: hdr.size,
            _MD.SYS_ATTRIBUTES: 0,
            _MD.NUM_TDX_FEATURES: 1,
            _MD.TDX_FEATURES0: b.features0,
            # TDMR limits: the values every release reports (not modelled further)
            _MD.MAX_TDMRS: 64,
            _MD.MAX_RESERVED_PER_TDMR: 16,
            _MD.PAMT_4K_ENTRY_SIZE: 16,
            _MD.PAMT_2M_ENTRY_SIZE: 16,
            _MD.PAMT_1G_ENTRY_SIZE: 16,
        }

    # ---- dispatch ------------------------------------------------------------------------------

    def dispatch(self, cpu: Cpu, regs: Regs) -> None:
        rax = regs.rax
        if rax >> 24:
            regs.rax = TdxStatus.TDX_OPERAND_INVALID | OPERAND_RAX
            return
        leaf = rax & 0xFFFF
        if (rax >> 16) & 0xFF:  # no modelled leaf takes a version
            regs.rax = TdxStatus.TDX_OPERAND_INVALID | OPERAND_RAX
            return
        handler = self._leaves.get(leaf)
        if self.machine.tracing:
            self.machine.emit("module-call", leaf_name(rax))
        if self.sys_state == SYS_SHUTDOWN and leaf != TdxLeaf.TDH_SYS_LP_SHUTDOWN:
            regs.rax = TdxStatus.TDX_SYS_SHUTDOWN
            return
        if self.sys_state != SYS_READY and leaf not in _ALLOWED_NOT_READY:
            regs.rax = TdxStatus.TDX_SYS_NOT_READY
            return
        if leaf in _NEEDS_LP_INIT and cpu.id not in self.lp_init_done:
            regs.rax = TdxStatus.TDX_SYS_LP_INIT_NOT_DONE
            return
        if handler is None:
            regs.rax = TdxStatus.TDX_OPERAND_INVALID | OPERAND_RAX  # leaf not modelled
            return
        self.lp_busy.add(cpu.id)
        try:
            handler(self, cpu, regs)
        finally:
            self.lp_busy.discard(cpu.id)

    # ---- boot-time initialisation (simplified: no TDMR/PAMT memory is modelled) ---------------

    def sys_init(self, cpu: Cpu, regs: Regs) -> None:
        if regs.rcx:
            regs.rax = TdxStatus.TDX_OPERAND_INVALID | OPERAND_RCX
            return
        if self.sys_state != SYSINIT_PENDING:
            regs.rax = TdxStatus.TDX_SYS_INIT_NOT_PENDING
            return
        if self.fw.seamops_capabilities & SEAMOPS_NEEDED_BY_SYS_INIT != SEAMOPS_NEEDED_BY_SYS_INIT:
            regs.rax = TdxStatus.TDX_INCOMPATIBLE_SEAM_CAPABILITIES
            return
        # check_module_build_time_defs: the sigstruct's values against the compiled-in ones
        si = self.sysinfo_handoff()
        self.module_hv, self.min_update_hv = si.module_hv, si.min_update_hv
        self.no_downgrade, self.num_handoff_pages = si.no_downgrade, si.num_handoff_pages
        b = self.build
        if (b is None or si.module_hv != b.module_hv or si.min_update_hv < b.min_update_hv
                or (b.no_downgrade and not si.no_downgrade)
                or si.num_handoff_pages + 1 < b.min_handoff_pages) and self.enabled("init_sigstruct"):
            regs.rax = TdxStatus.TDX_SYS_INCOMPATIBLE_SIGSTRUCT
            return
        _res, self.seamdb_index, self.seamdb_nonce = self.fw.seamdb.getref()
        if not self._rdrand_ok():  # the module's stack canary
            regs.rax = TdxStatus.TDX_RND_NO_ENTROPY
            return
        tot = self.machine.mem.read(self.layout.sysinfo_pa + SYSINFO_TOT_NUM_LPS, 4)
        self.num_of_lps = int.from_bytes(tot, "little")
        self.lp_init_done.clear()
        self.sys_state = SYSINIT_DONE
        regs.rax = TDX_SUCCESS

    def lp_init(self, cpu: Cpu, regs: Regs) -> None:
        if self.sys_state != SYSINIT_DONE:
            regs.rax = TdxStatus.TDX_SYS_LP_INIT_NOT_PENDING
            return
        if cpu.id in self.lp_init_done:
            regs.rax = TdxStatus.TDX_SYS_LP_INIT_DONE
            return
        if not self._rdrand_ok():  # seeding the LP's LFSR
            regs.rax = TdxStatus.TDX_RND_NO_ENTROPY
            return
        self.lp_init_done.add(cpu.id)
        regs.rax = TDX_SUCCESS

    @property
    def num_of_init_lps(self) -> int:
        return len(self.lp_init_done)

    def sys_config(self, cpu: Cpu, regs: Regs) -> None:
        if self.sys_state != SYSINIT_DONE or len(self.lp_init_done) != self.num_of_lps:
            regs.rax = TdxStatus.TDX_SYS_CONFIG_NOT_PENDING
            return
        self.sys_state = SYSCONFIG_DONE
        regs.rax = TDX_SUCCESS

    def key_config(self, cpu: Cpu, regs: Regs) -> None:
        if self.sys_state != SYSCONFIG_DONE:
            regs.rax = TdxStatus.TDX_SYS_STATE_INCORRECT
            return
        self.packages_configured.add(self.fw.package_of(cpu))
        regs.rax = TDX_SUCCESS

    def tdmr_init(self, cpu: Cpu, regs: Regs) -> None:
        if self.sys_state != SYSCONFIG_DONE or len(self.packages_configured) < self.machine.sockets:
            regs.rax = TdxStatus.TDX_SYS_STATE_INCORRECT
            return
        self.sys_state = SYS_READY
        regs.rax = TDX_SUCCESS

    def lp_shutdown(self, cpu: Cpu, regs: Regs) -> None:
        """Deprecated in the module source: a placeholder that succeeds."""
        regs.rax = TDX_SUCCESS

    # ---- metadata -----------------------------------------------------------------------------

    def sys_rd(self, cpu: Cpu, regs: Regs) -> None:
        md = self.metadata()
        value = md.get(regs.rdx)
        if value is None:
            regs.rax = TdxStatus.TDX_METADATA_FIELD_ID_INCORRECT
            return
        ids = sorted(md)
        i = ids.index(regs.rdx)
        regs.rdx = ids[i + 1] if i + 1 < len(ids) else (1 << 64) - 1
        regs.r8 = value
        regs.rax = TDX_SUCCESS

    # ---- runtime update (§10.4, §10.5) ---------------------------------------------------------

    def sys_shutdown(self, cpu: Cpu, regs: Regs) -> None:
        """RCX = requested handoff version. Serialise the handoff data and stop answering."""
        hv = regs.rcx
        features = self.build.features0 if self.build else 0
        avoid_compat = bool(features & TDX_FEATURES0_UPDATE_COMPAT and hv & TDX_SYS_SHUTDOWN_AVOID_COMPAT_SENSITIVE)
        if avoid_compat:
            hv &= ~TDX_SYS_SHUTDOWN_AVOID_COMPAT_SENSITIVE
        # the full 64-bit RCX is compared: any other high bit fails
        if (hv < self.min_update_hv or hv > self.module_hv
                or (self.no_downgrade and hv != self.module_hv)) and self.enabled("shutdown_hv"):
            regs.rax = TdxStatus.TDX_OPERAND_INVALID | OPERAND_RCX
            return
        self.sys_state = SYS_SHUTDOWN
        if len(self.lp_busy) > 1 and self.enabled("shutdown_busy"):
            self.sys_state = SYS_READY  # another LP is in SEAM mode
            regs.rax = TdxStatus.TDX_SYS_BUSY
            return
        if avoid_compat and self.tds.any_in_build() and self.enabled("shutdown_compat"):
            self.sys_state = SYS_READY
            regs.rax = TdxStatus.TDX_UPDATE_COMPAT_SENSITIVE
            return
        payload = serialize_handoff(hv, self.tds, self.packages_configured)
        if self.build is not None and self.build.handoff_size:
            # Intel's handoff data is fixed-size arrays: the model's record, zero-padded to them
            payload = payload.ljust(self.build.handoff_size, b"\0")
        if not 0 < len(payload) <= self.handoff_capacity():
            # the TD leaves keep the state within the handoff area; reaching this is a model bug
            raise AssertionError(f"handoff payload of {len(payload)} bytes does not fit")
        mem = self.machine.mem
        mem.write(self.layout.handoff_pa + HANDOFF_HEADER_SIZE, payload)
        mem.write(self.layout.handoff_pa, HandoffHeader(1, hv, len(payload)).to_bytes())
        self.machine.emit("module-shutdown", f"handoff hv={hv} size={len(payload)} tds={len(self.tds)}")
        regs.rax = TDX_SUCCESS

    def sys_update(self, cpu: Cpu, regs: Regs) -> None:
        """No inputs: rebuild the predecessor's state from the handoff data, then SYS_READY."""
        if (self.sys_state != SYSINIT_DONE or self.num_of_init_lps < self.num_of_lps) \
                and self.enabled("update_state"):
            regs.rax = TdxStatus.TDX_SYS_STATE_INCORRECT
            return
        hdr = self.handoff_header()
        if (not hdr.valid or hdr.hv < self.min_update_hv or hdr.hv > self.module_hv) \
                and self.enabled("update_handoff"):
            regs.rax = TdxStatus.TDX_SYS_INVALID_HANDOFF
            return
        # The real module treats a size beyond its own handoff area, or a payload it cannot read,
        # as a fatal error; the model answers TDX_SYS_INVALID_HANDOFF and stays in SYSINIT_DONE.
        if not 0 < hdr.size <= self.handoff_capacity():
            regs.rax = TdxStatus.TDX_SYS_INVALID_HANDOFF
            return
        need = self.build.handoff_size if self.build is not None else None
        if need and hdr.size < need and self.enabled("update_handoff_size"):
            # Intel's UPDATE checks the size against its own layout and executes ud2: no SEAMRET
            self.machine.emit("module-stopped", f"handoff {hdr.size} bytes < {need}")
            raise ModuleStopped(str(self.build.version), leaf_name(TdxLeaf.TDH_SYS_UPDATE), None,
                                f"its handoff data minimum is {need:,} bytes; the old module wrote "
                                f"{hdr.size:,}")
        data = self.machine.mem.read(self.layout.handoff_pa + HANDOFF_HEADER_SIZE, hdr.size)
        try:
            tds, packages = deserialize_handoff(hdr.hv, data)
        except HandoffDataError:
            regs.rax = TdxStatus.TDX_SYS_INVALID_HANDOFF
            return
        for td in tds.tds.values():
            if td.in_build:  # the TD-build erratum (spec-linux §9): its measurement is now wrong
                td.mrtd = scramble_mrtd(td.mrtd)
                self.corrupted_builds.append(td.tdr_pa)
        self.tds = tds
        self.packages_configured = packages
        self.machine.mem.write(self.layout.handoff_pa, HandoffHeader(0, hdr.hv, 0).to_bytes())
        self.sys_state = SYS_READY
        self.updated_from_handoff = True
        self.machine.emit("module-update", f"restored {len(tds)} TDs from handoff hv={hdr.hv}")
        regs.rax = TDX_SUCCESS

    _leaves = {
        TdxLeaf.TDH_SYS_INIT: sys_init,
        TdxLeaf.TDH_SYS_LP_INIT: lp_init,
        TdxLeaf.TDH_SYS_CONFIG: sys_config,
        TdxLeaf.TDH_SYS_KEY_CONFIG: key_config,
        TdxLeaf.TDH_SYS_TDMR_INIT: tdmr_init,
        TdxLeaf.TDH_SYS_RD: sys_rd,
        TdxLeaf.TDH_SYS_LP_SHUTDOWN: lp_shutdown,
        TdxLeaf.TDH_SYS_SHUTDOWN: sys_shutdown,
        TdxLeaf.TDH_SYS_UPDATE: sys_update,
        **TD_LEAVES,
    }
