"""SEAMCALL wrappers: errno mapping, upstream log lines, the entropy retry, per-CPU bookkeeping."""

from __future__ import annotations

import errno
import logging

import pytest

from tdxseam.formats.leaves import SeamldrLeaf, TdxLeaf
from tdxseam.formats.status import SeamldrStatus, TdxStatus
from tdxseam.host import EmulatedHost
from tdxseam.kernel.seamcall import (
    RDRAND_RETRY_LOOPS,
    seamcall,
    seamcall_errno,
    seamcall_prerr,
    seamcall_prerr_ret,
    seamcall_ret,
)
from tdxseam.kernel.seamldr import PR_FMT as SEAMLDR_PR_FMT
from tdxseam.kernel.seamldr import seamldr_call, seamldr_install
from tdxseam.kernel.tdx import PR_FMT as TDX_PR_FMT
from tdxseam.platform.cpu import Regs, SeamcallEnd

LOGGER = "tdxseam.kernel"
MD_MAJOR = 0x0800000100000004
SYS_RD = int(TdxLeaf.TDH_SYS_RD)
INFO = int(SeamldrLeaf.P_SEAMLDR_INFO)
INSTALL = int(SeamldrLeaf.P_SEAMLDR_INSTALL)


@pytest.fixture
def host() -> EmulatedHost:
    h = EmulatedHost(4, seed=5)
    h.kernel.dmesg.clear()
    return h


def _messages(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER]


def _dmesg(host: EmulatedHost) -> list[str]:
    return [line.text for line in host.kernel.dmesg]


# ---- the mapping table (spec-linux §2) -------------------------------------------------------------


@pytest.mark.parametrize("status,expected", [
    (0, 0),
    (0x8000FF00FFFF0000, -errno.ENODEV),  # VMFAILINVALID
    (0x8000FF000000000D, -errno.EOPNOTSUPP),  # #GP
    (0x8000FF0000000006, -errno.EACCES),  # #UD
    (TdxStatus.TDX_OPERAND_INVALID | 1, -errno.EIO),
    (TdxStatus.TDX_RND_NO_ENTROPY, -errno.EIO),
    (TdxStatus.TDX_SYS_BUSY, -errno.EIO),
    (SeamldrStatus.EBADSIG, -errno.EIO),
    (SeamldrStatus.ENOENTROPY, -errno.EIO),
    (SeamldrStatus.EBADPARAM, -errno.EIO),
    (0x8000FF0000000000, -errno.EIO),  # bare TDX_SW_ERROR is not one of the three
    (0x8000FF00FFFF0001, -errno.EIO),  # full 64-bit compares, no masking
    (1, -errno.EIO),  # a non-zero warning status is still not success
])
def test_errno_table(status, expected):
    assert seamcall_errno(int(status)) == expected


def test_errno_values_are_linuxs():
    assert (errno.ENODEV, errno.EOPNOTSUPP, errno.EACCES, errno.EIO, errno.EINVAL) == (19, 95, 13, 5, 22)


@pytest.mark.parametrize("answer,expected,printed", [
    (0, 0, False),
    (SeamcallEnd.VMFAILINVALID, -errno.ENODEV, False),
    (SeamcallEnd.GP, -errno.EOPNOTSUPP, False),
    (SeamcallEnd.UD, -errno.EACCES, False),
    (int(TdxStatus.TDX_SYS_BUSY), -errno.EIO, True),
    (int(SeamldrStatus.EBADSIG), -errno.EIO, True),
])
def test_prerr_end_to_end(host, caplog, answer, expected, printed):
    """The door's answer (a status in RAX or a different end of SEAMCALL) through seamcall_prerr."""
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    host.fw.fault_hook = lambda cpu, regs: answer
    ret = host.run_on(1, seamcall_prerr, host.kernel, TDX_PR_FMT, SYS_RD, Regs(rdx=MD_MAJOR))
    assert ret == expected
    lines = _dmesg(host)
    assert bool(lines) is printed
    assert _messages(caplog) == lines
    if printed:
        assert lines == [f"virt/tdx: SEAMCALL (0x0000000000000022) failed: 0x{answer:016x}"]


@pytest.mark.parametrize("how,expected", [
    ("vmx_off", -errno.EACCES),
    ("non_root", -errno.EOPNOTSUPP),
    ("seam_not_ready", -errno.ENODEV),
])
def test_real_instruction_endings_map_to_errnos(host, how, expected):
    cpu = host.machine.cpus[2]
    if how == "vmx_off":
        cpu.vmx_on = False
    elif how == "non_root":
        cpu.vmx_non_root = True
    else:
        host.fw.seamextend.seam_ready = 0
    ret = host.run_on(2, seamcall_prerr, host.kernel, TDX_PR_FMT, SYS_RD, Regs(rdx=MD_MAJOR))
    assert ret == expected
    assert _dmesg(host) == []


