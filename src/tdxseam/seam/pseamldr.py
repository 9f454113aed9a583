"""The persistent SEAM loader (P-SEAMLDR), leaf by leaf, after spec-firmware.md §1-§9.

Its state is one global block with no lock: the door (`SeamFirmware`) admits one LP at a time.

SEAMLDR.INSTALL (§7.3) is an N-LP rendezvous: every logical CPU of the platform calls it once per
session; all but the last only register, and the last performs the whole load with its own RCX.
The order of the last-LP steps, the statuses and the recoverability (RDX) follow the 1.5 source
(`seamldr_install.c`); where that source and the spec's summary differ, the source wins and the
difference is noted at the step.

SEAMLDR.CLEANUP (§7.6, interruptible key reprogramming) and SEAMLDR.SHUTDOWN (§7.5, platform
teardown) are modelled too: CLEANUP is what makes a LOAD possible again after an unrecoverable
failure (keys and caches stay dirty after any install, and a zeroed SEAMEXTEND SVN then means
ECLEANUPREQ). SEAMLDR.TDDEBUGCONFIG (debug builds only) is not.

Faults the real loader meets only by bad luck (no RDRAND entropy, an ELF relocation failure) are
reachable through `PSeamldr.faults`; SEAMDB_INSERT entropy failures through `fw.seamdb`.
`fw.disabled_checks` switches named checks off (see `CHECKS`), so tests can show each one bites.
"""

from __future__ import annotations

import hashlib
import random
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING

from tdxseam.formats.leaves import SeamldrLeaf, leaf_name
from tdxseam.formats.seamextend import SEAMEXTEND_VALID_ALL, SeamExtend
from tdxseam.formats.seamldr_info import SEAMLDR_INFO_ALIGN, SEAMLDR_INFO_SIZE, SeamldrInfo
from tdxseam.formats.seamldr_params import (
    SEAMLDR_MAX_NR_MODULE_PAGES,
    SEAMLDR_PARAMS_SIZE,
    SEAMLDR_SCENARIO_LOAD,
    SEAMLDR_SCENARIO_UPDATE,
    SeamldrParams,
)
from tdxseam.formats.sigstruct import (
    CHECK_CODES,
    INTEL_KEY_HASH,
    SIGSTRUCT_SIZE,
    Problem,
    Sigstruct,
    check_sigstruct,
    verify_signature_openssl,
)
from tdxseam.formats.status import (
    PSEAMLDR_RECOVERABLE_ERROR,
    PSEAMLDR_UNRECOVERABLE_ERROR,
    SeamldrStatus,
)
from tdxseam.platform.cpu import Cpu, Regs
from tdxseam.seam.firmware import MAX_PKGS, P_SYS_INFO_MCHECK_SIZE, SeamopsResult
from tdxseam.seam.module import TdxModule, module_build
from tdxseam.seam.layout import (
    HANDOFF_HEADER_SIZE,
    PAGE_SIZE,
    SYSINFO_MCHECK_SIZE,
    SYSINFO_REGIONS_OFFSET,
    SYSINFO_MODULE_HV,
    HandoffHeader,
    SeamLayout,
    SysInfoHandoff,
    compute_layout,
)

if TYPE_CHECKING:
    from tdxseam.seam.firmware import SeamFirmware

MAX_NUM_OF_LPS = 1024  # the 1.5 source sizes its LP bitmaps for this many
SEAMINFO_ALIGN = 2048
MAX_SEAMDB_INSERT_RETRIES = 5
NUM_TDX_HKIDS = 32  # private KeyIDs CLEANUP reprograms per package (platform-defined; a model value)

EBADPARAM = SeamldrStatus.EBADPARAM
EBADCALL = SeamldrStatus.EBADCALL
SUCCESS = SeamldrStatus.PSEAMLDR_SUCCESS
REC, UNREC = PSEAMLDR_RECOVERABLE_ERROR, PSEAMLDR_UNRECOVERABLE_ERROR


