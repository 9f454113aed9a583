"""The SEAM side of one machine: SEAMRR, SEAMEXTEND, SEAMDB, the P-SEAMLDR and the TDX module.

`SeamFirmware.seamcall` is what the CPU's SEAMCALL instruction enters. It applies the hardware
rules of the door itself (spec-firmware.md §4): RAX bit 63 routes to the P-SEAMLDR; a target that
is not ready fails with VMfailInvalid; and only one logical CPU may be inside the P-SEAMLDR, a
second one arriving fails with VMfailInvalid. The P-SEAMLDR has no lock of its own: it relies on
this rule, and the host relies on its own lock to never meet it.

Besides the door this file holds the CPU-owned objects both SEAM components use: the SEAMEXTEND
register, the SEAMDB (a bounded log of installed modules, reached through SEAMOPS), and the
P_SYS_INFO_TABLE facts (LP count, sockets, per-socket CPUID). `boot_load` plays the BIOS: it puts a
module in memory and runs SEAMLDR.INSTALL (scenario LOAD) on every LP before the OS starts.
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING

from tdxseam.formats.leaves import SEAMLDR_LEAF_BIT, SeamldrLeaf, TdxLeaf, leaf_name
from tdxseam.formats.seamextend import SeamExtend
from tdxseam.formats.seamldr_params import (
    SEAMLDR_MAX_NR_MODULE_PAGES,
    SEAMLDR_SCENARIO_LOAD,
    SeamldrParams,
)
from tdxseam.formats.sigstruct import SIGSTRUCT_SIZE
from tdxseam.formats.status import SeamldrStatus, status_text
from tdxseam.platform.cpu import SEAMRET, Cpu, Regs, SeamcallEnd
from tdxseam.platform.memory import PAGE_SHIFT, PAGE_SIZE
from tdxseam.seam.layout import (
    HANDOFF_HEADER_SIZE,
    SYSINFO_CMR_ARRAY,
    SYSINFO_MAX_CMRS,
    HandoffHeader,
    num_addressable_lps,
)

if TYPE_CHECKING:
    from tdxseam.formats.identity import ModuleIdentity
    from tdxseam.platform.machine import Machine
    from tdxseam.seam.module import TdxModule
    from tdxseam.seam.pseamldr import PSeamldr

# Where SEAM memory sits in the emulated physical address space (below the host's pages).
SEAMRR_BASE = 0x4000_0000
SEAMRR_SIZE = 0x1000_0000  # 256 MiB: module range, then the P-SEAMLDR range at the top
PSEAMLDR_RANGE_SIZE = 0x0200_0000

P_SYS_INFO_MCHECK_SIZE = 2048
MAX_PKGS = 8  # P-SEAMLDR 1.5: per-package and per-cache-domain arrays have 8 slots
# SEAMOPS capabilities: bit per leaf (CAPABILITIES 0 .. SEAMDB_REPORT 5; SEAMVERIFYREPORT 6 on
# newer parts). TDH.SYS.INIT needs bits 4 and 5 (SEAMDB_GETREF, SEAMDB_REPORT).
SEAMOPS_ALL_CAPABILITIES = 0b111_1111


class SeamopsResult(IntEnum):
    SUCCESS = 0
    INPUT_ERROR = 1
    ENTROPY_ERROR = 2
    DATABASE_ERROR = 3


@dataclass
class SeamDb:
    """The CPU's SEAMDB: one entry per module installed since the last SEAMDB_CLEAR.

    Entries are the first 128 bytes of SEAMEXTEND at insert time (inferred, spec-firmware §14),
    with a random nonce. `fail_next_inserts` is a fault knob: that many SEAMDB_INSERT attempts
    fail with ENTROPY_ERROR (the P-SEAMLDR tries 5 times, then reports ENOENTROPY).
    """

    capacity: int = 64
    entries: list[tuple[bytes, int]] = field(default_factory=list)
    fail_next_inserts: int = 0
    inserts: int = 0

    def clear(self) -> SeamopsResult:
        self.entries.clear()
        return SeamopsResult.SUCCESS

    def insert(self, seamextend: SeamExtend, nonce: int) -> SeamopsResult:
        self.inserts += 1
        if self.fail_next_inserts > 0:
            self.fail_next_inserts -= 1
            return SeamopsResult.ENTROPY_ERROR
        if len(self.entries) >= self.capacity:
            return SeamopsResult.DATABASE_ERROR
        self.entries.append((seamextend.to_bytes()[:128], nonce))
        return SeamopsResult.SUCCESS

    def getref(self) -> tuple[SeamopsResult, int, int]:
        """(result, index of the last entry, its nonce); DATABASE_ERROR when empty."""
        if not self.entries:
            return SeamopsResult.DATABASE_ERROR, 0, 0
        return SeamopsResult.SUCCESS, len(self.entries) - 1, self.entries[-1][1]

    def remaining(self) -> int:
        """The P-SEAMLDR's count: capacity - (last entry + 1), or capacity if GETREF fails."""
        res, last, _nonce = self.getref()
        return self.capacity if res != SeamopsResult.SUCCESS else self.capacity - (last + 1)


