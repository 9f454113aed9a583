"""The persistent SEAM loader (P-SEAMLDR), leaf by leaf, after spec-firmware.md §1-§9.

Its state is one global block with no lock: the door (`SeamFirmware`) admits one LP at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from tdxseam.formats.leaves import SeamldrLeaf, leaf_name
from tdxseam.formats.seamldr_info import SEAMLDR_INFO_ALIGN, SEAMLDR_INFO_SIZE, SeamldrInfo
from tdxseam.formats.status import SeamldrStatus
from tdxseam.platform.cpu import Cpu, Regs

if TYPE_CHECKING:
    from tdxseam.seam.firmware import SeamFirmware

MAX_NUM_OF_LPS = 1024  # the 1.5 source sizes its LP bitmaps for this many
P_SYS_INFO_MCHECK_SIZE = 2048
SEAMINFO_ALIGN = 2048


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

    @property
    def version_str(self) -> str:
        return f"{self.major}.{self.minor}.{self.update:02d}"

    @property
    def accepts_versioned_sigstructs(self) -> bool:
        """A 2.0 P-SEAMLDR reads reserved3 as version fields; a 1.5 one demands zeros there."""
        return self.major >= 2


class PSeamldr:
    # Scheduler steps a call spends inside, so that unserialized callers really overlap.
    steps_inside = 3

    def __init__(self, fw: SeamFirmware, build: SeamldrBuild | None = None) -> None:
        self.fw = fw
        self.build = build or SeamldrBuild()
        self.num_remaining_updates = self.build.seamdb_capacity
        self.calls = 0
        fw.pseamldr = self

    @property
    def machine(self):
        return self.fw.machine

    # ---- common helpers ------------------------------------------------------------------------

    def pa_ok(self, pa: int, align: int) -> bool:
        """spec-firmware.md §5: aligned, below MAX_PA, outside SEAMRR, a shared KeyID."""
        mem = self.machine.mem
        return pa % align == 0 and pa < mem.max_pa and not self.fw.in_seamrr(pa)

    def _spend(self) -> None:
        for _ in range(self.steps_inside):
            self.machine.sched.preempt()

    # ---- dispatch ------------------------------------------------------------------------------

    def dispatch(self, cpu: Cpu, regs: Regs) -> None:
        self.calls += 1
        self.machine.emit("seamldr-enter", leaf_name(regs.rax))
        handler = self._leaves.get(regs.rax)
        self._spend()
        if handler is None:
            regs.rax = SeamldrStatus.EBADPARAM  # unknown (or not modelled) leaf
        else:
            handler(self, cpu, regs)
        self.machine.emit("seamldr-exit", f"rax=0x{regs.rax:016x}")

    def info(self, cpu: Cpu, regs: Regs) -> None:
        """SEAMLDR.INFO: works at any time, whatever flow is in progress (§7.1)."""
        pa = regs.rcx
        if not self.pa_ok(pa, SEAMLDR_INFO_ALIGN):
            regs.rax = SeamldrStatus.EBADPARAM
            return
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
        m = self.machine
        table = bytearray(P_SYS_INFO_MCHECK_SIZE)
        table[8:12] = m.ncpus.to_bytes(4, "little")
        table[12:16] = m.sockets.to_bytes(4, "little")
        for s in range(min(m.sockets, 8)):
            table[16 + 4 * s:20 + 4 * s] = m.cpus[0].cpuid_1_eax.to_bytes(4, "little")
        table[48:56] = self.fw.pseamldr_range_base.to_bytes(8, "little")
        table[56:64] = (self.fw.seamrr_base + self.fw.seamrr_size - self.fw.pseamldr_range_base).to_bytes(8, "little")
        m.mem.write(pa, bytes(table))
        regs.rax = SeamldrStatus.PSEAMLDR_SUCCESS

    _leaves = {
        SeamldrLeaf.P_SEAMLDR_INFO: info,
        SeamldrLeaf.P_SEAMLDR_SEAMINFO: seaminfo,
    }