class Flow(IntEnum):
    """`current_flow` (spec-firmware §6)."""

    READY = 0
    INSTALL = 1
    SHUTDOWN = 2
    CLEANUP = 3


# the flows an INSTALL may come in, bound once: every LP's call checks it (a member looked up on its
# enum class costs a Python-level hook on Python 3.11, EnumType.__getattr__)
_INSTALL_FLOWS = (Flow.READY, Flow.INSTALL)

@dataclass(frozen=True)
class SeamldrBuild:
    """Build constants a P-SEAMLDR binary reports through SEAMLDR.INFO."""

    major: int = 1
    minor: int = 5
    update: int = 0  # reserved_0 in the 1.5 source; Linux prints it as the update number
    build_date: int = 0x20240812
    build_num: int = 218
    debug: bool = False
    seamdb_capacity: int = 64  # platform-defined; the real value is unknown (spec-firmware §8)
    max_lps: int = MAX_NUM_OF_LPS  # size of the LP bitmaps; an x2APIC id at or above -> EUNSPECERR

    @property
    def version_str(self) -> str:
        return f"{self.major}.{self.minor}.{self.update:02d}"

    @property
    def accepts_versioned_sigstructs(self) -> bool:
        """A 2.0 P-SEAMLDR reads reserved3 as version fields; a 1.5 one demands zeros there."""
        return self.major >= 2


@dataclass
class PSeamldrFaults:
    """Entropy and relocation failures the real loader meets only by bad luck."""

    canary_entropy: bool = False  # RDRAND fails on the first entry: every leaf then EUNSPECERR
    aslr_entropy: bool = False  # RDRAND for the ASLR value fails: ENOENTROPY, recoverable
    relocation: bool = False  # ELF relocation of the new image fails: EBADPARAM, unrecoverable


@dataclass
class InstallReport:
    """What the last INSTALL session's last LP did, for tests and diagnostics."""

    status: int = SUCCESS
    rdx: int = 0
    check: str | None = None  # the name of the check that failed (see PSeamldr.CHECKS)
    problems: list[Problem] = field(default_factory=list)
    scenario: int | None = None
    layout: SeamLayout | None = None


_SIG_STATUS = {
    "major_svn_zero": SeamldrStatus.EUNSUPPORTED, "major_svn_change": SeamldrStatus.EUNSUPPORTED,
    "cleanup_required": SeamldrStatus.ECLEANUPREQ, "cpuid": SeamldrStatus.EUNSUPCPU,
}

# Every named INSTALL check, in the order the loader meets them, with the status it returns.
# Sigstruct checks (§7.4) come from formats.sigstruct.CHECK_CODES under the prefix "sig.".
INSTALL_CHECKS: tuple[tuple[str, SeamldrStatus], ...] = (
    ("lpid", SeamldrStatus.EUNSPECERR),
    ("shutdown_session", EBADCALL),
    ("flow", EBADCALL),
    ("repeat_lp", EBADCALL),
    ("params_pa", EBADPARAM),
    ("params_version", EBADPARAM),
    ("params_reserved", EBADPARAM),
    ("params_scenario", EBADPARAM),
    ("params_num_pages", EBADPARAM),
    ("params_page_pa", EBADPARAM),
    ("params_sigstruct_pa", EBADPARAM),
    ("params_update_needs_module", EBADPARAM),
    *((f"sig.{code}", _SIG_STATUS.get(code, SeamldrStatus.EBADSIG)) for code, _step in CHECK_CODES),
    ("enomem", SeamldrStatus.ENOMEM),
    ("updates_left", EBADCALL),
    ("handoff", SeamldrStatus.EBADHANDOFF),
    ("seamhash", SeamldrStatus.EBADHASH),
)


