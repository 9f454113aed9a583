"""The TDX module, as far as boot, metadata reads and runtime update need it (spec-firmware.md §10-§12).

Leaves are single-step: the TDX module admits many LPs at once (it has its own locks), so the
door does not serialise it and the scheduler need not see inside it.
"""

from __future__ import annotations

from enum import IntEnum
from typing import TYPE_CHECKING, Any

from tdxseam.formats.leaves import TdxLeaf, leaf_name
from tdxseam.formats.status import OPERAND_RAX, OPERAND_RCX, TdxStatus
from tdxseam.platform.cpu import Cpu, Regs

if TYPE_CHECKING:
    from tdxseam.seam.firmware import SeamFirmware

TDX_FEATURES0_TD_PRESERVING = 1 << 1


class SysState(IntEnum):
    SYSINIT_PENDING = 0
    SYSINIT_DONE = 1
    SYSCONFIG_DONE = 2
    SYS_READY = 3
    SYS_SHUTDOWN = 4


class MdField(IntEnum):
    """TDH.SYS.RD field ids (spec-firmware.md §11)."""

    VENDOR_ID = 0x0800000200000000
    BUILD_DATE = 0x8800000200000001
    BUILD_NUM = 0x8800000100000002
    MINOR_VERSION = 0x0800000100000003
    MAJOR_VERSION = 0x0800000100000004
    UPDATE_VERSION = 0x0800000100000005
    INTERNAL_VERSION = 0x0800000100000006
    MODULE_HV = 0x8900000100000000
    MIN_UPDATE_HV = 0x8900000100000001
    NO_DOWNGRADE = 0x8900000000000002
    NUM_HANDOFF_PAGES = 0x8900000100000003
    HANDOFF_DATA_VALID = 0x8900000000000004
    HANDOFF_DATA_HV = 0x8900000100000005
    HANDOFF_DATA_SIZE = 0x8900000200000006
    SYS_ATTRIBUTES = 0x0A00000200000000
    NUM_TDX_FEATURES = 0x0A00000000000001
    TDX_FEATURES0 = 0x0A00000300000008


# Leaves that run before SYS_READY (§10.3); SYS.SHUTDOWN is not among them.
_ALLOWED_NOT_READY = {
    TdxLeaf.TDH_SYS_INFO, TdxLeaf.TDH_SYS_RD, TdxLeaf.TDH_SYS_RDALL, TdxLeaf.TDH_SYS_INIT,
    TdxLeaf.TDH_SYS_LP_INIT, TdxLeaf.TDH_SYS_CONFIG, TdxLeaf.TDH_SYS_KEY_CONFIG,
    TdxLeaf.TDH_SYS_LP_SHUTDOWN, TdxLeaf.TDH_SYS_UPDATE, TdxLeaf.TDH_SYS_TDMR_INIT,
}
_NEEDS_LP_INIT = {TdxLeaf.TDH_SYS_RD, TdxLeaf.TDH_SYS_RDALL, TdxLeaf.TDH_SYS_INFO}


