"""The SEAM side of one machine: SEAMRR, SEAMEXTEND, the P-SEAMLDR and the TDX module.

`SeamFirmware.seamcall` is what the CPU's SEAMCALL instruction enters. It applies the hardware
rules of the door itself (spec-firmware.md §4): RAX bit 63 routes to the P-SEAMLDR; a target that
is not ready fails with VMfailInvalid; and only one logical CPU may be inside the P-SEAMLDR, a
second one arriving fails with VMfailInvalid. The P-SEAMLDR has no lock of its own: it relies on
this rule, and the host relies on its own lock to never meet it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from tdxseam.formats.leaves import SEAMLDR_LEAF_BIT, leaf_name
from tdxseam.formats.seamextend import SeamExtend
from tdxseam.platform.cpu import Cpu, Regs, SeamcallEnd

if TYPE_CHECKING:
    from tdxseam.platform.machine import Machine
    from tdxseam.seam.module import TdxModule
    from tdxseam.seam.pseamldr import PSeamldr

# Where SEAM memory sits in the emulated physical address space (below the host's pages).
SEAMRR_BASE = 0x4000_0000
SEAMRR_SIZE = 0x1000_0000  # 256 MiB: module range, then the P-SEAMLDR range at the top
PSEAMLDR_RANGE_SIZE = 0x0200_0000


@dataclass
class DoorStats:
    """What the door saw: how crowded the P-SEAMLDR got and how often callers were turned away."""

    seamldr_calls: int = 0
    seamldr_refused: int = 0
    seamldr_in_flight: int = 0
    max_seamldr_in_flight: int = 0
    module_calls: int = 0
    module_refused: int = 0


class SeamFirmware:
    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        self.seamrr_base = SEAMRR_BASE
        self.seamrr_size = SEAMRR_SIZE
        self.pseamldr_range_base = SEAMRR_BASE + SEAMRR_SIZE - PSEAMLDR_RANGE_SIZE
        self.seamextend = SeamExtend(p_seamldr_ready=1)
        self.pseamldr: PSeamldr | None = None
        self.module: TdxModule | None = None
        self.seamldr_inside: Cpu | None = None
        self.stats = DoorStats()
        # Fault injection: called with (cpu, regs) before a leaf runs; may return a status to
        # answer instead, or a SeamcallEnd to end the instruction differently. Set by fault plans.
        self.fault_hook = None
        machine.seam = self

    def in_seamrr(self, pa: int) -> bool:
        return self.seamrr_base <= pa < self.seamrr_base + self.seamrr_size

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
                return SeamcallEnd.SEAMRET
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
        self.module.dispatch(cpu, regs)
        return SeamcallEnd.SEAMRET