class PSeamldr:
    # Scheduler steps a call spends inside, so that unserialized callers really overlap.
    steps_inside = 3
    # Extra steps the last INSTALL caller spends loading (range init, copying, hashing).
    steps_loading = 4
    CHECKS = tuple(name for name, _ in INSTALL_CHECKS)

    def __init__(self, fw: SeamFirmware, build: SeamldrBuild | None = None, *,
                 trusted_key_hashes: tuple[bytes, ...] = (INTEL_KEY_HASH,)) -> None:
        self.fw = fw
        self.machine = fw.machine
        self.build = build or SeamldrBuild()
        # Key pins: the built-in Intel hash; a test P-SEAMLDR may trust a test key as well.
        self.trusted_key_hashes = tuple(bytes(h) for h in trusted_key_hashes)
        self.faults = PSeamldrFaults()
        fw.seamdb.capacity = self.build.seamdb_capacity
        self.num_remaining_updates = self.build.seamdb_capacity
        self.calls = 0
        self.reseed()
        self._canary_done = False
        # the global data block (dt/pseamldr_data.h)
        self.current_flow = Flow.READY
        self.update_bitmap = 0
        self.lps_in_update = 0
        self.shutdown_bitmap = 0
        self.lps_in_shutdown = 0
        self.cleanup_bitmap = 0
        self.lps_in_cleanup = 0
        self.seamextend_snapshot = SeamExtend()
        self.sigstruct_snapshot: Sigstruct | None = None
        self.module_range_initialized = False
        self.init_done = False
        self.key_dirty = [False] * MAX_PKGS
        self.cache_dirty = [False] * MAX_PKGS
        self.next_kid_to_config = [0] * MAX_PKGS
        self.next_block_to_flush = [0] * MAX_PKGS
        self.max_pkg_lps = [0] * MAX_PKGS
        self.max_domain_lps = [0] * MAX_PKGS
        self.cleanup_lps_per_package = [0] * MAX_PKGS
        self.cleanup_lps_per_domain = [0] * MAX_PKGS
        self.sessions = 0  # INSTALL sessions completed (last LP reached)
        self.last_install: InstallReport | None = None
        self.last_reject: str | None = None  # the check that failed the latest INSTALL call
        fw.pseamldr = self

    def reseed(self) -> None:
        """RDRAND (ASLR, SEAMDB nonces) seeded from the machine's seed."""
        self._rng = random.Random(f"p-seamldr rdrand {self.fw.machine.seed}")

    # ---- common helpers ------------------------------------------------------------------------

    def enabled(self, check: str) -> bool:
        return check not in self.fw.disabled_checks

    def pa_ok(self, pa: int, align: int) -> bool:
        """spec-firmware.md §5: aligned, below MAX_PA, outside SEAMRR (KeyIDs are not modelled)."""
        mem = self.machine.mem
        return pa % align == 0 and 0 <= pa < mem.max_pa and not self.fw.in_seamrr(pa)

    def _spend(self, steps: int | None = None) -> None:
        self.machine.sched.preempt_points(self.steps_inside if steps is None else steps)

    def _rdrand(self) -> int:
        return self._rng.getrandbits(64)

    # ---- dispatch ------------------------------------------------------------------------------

    def dispatch(self, cpu: Cpu, regs: Regs) -> None:
        self.calls += 1
        traced = self.machine.tracing  # event texts are built only for a traced run
        if traced:
            self.machine.emit("seamldr-enter", leaf_name(regs.rax))
        handler = self._leaves.get(regs.rax)
        self._spend()
        if not self._canary_done:
            # the first entry makes the stack canary with RDRAND; without entropy, nothing works
            if self.faults.canary_entropy:
                regs.rax = SeamldrStatus.EUNSPECERR
                self.machine.emit("seamldr-exit", f"rax=0x{regs.rax:016x} (no canary entropy)")
                return
            self._canary_done = True
        if handler is None:
            regs.rax = SeamldrStatus.EBADPARAM  # unknown (or not modelled) leaf
        else:
            handler(self, cpu, regs)
        if traced:
            self.machine.emit("seamldr-exit", f"rax=0x{regs.rax:016x}")

    def info(self, cpu: Cpu, regs: Regs) -> None:
        """SEAMLDR.INFO: works at any time, whatever flow is in progress (§7.1)."""
        pa = regs.rcx
        if not self.pa_ok(pa, SEAMLDR_INFO_ALIGN):
            regs.rax = SeamldrStatus.EBADPARAM
            return
        if self.num_remaining_updates == 0:
            self.num_remaining_updates = self.fw.seamdb.remaining()  # filled lazily (§7.1 step 3)
        b = self.build
        ext = self.fw.seamextend
        raw = ext.to_bytes()
        info = SeamldrInfo(
            version=0, attributes=(1 << 31) if b.debug else 0, vendor_id=0x8086,
            build_date=b.build_date, build_num=b.build_num, minor_version=b.minor,
            major_version=b.major, update_version=b.update, acm_x2apicid=0,
            num_remaining_updates=self.num_remaining_updates,
            seam_info=raw[:128], seam_ready=ext.seam_ready, seam_debug=ext.system_under_debug,
            p_seam_ready=ext.p_seamldr_ready,
        )
        body = bytearray(info.to_bytes())
        body[168:176] = (1 << 1).to_bytes(8, "little")  # features0: cleanup_supported
        self.machine.mem.write(pa, bytes(body[:SEAMLDR_INFO_SIZE]))
        regs.rax = SeamldrStatus.PSEAMLDR_SUCCESS

    def seaminfo(self, cpu: Cpu, regs: Regs) -> None:
        """SEAMLDR.SEAMINFO: the MCHECK half of P_SYS_INFO_TABLE (§7.2)."""
        pa = regs.rcx
        if not self.pa_ok(pa, SEAMINFO_ALIGN):
            regs.rax = SeamldrStatus.EBADPARAM
            return
        table = self.fw.p_sys_info_mcheck()
        assert len(table) == P_SYS_INFO_MCHECK_SIZE
        self.machine.mem.write(pa, table)
        regs.rax = SeamldrStatus.PSEAMLDR_SUCCESS

    # ---- SEAMLDR.INSTALL (§7.3) ----------------------------------------------------------------

    def install(self, cpu: Cpu, regs: Regs) -> None:
        self.last_reject = None
        regs.rax, regs.rdx = self._install(cpu, regs.rcx)

    def _reject(self, check: str, status: int) -> tuple[int, int]:
        self.last_reject = check
        return status, REC

    def _install(self, cpu: Cpu, params_pa: int) -> tuple[int, int]:
        """The per-LP part; the last LP goes on to the load. Returns (RAX, RDX)."""
        lpid = cpu.x2apic_id
        if lpid >= self.build.max_lps and self.enabled("lpid"):
            return self._reject("lpid", SeamldrStatus.EUNSPECERR)
        if self.lps_in_shutdown != 0 and self.enabled("shutdown_session"):
            return self._reject("shutdown_session", EBADCALL)
        if self.current_flow not in _INSTALL_FLOWS and self.enabled("flow"):
            return self._reject("flow", EBADCALL)
        bit = 1 << lpid
        if self.update_bitmap & bit and self.enabled("repeat_lp"):
            return self._reject("repeat_lp", EBADCALL)  # the earlier call from this LP still counts
        self.update_bitmap |= bit
        if self.lps_in_update == 0:
            # first LP of the session: remember SEAMEXTEND, then block the old module's SEAMCALLs
            self.seamextend_snapshot = self.fw.seamextend_read()
            blocked = self.seamextend_snapshot.copy()
            blocked.seam_ready = 0
            self.fw.seamextend_write(blocked)
            self.current_flow = Flow.INSTALL
            self.machine.emit("seamldr-install", "session opened; SEAM_READY=0")
        self.lps_in_update += 1
        if not self.init_done:
            pkg = self.fw.package_of(cpu)
            if pkg < MAX_PKGS and self.max_pkg_lps[pkg] == 0:
                n = self.fw.lps_in_package(pkg)
                self.max_pkg_lps[pkg] = self.max_domain_lps[pkg] = n
        if self.module_range_initialized:
            pass  # VMCLEAR of this LP's old SEAM VMCS (SEAMRR.base + 4K + lpid x 4K): nothing to model
        if self.lps_in_update < self.machine.ncpus:
            return SUCCESS, 0

        # ---- the last LP ----
        report = InstallReport()
        self.last_install = report
        self.sessions += 1
        status, rec = self._install_last(cpu, params_pa, report)
        status = self._install_epilogue(status, rec, report)
        self.update_bitmap = 0
        self.lps_in_update = 0
        self.current_flow = Flow.READY
        rdx = 0 if status == SUCCESS else rec
        report.status, report.rdx = status, rdx
        self.last_reject = report.check
        self.machine.emit("seamldr-install", f"session closed: {SeamldrStatus(status).name} RDX={rdx}")
        return status, rdx

    def _fail(self, report: InstallReport, check: str, status: int, rec: int) -> tuple[int, int]:
        report.check = check
        return status, rec

    def check_params(self, p: SeamldrParams) -> str | None:
        """`check_seamldr_params`: the name of the first failed check, or None (all EBADPARAM)."""
        on = self.enabled
        if p.version != 0 and on("params_version"):
            return "params_version"
        if any(p.reserved) and on("params_reserved"):
            return "params_reserved"
        if p.scenario not in (SEAMLDR_SCENARIO_LOAD, SEAMLDR_SCENARIO_UPDATE) and on("params_scenario"):
            return "params_scenario"
        n = p.module_nr_pages
        if not 1 <= n <= SEAMLDR_MAX_NR_MODULE_PAGES and on("params_num_pages"):
            return "params_num_pages"
        # the source checks the page list before the sigstruct PA
        for pa in p.module_pages_pa[:min(n, SEAMLDR_MAX_NR_MODULE_PAGES)]:
            if not self.pa_ok(pa, PAGE_SIZE) and on("params_page_pa"):
                return "params_page_pa"
        if not self.pa_ok(p.sigstruct_pa, PAGE_SIZE) and on("params_sigstruct_pa"):
            return "params_sigstruct_pa"
        if (p.scenario == SEAMLDR_SCENARIO_UPDATE and not self.seamextend_snapshot.seam_ready
                and on("params_update_needs_module")):
            return "params_update_needs_module"
        return None

    def _dirty(self) -> bool:
        return any(self.key_dirty) or any(self.cache_dirty)

    def _install_last(self, cpu: Cpu, params_pa: int, report: InstallReport) -> tuple[int, int]:
        fw, mem = self.fw, self.machine.mem
        self.init_done = True
        # 2. the params page
        if not self.pa_ok(params_pa, SEAMLDR_PARAMS_SIZE) and self.enabled("params_pa"):
            return self._fail(report, "params_pa", EBADPARAM, REC)
        params = SeamldrParams.from_bytes(mem.read(params_pa, SEAMLDR_PARAMS_SIZE))
        report.scenario = params.scenario
        # 3. check_seamldr_params
        bad = self.check_params(params)
        if bad is not None:
            return self._fail(report, bad, EBADPARAM, REC)
        n = params.module_nr_pages
        update = params.scenario == SEAMLDR_SCENARIO_UPDATE
        # 4. copy the sigstruct into the snapshot and verify the manifest (§7.4)
        sig = Sigstruct.from_bytes(mem.read(params.sigstruct_pa, SIGSTRUCT_SIZE))
        self.sigstruct_snapshot = sig
        snap = self.seamextend_snapshot
        current_svn = snap.tee_tcb_svn[0] | snap.tee_tcb_svn[1] << 8
        problems = check_sigstruct(
            sig, module_size=n * PAGE_SIZE, trusted_key_hashes=self.trusted_key_hashes,
            platform_cpuids=fw.socket_cpuids(), debug_unlocked=self.machine.debug_unlocked,
            current_svn=current_svn if update else None,
            dirty_svn=current_svn if (not update and self._dirty()) else None,
            allow_reserved3=self.build.accepts_versioned_sigstructs,
            verifier=verify_signature_openssl,  # the same verdict as the tool's, quicker
        )
        problems = [p for p in problems if self.enabled(f"sig.{p.code}")]
        report.problems = problems
        if problems:
            return self._fail(report, f"sig.{problems[0].code}", problems[0].status, REC)
        # 5. memory constants: ASLR entropy, region sizes, ENOMEM
        if self.faults.aslr_entropy:
            return self._fail(report, "aslr_entropy", SeamldrStatus.ENOENTROPY, REC)
        layout = compute_layout(
            seamrr_base=fw.seamrr_base, module_physlimit=fw.module_physlimit,
            ncpus=self.machine.ncpus, sockets=self.machine.sockets, sig=sig,
            num_module_pages=n, aslr_rand=self._rdrand(),
        )
        report.layout = layout
        if not layout.fits and self.enabled("enomem"):
            return self._fail(report, "enomem", SeamldrStatus.ENOMEM, REC)
        self._spend(self.steps_loading // 2)
        # 6. range initialisation
        if not update or not layout.td_preserving:
            fw.seamdb.clear()
            self.num_remaining_updates = fw.seamdb.remaining()
            fw.zero_module_range()
        else:
            if self.num_remaining_updates == 0 and self.enabled("updates_left"):
                return self._fail(report, "updates_left", EBADCALL, REC)
            hdr = HandoffHeader.from_bytes(mem.read(layout.handoff_pa, HANDOFF_HEADER_SIZE))
            old = SysInfoHandoff.from_bytes(mem.read(fw.seamrr_base + SYSINFO_MODULE_HV, 8))
            handoff_size = HANDOFF_HEADER_SIZE + hdr.size
            if (not hdr.valid or handoff_size > (old.num_handoff_pages + 1) * PAGE_SIZE
                    or hdr.hv < sig.min_update_hv or hdr.hv > sig.module_hv) and self.enabled("handoff"):
                return self._fail(report, "handoff", SeamldrStatus.EBADHANDOFF, REC)
            fw.zero_module_range(keep=(layout.handoff_pa, layout.handoff_pa + handoff_size))
        # The old module's code and data are gone: whatever it held in memory is lost, except the
        # handoff data kept just above.
        fw.module = None
        # 7. from here on, failures are unrecoverable
        self.module_range_initialized = True
        rec = UNREC
        # 8. SEAM page tables: not modelled. 9. copy the module pages and measure them as copied.
        image = b"".join(mem.read(pa, PAGE_SIZE) for pa in params.module_pages_pa[:n])
        mem.write(layout.code_pa, image)
        self._spend(self.steps_loading - self.steps_loading // 2)
        if hashlib.sha384(image).digest() != sig.seamhash and self.enabled("seamhash"):
            return self._fail(report, "seamhash", SeamldrStatus.EBADHASH, rec)
        # 10. ELF relocation (and the IDT fix-up): only its failure is modelled
        if self.faults.relocation:
            return self._fail(report, "relocation", EBADPARAM, rec)
        relocatable = getattr(fw.module_factory, "relocatable", None)
        if relocatable is not None and not relocatable(image):  # the binary is run, so relocated
            return self._fail(report, "relocation", EBADPARAM, rec)
        # 11. SYS_INFO_TABLE and the SEAM VMCSs (entry RIP = code base + rip_offset)
        mem.write(fw.seamrr_base, fw.p_sys_info_mcheck()[:SYSINFO_MCHECK_SIZE])
        mem.write(fw.seamrr_base + SYSINFO_REGIONS_OFFSET,
                  layout.sysinfo_regions(layout.data_stack_size // PAGE_SIZE - 1, sig.num_tls_pages))
        # The loaded code becomes a TDX module, reachable once SEAM_READY is set.
        if fw.module_factory is not None:
            fw.module = fw.module_factory(fw, sig, image, layout)
        else:
            fw.module = TdxModule(fw, module_build(sig, image, fw.known_modules), layout)
        return SUCCESS, rec

    def _install_epilogue(self, status: int, rec: int, report: InstallReport) -> int:
        fw = self.fw
        snap = self.seamextend_snapshot
        if status != SUCCESS:
            if rec == UNREC:
                _zero_identity(snap)  # keeps system_under_debug and P_SEAMLDR_READY
            fw.seamextend_write(snap)
            return status
        sig = self.sigstruct_snapshot
        assert sig is not None
        ext = snap.copy()
        ext.tee_tcb_svn = sig.seamsvn.to_bytes(2, "little") + ext.tee_tcb_svn[2:]
        ext.mrseam = sig.seamhash
        ext.mrsigner = bytes(48)
        ext.attributes = 0
        ext.seam_ready = 0
        ext.valid = SEAMEXTEND_VALID_ALL
        fw.seamextend_write(ext)
        for _ in range(MAX_SEAMDB_INSERT_RETRIES):
            if fw.seamdb.insert(ext, self._rdrand()) == SeamopsResult.SUCCESS:
                break
        else:
            # The source leaves the new identity in SEAMEXTEND with SEAM_READY = 0 here (the
            # failure branch of the epilogue, which zeroes it, is not taken).
            report.check = "seamdb_insert"
            return SeamldrStatus.ENOENTROPY
        ext.seam_ready = 1
        fw.seamextend_write(ext)
        self.machine.mem.write(fw.seamrr_base + SYSINFO_MODULE_HV, SysInfoHandoff.from_sigstruct(sig).to_bytes())
        self.num_remaining_updates -= 1
        for p in range(MAX_PKGS):
            if self.max_pkg_lps[p]:
                self.key_dirty[p] = True
            if self.max_domain_lps[p]:
                self.cache_dirty[p] = True
        self.next_block_to_flush = [0] * MAX_PKGS
        self.next_kid_to_config = [0] * MAX_PKGS
        return SUCCESS

    # ---- SEAMLDR.SHUTDOWN (§7.5): platform teardown, not part of an update ----------------------

    def shutdown(self, cpu: Cpu, regs: Regs) -> None:
        lpid = cpu.x2apic_id
        if lpid >= self.build.max_lps:
            regs.rax = SeamldrStatus.EUNSPECERR
            return
        if self.current_flow not in (Flow.READY, Flow.SHUTDOWN):
            regs.rax = EBADCALL
            return
        if self._dirty():
            regs.rax = SeamldrStatus.ECLEANUPREQ
            return
        bit = 1 << lpid
        if not self.shutdown_bitmap & bit:
            self.shutdown_bitmap |= bit
            self.lps_in_shutdown += 1
        if self.current_flow == Flow.READY:
            ext = self.fw.seamextend_read()
            ext.seam_ready = 0
            self.fw.seamextend_write(ext)
            self.current_flow = Flow.SHUTDOWN
        if self.lps_in_shutdown < self.machine.ncpus:
            regs.rax = SUCCESS
            return
        if lpid != 0:  # the ACM LP (acm_x2apicid = 0 on the emulated platform) must come last
            regs.rax = EBADCALL
            return
        self.fw.seamextend_write(SeamExtend())  # P_SEAMLDR_READY = 0: no P-SEAMLDR until reboot
        regs.rax = SUCCESS

    # ---- SEAMLDR.CLEANUP (§7.6) ------------------------------------------------------------------

    def cleanup(self, cpu: Cpu, regs: Regs) -> None:
        lpid = cpu.x2apic_id
        fw = self.fw
        if lpid >= self.build.max_lps:
            regs.rax = SeamldrStatus.EUNSPECERR
            return
        if self.current_flow not in (Flow.READY, Flow.CLEANUP):
            regs.rax = EBADCALL
            return
        bit = 1 << lpid
        if self.cleanup_bitmap & bit or not self.init_done:
            regs.rax = EBADCALL
            return
        pkg = fw.package_of(cpu)
        if pkg >= MAX_PKGS:
            regs.rax = SeamldrStatus.EUNSPECERR
            return
        if self.current_flow == Flow.READY:
            self.current_flow = Flow.CLEANUP
            ext = fw.seamextend_read()
            ext.seam_ready = 0
            ext.tee_tcb_svn = bytes(2) + ext.tee_tcb_svn[2:]
            fw.seamextend_write(ext)
            if self.module_range_initialized:  # the handoff header at the start of the data region
                hpa = fw.handoff_pa()
                hdr = HandoffHeader.from_bytes(self.machine.mem.read(hpa, HANDOFF_HEADER_SIZE))
                self.machine.mem.write(hpa, HandoffHeader(0, hdr.hv, hdr.size).to_bytes())
        last_of_pkg = self.cleanup_lps_per_package[pkg] + 1 == self.max_pkg_lps[pkg]
        if last_of_pkg and self.key_dirty[pkg]:
            # PCONFIG a fresh random key into every private KeyID, interruptibly
            while self.next_kid_to_config[pkg] < NUM_TDX_HKIDS:
                self.next_kid_to_config[pkg] += 1
                if cpu.pending_irqs and self.next_kid_to_config[pkg] < NUM_TDX_HKIDS:
                    regs.rax = SeamldrStatus.EINTERRUPT
                    return
            self.key_dirty[pkg] = False
        if last_of_pkg and self.cache_dirty[pkg]:
            self.cache_dirty[pkg] = False  # WBINVDP of every sub-block
        self.cleanup_lps_per_package[pkg] += 1
        self.cleanup_lps_per_domain[pkg] += 1
        self.cleanup_bitmap |= bit
        self.lps_in_cleanup += 1
        if self.lps_in_cleanup == self.machine.ncpus:
            ext = fw.seamextend_read()
            fw.seamextend_write(SeamExtend.from_bytes(bytes(128) + ext.to_bytes()[128:]))
            fw.seamdb.clear()
            self.num_remaining_updates = fw.seamdb.remaining()
            self.cleanup_lps_per_package = [0] * MAX_PKGS
            self.cleanup_lps_per_domain = [0] * MAX_PKGS
            self.next_kid_to_config = [0] * MAX_PKGS
            self.cleanup_bitmap = 0
            self.lps_in_cleanup = 0
            self.current_flow = Flow.READY
        regs.rax = SUCCESS

    _leaves = {
        SeamldrLeaf.P_SEAMLDR_INFO: info,
        SeamldrLeaf.P_SEAMLDR_INSTALL: install,
        SeamldrLeaf.P_SEAMLDR_SHUTDOWN: shutdown,
        SeamldrLeaf.P_SEAMLDR_SEAMINFO: seaminfo,
        SeamldrLeaf.P_SEAMLDR_CLEANUP: cleanup,
    }


def _zero_identity(ext: SeamExtend) -> None:
    """`zero_seamextend_structure`: identity and readiness gone; debug and P-SEAMLDR flags kept."""
    ext.tee_tcb_svn = bytes(2) + ext.tee_tcb_svn[2:]
    ext.mrseam = bytes(48)
    ext.mrsigner = bytes(48)
    ext.attributes = 0
    ext.seam_ready = 0
    ext.valid = 0