class TdxModule:
    """One loaded TDX module. `identity` says what the binary is (version, build, features)."""

    def __init__(self, fw: SeamFirmware, identity: Any) -> None:
        self.fw = fw
        self.identity = identity
        self.sys_state = SysState.SYSINIT_PENDING
        self.num_of_lps = 0
        self.lp_init_done: set[int] = set()
        self.packages_configured: set[int] = set()
        self.lp_busy: set[int] = set()
        fw.module = self

    @property
    def machine(self):
        return self.fw.machine

    def metadata(self) -> dict[int, int]:
        ident = self.identity
        v = ident.version
        return {
            MdField.VENDOR_ID: 0x8086,
            MdField.BUILD_DATE: getattr(ident, "build_date", 0),
            MdField.BUILD_NUM: getattr(ident, "build_num", 0),
            MdField.MINOR_VERSION: v.minor,
            MdField.MAJOR_VERSION: v.major,
            MdField.UPDATE_VERSION: v.update,
            MdField.INTERNAL_VERSION: 0,
            MdField.MODULE_HV: getattr(ident, "module_hv", 0),
            MdField.MIN_UPDATE_HV: getattr(ident, "min_update_hv", 0),
            MdField.NO_DOWNGRADE: getattr(ident, "no_downgrade", 0),
            MdField.NUM_HANDOFF_PAGES: getattr(ident, "num_handoff_pages", 0),
            MdField.SYS_ATTRIBUTES: 0,
            MdField.NUM_TDX_FEATURES: 1,
            MdField.TDX_FEATURES0: ident.features0,
        }

    # ---- dispatch ------------------------------------------------------------------------------

    def dispatch(self, cpu: Cpu, regs: Regs) -> None:
        rax = regs.rax
        if rax >> 24:
            regs.rax = TdxStatus.TDX_OPERAND_INVALID | OPERAND_RAX
            return
        leaf = rax & 0xFFFF
        if (rax >> 16) & 0xFF:  # no SYS leaf takes a version
            regs.rax = TdxStatus.TDX_OPERAND_INVALID | OPERAND_RAX
            return
        handler = self._leaves.get(leaf)
        self.machine.emit("module-call", leaf_name(rax))
        if self.sys_state == SysState.SYS_SHUTDOWN and leaf != TdxLeaf.TDH_SYS_LP_SHUTDOWN:
            regs.rax = TdxStatus.TDX_SYS_SHUTDOWN
            return
        if self.sys_state != SysState.SYS_READY and leaf not in _ALLOWED_NOT_READY:
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
        if self.sys_state != SysState.SYSINIT_PENDING:
            regs.rax = TdxStatus.TDX_SYS_INIT_NOT_PENDING
            return
        self.num_of_lps = self.machine.ncpus
        self.lp_init_done.clear()
        self.sys_state = SysState.SYSINIT_DONE
        regs.rax = TdxStatus.TDX_SUCCESS

    def lp_init(self, cpu: Cpu, regs: Regs) -> None:
        if self.sys_state != SysState.SYSINIT_DONE:
            regs.rax = TdxStatus.TDX_SYS_LP_INIT_NOT_PENDING
            return
        if cpu.id in self.lp_init_done:
            regs.rax = TdxStatus.TDX_SYS_LP_INIT_DONE
            return
        self.lp_init_done.add(cpu.id)
        regs.rax = TdxStatus.TDX_SUCCESS

    def sys_config(self, cpu: Cpu, regs: Regs) -> None:
        if self.sys_state != SysState.SYSINIT_DONE or len(self.lp_init_done) != self.num_of_lps:
            regs.rax = TdxStatus.TDX_SYS_CONFIG_NOT_PENDING
            return
        self.sys_state = SysState.SYSCONFIG_DONE
        regs.rax = TdxStatus.TDX_SUCCESS

    def key_config(self, cpu: Cpu, regs: Regs) -> None:
        if self.sys_state != SysState.SYSCONFIG_DONE:
            regs.rax = TdxStatus.TDX_SYS_STATE_INCORRECT
            return
        self.packages_configured.add(cpu.id * self.machine.sockets // self.machine.ncpus)
        regs.rax = TdxStatus.TDX_SUCCESS

    def tdmr_init(self, cpu: Cpu, regs: Regs) -> None:
        if self.sys_state != SysState.SYSCONFIG_DONE or len(self.packages_configured) < self.machine.sockets:
            regs.rax = TdxStatus.TDX_SYS_STATE_INCORRECT
            return
        self.sys_state = SysState.SYS_READY
        regs.rax = TdxStatus.TDX_SUCCESS

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
        regs.rax = TdxStatus.TDX_SUCCESS

    _leaves = {
        TdxLeaf.TDH_SYS_INIT: sys_init,
        TdxLeaf.TDH_SYS_LP_INIT: lp_init,
        TdxLeaf.TDH_SYS_CONFIG: sys_config,
        TdxLeaf.TDH_SYS_KEY_CONFIG: key_config,
        TdxLeaf.TDH_SYS_TDMR_INIT: tdmr_init,
        TdxLeaf.TDH_SYS_RD: sys_rd,
    }