# ---- log format ------------------------------------------------------------------------------------


def test_seamldr_log_line_exact(host, caplog):
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    host.fw.fault_hook = lambda cpu, regs: SeamldrStatus.EBADSIG if regs.rax == INSTALL else None
    ret = host.run_on(3, seamldr_install, host.kernel, host.machine.mem.alloc_page())
    assert ret == -errno.EIO
    expected = "seamldr: SEAMCALL (0x8000000000000001) failed: 0x8000000000020000"
    assert _dmesg(host) == [expected]
    assert _messages(caplog) == [expected]
    rec = [r for r in caplog.records if r.name == LOGGER][0]
    assert rec.levelno == logging.ERROR
    assert host.kernel.dmesg[0].cpu == 3


def test_virt_tdx_log_line_exact(host, caplog):
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    host.fw.fault_hook = lambda cpu, regs: 0xC000010000000001
    ret = host.run_on(0, seamcall_prerr, host.kernel, TDX_PR_FMT, TdxLeaf.TDH_SYS_SHUTDOWN, Regs(rcx=7))
    assert ret == -errno.EIO
    expected = "virt/tdx: SEAMCALL (0x0000000000000034) failed: 0xc000010000000001"
    assert _dmesg(host) == [expected]
    assert _messages(caplog) == [expected]


def test_prerr_ret_prints_two_register_lines(host, caplog):
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    host.fw.fault_hook = lambda cpu, regs: TdxStatus.TDX_OPERAND_INVALID | 2
    args = Regs(rcx=0x1111, rdx=0x2222, r8=0x3333, r9=0x4444, r10=0xDEAD_BEEF_0000_0001, r11=0xFFFF_FFFF_FFFF_FFFF)
    ret = host.run_on(0, seamcall_prerr_ret, host.kernel, TDX_PR_FMT, SYS_RD, args)
    assert ret == -errno.EIO
    expected = [
        "virt/tdx: SEAMCALL (0x0000000000000022) failed: 0xc000010000000002",
        "virt/tdx: RCX 0x0000000000001111 RDX 0x0000000000002222 R08 0x0000000000003333",
        "virt/tdx: R09 0x0000000000004444 R10 0xdeadbeef00000001 R11 0xffffffffffffffff",
    ]
    assert _dmesg(host) == expected
    assert _messages(caplog) == expected


def test_prerr_ret_success_prints_nothing_and_returns_outputs(host, caplog):
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    args = Regs(rdx=MD_MAJOR)
    assert host.run_on(0, seamcall_prerr_ret, host.kernel, TDX_PR_FMT, SYS_RD, args) == 0
    assert args.r8 == 1
    assert _dmesg(host) == [] and _messages(caplog) == []


def test_seamldr_call_uses_plain_prerr_one_line(host):
    """P-SEAMLDR failures print the one-line form (no register dump)."""
    host.fw.fault_hook = lambda cpu, regs: SeamldrStatus.EBADPARAM
    ret = host.run_on(0, seamldr_call, host.kernel, INFO, Regs(rcx=0x1000))
    assert ret == -errno.EIO
    assert _dmesg(host) == ["seamldr: SEAMCALL (0x8000000000000000) failed: 0x8000000000000000"]
    assert SEAMLDR_PR_FMT == "seamldr: " and TDX_PR_FMT == "virt/tdx: "


# ---- retry ----------------------------------------------------------------------------------------


def _flaky(host: EmulatedHost, leaf: int, failures: int, status: int = TdxStatus.TDX_RND_NO_ENTROPY):
    attempts = []

    def hook(cpu, regs):
        if regs.rax != leaf:
            return None
        attempts.append(cpu.id)
        return int(status) if len(attempts) <= failures else None

    host.fw.fault_hook = hook
    return attempts


@pytest.mark.parametrize("failures", [1, 5, RDRAND_RETRY_LOOPS - 1])
def test_no_entropy_is_retried_until_success(host, failures):
    attempts = _flaky(host, SYS_RD, failures)
    args = Regs(rdx=MD_MAJOR)
    ret = host.run_on(2, seamcall_prerr_ret, host.kernel, TDX_PR_FMT, SYS_RD, args)
    assert ret == 0
    assert args.r8 == 1
    assert attempts == [2] * (failures + 1)
    assert _dmesg(host) == []