@dataclass
class DoorStats:
    """What the door saw: how crowded the P-SEAMLDR got and how often callers were turned away."""

    seamldr_calls: int = 0
    seamldr_refused: int = 0
    seamldr_in_flight: int = 0
    max_seamldr_in_flight: int = 0
    module_calls: int = 0
    module_refused: int = 0


@dataclass(frozen=True)
class InstallResult:
    """How the last SEAMLDR.INSTALL of a session ended (what `boot_load` reports)."""

    end: SeamcallEnd
    status: int
    rdx: int

    @property
    def ok(self) -> bool:
        return self.end is SeamcallEnd.SEAMRET and self.status == SeamldrStatus.PSEAMLDR_SUCCESS

    def __str__(self) -> str:
        if self.end is not SeamcallEnd.SEAMRET:
            return f"SEAMCALL ended with {self.end.value}"
        return f"{status_text(self.status)} (RDX={self.rdx})"


class SeamFirmware:
    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        self.seamrr_base = SEAMRR_BASE
        self.seamrr_size = SEAMRR_SIZE
        self.pseamldr_range_base = SEAMRR_BASE + SEAMRR_SIZE - PSEAMLDR_RANGE_SIZE
        self.seamextend = SeamExtend(p_seamldr_ready=1)
        self.seamdb = SeamDb()
        self.seamops_capabilities = SEAMOPS_ALL_CAPABILITIES
        self.pseamldr: PSeamldr | None = None
        self.module: TdxModule | None = None
        self.seamldr_inside: Cpu | None = None
        self.stats = DoorStats()
        # Fault injection: called with (cpu, regs) before a leaf runs; may return a status to
        # answer instead, or a SeamcallEnd to end the instruction differently. Set by fault plans.
        self.fault_hook = None
        # Mutation knob for tests: names of firmware checks switched off (see PSeamldr.CHECKS and
        # TdxModule.CHECKS), to prove that each check is what a test relies on.
        self.disabled_checks: set[str] = set()
        # What the binaries this platform may load are, by SEAMHASH: identities resolved from
        # their files (name, mapping row, --module-version) by whoever assembled the platform.
        # A real module knows its own update number; the model learns it here (seam/module.py).
        self.known_modules: dict[bytes, ModuleIdentity] = {}
        # What SEAMLDR.INSTALL turns loaded code into: None for the Python model (seam.module);
        # a callable (fw, sigstruct, image, layout) -> module object to run the binary itself
        # (seam.real). Either answers `dispatch(cpu, regs)`.
        self.module_factory = None
        # Fault switch: added to the handoff header's version as TDH.SYS.UPDATE is entered, after
        # the P-SEAMLDR checked it (a corrupted or mis-versioned handoff the new module must refuse).
        self.handoff_hv_raise = 0
        # When a list: every TDX-module SEAMCALL is appended as (cpu, regs in, end, regs out).
        self.call_log: list | None = None
        machine.seam = self

    # ---- platform facts (P_SYS_INFO_TABLE, MCHECK part) ----------------------------------------

    @property
    def module_physlimit(self) -> int:
        """The module range ends where the P-SEAMLDR range starts."""
        return self.pseamldr_range_base

    def in_seamrr(self, pa: int) -> bool:
        return self.seamrr_base <= pa < self.seamrr_base + self.seamrr_size

    def package_of(self, cpu: Cpu) -> int:
        m = self.machine
        return cpu.id * m.sockets // m.ncpus

    def lps_in_package(self, pkg: int) -> int:
        m = self.machine
        return sum(1 for c in m.cpus if c.id * m.sockets // m.ncpus == pkg)

    def socket_cpuids(self) -> list[int]:
        """CPUID.1.EAX of each socket (its first LP), as MCHECK records them."""
        m = self.machine
        out: dict[int, int] = {}
        for c in m.cpus:
            out.setdefault(self.package_of(c), c.cpuid_1_eax)
        return [out[s] for s in sorted(out)]

    def p_sys_info_mcheck(self) -> bytes:
        """Bytes 0..2047 of P_SYS_INFO_TABLE (spec-firmware §9.5)."""
        m = self.machine
        table = bytearray(P_SYS_INFO_MCHECK_SIZE)
        table[8:12] = m.ncpus.to_bytes(4, "little")
        table[12:16] = m.sockets.to_bytes(4, "little")
        for s, eax in enumerate(self.socket_cpuids()[:8]):
            table[16 + 4 * s:20 + 4 * s] = eax.to_bytes(4, "little")
        table[48:56] = self.pseamldr_range_base.to_bytes(8, "little")
        table[56:64] = (self.seamrr_base + self.seamrr_size - self.pseamldr_range_base).to_bytes(8, "little")
        for i, (base, size) in enumerate(m.mem.cmrs()[:SYSINFO_MAX_CMRS]):
            struct.pack_into("<QQ", table, SYSINFO_CMR_ARRAY + 16 * i, base, size)
        return bytes(table)

    def handoff_pa(self) -> int:
        """Start of the data region: after SYS_INFO_TABLE and one SEAM VMCS per addressable LP.

        It depends only on platform constants, so every module finds its predecessor's handoff
        header here (spec-firmware §7.7).
        """
        m = self.machine
        return self.seamrr_base + PAGE_SIZE + PAGE_SIZE * num_addressable_lps(m.ncpus, m.sockets)

    # ---- the SEAMEXTEND register (MSR IA32_SEAMEXTEND: whole-structure copy in and out) ----------

    def seamextend_read(self) -> SeamExtend:
        return self.seamextend.copy()

    def seamextend_write(self, value: SeamExtend) -> None:
        self.seamextend = value.copy()

    # ---- SEAM memory --------------------------------------------------------------------------

    def zero_module_range(self, keep: tuple[int, int] | None = None) -> None:
        """Zero [SEAMRR.base, module physlimit), except the byte range `keep` = (start, end)."""
        mem = self.machine.mem
        lo, hi = self.seamrr_base, self.module_physlimit
        first, last = lo >> PAGE_SHIFT, (hi - 1) >> PAGE_SHIFT
        for pfn in [p for p in mem.pages if first <= p <= last]:
            pa = pfn << PAGE_SHIFT
            if keep is None or pa + PAGE_SIZE <= keep[0] or pa >= keep[1]:
                mem.pages.pop(pfn, None)
                continue
            if pa < keep[0]:
                mem.zero(pa, keep[0] - pa)
            if pa + PAGE_SIZE > keep[1]:
                mem.zero(keep[1], pa + PAGE_SIZE - keep[1])

    def module_range_digest(self) -> str:
        """SHA-256 over the non-zero pages of the module range (tests: "was it wiped?")."""
        mem = self.machine.mem
        first, last = self.seamrr_base >> PAGE_SHIFT, (self.module_physlimit - 1) >> PAGE_SHIFT
        h = hashlib.sha256()
        for pfn in sorted(p for p in mem.pages if first <= p <= last):
            page = mem.pages[pfn]
            if any(page):
                h.update(pfn.to_bytes(8, "little"))
                h.update(page)
        return h.hexdigest()[:16]

    # ---- the door -----------------------------------------------------------------------------

    def seamcall(self, cpu: Cpu, regs: Regs) -> SeamcallEnd:
        if regs.rax & SEAMLDR_LEAF_BIT:
            return self._enter_seamldr(cpu, regs)
        return self._enter_module(cpu, regs)

    def _injected(self, cpu: Cpu, regs: Regs) -> SeamcallEnd | None:
        if self.fault_hook is None:
            return None
        out = self.fault_hook(cpu, regs)
        if out is None:
            return None
        if isinstance(out, SeamcallEnd):
            return out
        regs.rax = out
        return SeamcallEnd.SEAMRET

    def _enter_seamldr(self, cpu: Cpu, regs: Regs) -> SeamcallEnd:
        st = self.stats
        st.seamldr_calls += 1
        if not self.seamextend.p_seamldr_ready or self.pseamldr is None:
            st.seamldr_refused += 1
            return SeamcallEnd.VMFAILINVALID
        st.seamldr_in_flight += 1
        st.max_seamldr_in_flight = max(st.max_seamldr_in_flight, st.seamldr_in_flight)
        try:
            if self.seamldr_inside is not None:
                # Another LP is inside: this VM entry fails. The attempt still takes its step.
                st.seamldr_refused += 1
                self.machine.emit("seamldr-busy", f"{leaf_name(regs.rax)} refused: cpu{self.seamldr_inside.id} inside")
                self.machine.sched.preempt()
                return SeamcallEnd.VMFAILINVALID
            self.seamldr_inside = cpu
            try:
                injected = self._injected(cpu, regs)
                if injected is not None:
                    return injected
                self.pseamldr.dispatch(cpu, regs)
                return SEAMRET
            finally:
                self.seamldr_inside = None
        finally:
            st.seamldr_in_flight -= 1

    def _enter_module(self, cpu: Cpu, regs: Regs) -> SeamcallEnd:
        st = self.stats
        st.module_calls += 1
        if not self.seamextend.seam_ready or self.module is None:
            st.module_refused += 1
            return SeamcallEnd.VMFAILINVALID
        injected = self._injected(cpu, regs)
        if injected is not None:
            return injected
        if self.handoff_hv_raise and regs.rax == TdxLeaf.TDH_SYS_UPDATE:
            self._raise_handoff_hv()
        before = regs.copy() if self.call_log is not None else None
        self.module.dispatch(cpu, regs)
        if before is not None:
            self.call_log.append((cpu.id, before, SEAMRET, regs.copy()))
        return SEAMRET

    def _raise_handoff_hv(self) -> None:
        pa = self.handoff_pa()
        hdr = HandoffHeader.from_bytes(self.machine.mem.read(pa, HANDOFF_HEADER_SIZE))
        hv = min(hdr.hv + self.handoff_hv_raise, 0xFFFF)
        self.machine.mem.write(pa, HandoffHeader(hdr.valid, hv, hdr.size).to_bytes())
        self.machine.emit("fault", f"handoff header hv {hdr.hv} -> {hv}")

    # ---- what the BIOS does before the OS ------------------------------------------------------

    def boot_load(self, sigstruct: bytes, module: bytes, *,
                  scenario: int = SEAMLDR_SCENARIO_LOAD) -> InstallResult:
        """Place a module in host memory and run SEAMLDR.INSTALL on every LP, one after another.

        Runs outside the scheduler (preemption points are no-ops then), as platform firmware does
        before the OS. The staging pages are freed afterwards. Returns the last LP's result, which
        is the session's outcome; earlier LPs can only fail on per-LP checks, reported instead.
        """
        if len(sigstruct) != SIGSTRUCT_SIZE:
            raise ValueError(f"a sigstruct is {SIGSTRUCT_SIZE} bytes, not {len(sigstruct)}")
        npages = max(1, -(-len(module) // PAGE_SIZE))
        if npages > SEAMLDR_MAX_NR_MODULE_PAGES:
            raise ValueError(f"module has {npages} pages; SEAMLDR_PARAMS holds at most 496")
        mem = self.machine.mem
        staged: list[int] = []

        def stage(data: bytes) -> int:
            pa = mem.alloc_page()
            staged.append(pa)
            mem.write(pa, data)
            return pa

        try:
            sig_pa = stage(bytes(sigstruct))
            page_pas = [stage(bytes(module[i:i + PAGE_SIZE])) for i in range(0, npages * PAGE_SIZE, PAGE_SIZE)]
            params = SeamldrParams(version=0, scenario=scenario, sigstruct_pa=sig_pa,
                                   module_nr_pages=npages, module_pages_pa=page_pas)
            params_pa = stage(params.to_bytes())
            result = InstallResult(SeamcallEnd.SEAMRET, SeamldrStatus.PSEAMLDR_SUCCESS, 0)
            for cpu in self.machine.cpus:
                regs = Regs(rax=SeamldrLeaf.P_SEAMLDR_INSTALL, rcx=params_pa)
                end = cpu.seamcall(regs)
                result = InstallResult(end, regs.rax if end is SeamcallEnd.SEAMRET else 0, regs.rdx)
                if not result.ok:
                    break
            return result
        finally:
            for pa in staged:
                mem.free_page(pa)