def test_no_entropy_gives_up_after_exactly_ten_attempts(host):
    assert RDRAND_RETRY_LOOPS == 10
    attempts = _flaky(host, SYS_RD, 1000)
    ret = host.run_on(1, seamcall_prerr, host.kernel, TDX_PR_FMT, SYS_RD, Regs(rdx=MD_MAJOR))
    assert ret == -errno.EIO
    assert len(attempts) == 10
    assert _dmesg(host) == ["virt/tdx: SEAMCALL (0x0000000000000022) failed: 0x8000020300000000"]


def test_plain_seamcall_returns_the_raw_status_after_ten(host):
    attempts = _flaky(host, SYS_RD, 1000)
    assert host.run_on(0, seamcall, host.kernel, SYS_RD, Regs(rdx=MD_MAJOR)) == TdxStatus.TDX_RND_NO_ENTROPY
    assert len(attempts) == 10


def test_pseamldr_own_no_entropy_is_not_retried(host):
    status = SeamldrStatus.ENOENTROPY
    attempts = _flaky(host, INFO, 1000, status)
    ret = host.run_on(0, seamldr_call, host.kernel, INFO, Regs(rcx=host.kernel.percpu[0].stack_pa))
    assert ret == -errno.EIO
    assert attempts == [0]
    assert _dmesg(host) == [f"seamldr: SEAMCALL (0x8000000000000000) failed: 0x{int(status):016x}"]


@pytest.mark.parametrize("kernel", ["merged", "v10", "v4"])
def test_tdx_no_entropy_is_retried_on_pseamldr_leaves_too(kernel):
    """sc_retry has no special case for P-SEAMLDR leaves, in any posting (the seed kernel
    returned at once: attempts == [0])."""
    host = EmulatedHost(2, seed=0, kernel=kernel)
    attempts = _flaky(host, INFO, 3)  # the 4th try succeeds
    ret = host.run_on(0, seamldr_call, host.kernel, INFO, Regs(rcx=host.kernel.percpu[0].stack_pa))
    assert ret == 0
    assert len(attempts) == 4
    attempts = _flaky(host, INFO, 1000)
    ret = host.run_on(0, seamldr_call, host.kernel, INFO, Regs(rcx=host.kernel.percpu[0].stack_pa))
    assert ret == -errno.EIO
    assert len(attempts) == 10


@pytest.mark.parametrize("status", [TdxStatus.TDX_RND_NO_ENTROPY | 1, TdxStatus.TDX_SYS_BUSY,
                                    TdxStatus.TDX_OPERAND_BUSY])
def test_only_exact_no_entropy_is_retried(host, status):
    attempts = _flaky(host, SYS_RD, 1000, status)
    assert host.run_on(0, seamcall, host.kernel, SYS_RD, Regs(rdx=MD_MAJOR)) == status
    assert len(attempts) == 1


# ---- seamcall vs seamcall_ret, per-CPU state ---------------------------------------------------------


def test_seamcall_does_not_copy_outputs_back_seamcall_ret_does(host):
    a = Regs(rdx=MD_MAJOR)
    assert host.run_on(0, seamcall, host.kernel, SYS_RD, a) == 0
    assert (a.rdx, a.r8) == (MD_MAJOR, 0)
    b = Regs(rdx=MD_MAJOR)
    assert host.run_on(0, seamcall_ret, host.kernel, SYS_RD, b) == 0
    assert b.r8 == 1 and b.rdx != MD_MAJOR


@pytest.mark.parametrize("vmx_on", [True, False])
def test_cache_state_incoherent_set_on_the_calling_cpu(host, vmx_on):
    for pc in host.kernel.percpu:
        pc.cache_state_incoherent = False
    host.machine.cpus[2].vmx_on = vmx_on
    host.run_on(2, seamcall, host.kernel, SYS_RD, Regs(rdx=MD_MAJOR))
    assert [pc.cache_state_incoherent for pc in host.kernel.percpu] == [False, False, True, False]


def test_preemption_disabled_around_each_attempt(host):
    counts = []

    def hook(cpu, regs):
        counts.append(cpu.preempt_count)
        return TdxStatus.TDX_RND_NO_ENTROPY if len(counts) < 3 else None

    host.fw.fault_hook = hook
    assert host.run_on(1, seamcall, host.kernel, SYS_RD, Regs(rdx=MD_MAJOR)) == 0
    assert counts == [1, 1, 1]
    assert host.machine.cpus[1].preempt_count == 0
