"""The SEAMCALL door, register level: routing, VMfailInvalid, faults, SEAMLDR.INFO, TDH.SYS.RD."""

from __future__ import annotations

import pytest

from tdxseam.formats.leaves import SEAMLDR_LEAF_BIT, SeamldrLeaf, TdxLeaf
from tdxseam.formats.seamldr_info import SEAMLDR_INFO_SIZE, SeamldrInfo
from tdxseam.formats.status import TDX_SEAMCALL_STATUS_MASK, SeamldrStatus, TdxStatus
from tdxseam.formats.version import ModuleVersion
from tdxseam.host import DeclaredModule, EmulatedHost
from tdxseam.platform.cpu import Regs, SeamcallEnd
from tdxseam.seam.pseamldr import SeamldrBuild

INFO = int(SeamldrLeaf.P_SEAMLDR_INFO)
SYS_RD = int(TdxLeaf.TDH_SYS_RD)
MD_MINOR, MD_MAJOR, MD_UPDATE = 0x0800000100000003, 0x0800000100000004, 0x0800000100000005
MD_VENDOR_ID = 0x0800000200000000
MD_TDX_FEATURES0 = 0x0A00000300000008
DEFAULT_FEATURES0 = 0x2E1F0FBF


class UnbootedHost(EmulatedHost):
    """Firmware has loaded the module (SYSINIT_PENDING); the OS has not initialised it."""

    def _boot(self) -> None:
        pass


def raw(host: EmulatedHost, cpu: int, regs: Regs) -> SeamcallEnd:
    """Execute one SEAMCALL instruction on `cpu`, no kernel code around it."""
    return host.run_on(cpu, lambda: host.machine.cpus[cpu].seamcall(regs))


@pytest.fixture
def host() -> EmulatedHost:
    return EmulatedHost(4, seed=2)


def _buf(host: EmulatedHost) -> int:
    return host.machine.mem.alloc_page()


# ---- routing -------------------------------------------------------------------------------------


def test_bit63_routes_to_the_pseamldr(host):
    st = host.fw.stats
    calls0, pcalls0 = st.module_calls, host.pseamldr.calls
    regs = Regs(rax=INFO, rcx=_buf(host))
    assert raw(host, 1, regs) is SeamcallEnd.SEAMRET
    assert regs.rax == SeamldrStatus.PSEAMLDR_SUCCESS
    assert st.seamldr_calls == 1 and host.pseamldr.calls == pcalls0 + 1
    assert st.module_calls == calls0


def test_bit63_clear_routes_to_the_module(host):
    st = host.fw.stats
    pcalls0 = host.pseamldr.calls
    regs = Regs(rax=SYS_RD, rdx=MD_MAJOR)
    assert raw(host, 2, regs) is SeamcallEnd.SEAMRET
    assert regs.rax == 0 and regs.r8 == 1
    assert st.module_calls == 1 and st.seamldr_calls == 0 and host.pseamldr.calls == pcalls0


def test_module_leaf_number_with_bit63_is_a_pseamldr_leaf(host):
    """RAX = bit 63 | 34 is not TDH.SYS.RD: it is an unknown P-SEAMLDR leaf."""
    regs = Regs(rax=SEAMLDR_LEAF_BIT | SYS_RD, rdx=MD_MAJOR)
    assert raw(host, 0, regs) is SeamcallEnd.SEAMRET
    assert regs.rax == SeamldrStatus.EBADPARAM
    assert host.fw.stats.module_calls == 0 and host.fw.stats.seamldr_calls == 1


# ---- VMfailInvalid ------------------------------------------------------------------------------


def test_vmfailinvalid_when_pseamldr_not_ready(host):
    host.fw.seamextend.p_seamldr_ready = 0
    pa = _buf(host)
    host.machine.mem.write(pa, b"\xaa" * SEAMLDR_INFO_SIZE)
    regs = Regs(rax=INFO, rcx=pa)
    assert raw(host, 0, regs) is SeamcallEnd.VMFAILINVALID
    assert regs.rax == INFO  # nothing ran, RAX unchanged
    assert host.machine.mem.read(pa, SEAMLDR_INFO_SIZE) == b"\xaa" * SEAMLDR_INFO_SIZE
    assert host.fw.stats.seamldr_refused == 1
    # the TDX module is still reachable
    r2 = Regs(rax=SYS_RD, rdx=MD_MAJOR)
    assert raw(host, 0, r2) is SeamcallEnd.SEAMRET and r2.rax == 0


def test_vmfailinvalid_when_module_not_ready(host):
    host.fw.seamextend.seam_ready = 0
    regs = Regs(rax=SYS_RD, rdx=MD_MAJOR)
    assert raw(host, 0, regs) is SeamcallEnd.VMFAILINVALID
    assert regs.rax == SYS_RD and regs.r8 == 0
    assert host.fw.stats.module_refused == 1
    r2 = Regs(rax=INFO, rcx=_buf(host))
    assert raw(host, 0, r2) is SeamcallEnd.SEAMRET and r2.rax == 0


def test_vmfailinvalid_without_any_seam_software(host):
    host.machine.seam = None
    for rax in (INFO, SYS_RD):
        regs = Regs(rax=rax)
        assert raw(host, 0, regs) is SeamcallEnd.VMFAILINVALID
        assert regs.rax == rax


def _unlocked_info_storm(host: EmulatedHost, cpus: list[int], calls: int) -> list[tuple[int, SeamcallEnd, int]]:
    out: list[tuple[int, SeamcallEnd, int]] = []

    def body(cpu_id: int) -> None:
        cpu = host.machine.cpus[cpu_id]
        pa = host.kernel.percpu[cpu_id].stack_pa
        for _ in range(calls):
            regs = Regs(rax=INFO, rcx=pa)
            end = cpu.seamcall(regs)
            out.append((cpu_id, end, regs.rax))

    for c in cpus:
        host.sched.spawn(host.machine.cpus[c], body, c)
    assert host.run() is None
    return out


def test_second_cpu_inside_pseamldr_gets_vmfailinvalid(host):
    out = _unlocked_info_storm(host, [0, 1, 2, 3], 20)
    refused = [o for o in out if o[1] is SeamcallEnd.VMFAILINVALID]
    ok = [o for o in out if o[1] is SeamcallEnd.SEAMRET]
    assert len(out) == 80
    assert refused, "unserialized callers must meet inside the P-SEAMLDR"
    assert all(rax == INFO for _, _, rax in refused)  # VMfailInvalid leaves RAX unchanged
    assert all(rax == 0 for _, _, rax in ok)
    st = host.fw.stats
    assert st.seamldr_refused == len(refused)
    assert st.max_seamldr_in_flight >= 2
    busy = [e for e in host.sched.trace.events if e[2] == "seamldr-busy"]
    assert len(busy) == len(refused)
    assert all("inside" in e[3] and f"cpu{e[1]} " not in e[3] for e in busy)


def test_one_cpu_alone_is_never_refused(host):
    out = _unlocked_info_storm(host, [3], 30)
    assert [o[1] for o in out] == [SeamcallEnd.SEAMRET] * 30
    assert host.fw.stats.seamldr_refused == 0 and host.fw.stats.max_seamldr_in_flight == 1


def test_module_calls_are_not_single_occupancy(host):
    out: list[int] = []

    def body(cpu_id):
        for _ in range(10):
            regs = Regs(rax=SYS_RD, rdx=MD_MINOR)
            assert host.machine.cpus[cpu_id].seamcall(regs) is SeamcallEnd.SEAMRET
            out.append(regs.rax)

    for c in range(4):
        host.sched.spawn(host.machine.cpus[c], body, c)
    host.run()
    assert out == [0] * 40
    assert host.fw.stats.module_refused == 0


def test_pseamldr_call_stays_inside_for_several_steps(host):
    seen = []

    def hook(cpu, regs):
        seen.append(host.fw.seamldr_inside is cpu)
        return None

    host.fw.fault_hook = hook
    regs = Regs(rax=INFO, rcx=_buf(host))
    first = len(host.sched.trace.events)  # boot's own P-SEAMLDR traffic comes before
    raw(host, 2, regs)
    assert seen == [True]
    assert host.fw.seamldr_inside is None  # left on exit
    ev = [(e[0], e[1], e[2]) for e in host.sched.trace.events[first:]
          if e[2] in ("seamldr-enter", "seamldr-exit")]
    assert [(c, k) for _, c, k in ev] == [(2, "seamldr-enter"), (2, "seamldr-exit")]
    assert ev[1][0] - ev[0][0] >= 2  # several scheduler steps between entry and exit


# ---- faults --------------------------------------------------------------------------------------


@pytest.mark.parametrize("rax", [INFO, SYS_RD])
def test_ud_outside_vmx_operation(host, rax):
    host.machine.cpus[1].vmx_on = False
    regs = Regs(rax=rax, rcx=_buf(host), rdx=MD_MAJOR)
    assert raw(host, 1, regs) is SeamcallEnd.UD
    assert regs.rax == rax
    st = host.fw.stats
    assert st.seamldr_calls == 0 and st.module_calls == 0  # nothing reached the SEAM side
    # other CPUs are still in VMX operation
    r2 = Regs(rax=SYS_RD, rdx=MD_MAJOR)
    assert raw(host, 0, r2) is SeamcallEnd.SEAMRET


@pytest.mark.parametrize("rax", [INFO, SYS_RD])
def test_gp_in_vmx_non_root(host, rax):
    host.machine.cpus[3].vmx_non_root = True
    regs = Regs(rax=rax, rcx=_buf(host), rdx=MD_MAJOR)
    assert raw(host, 3, regs) is SeamcallEnd.GP
    assert host.fw.stats.seamldr_calls == 0 and host.fw.stats.module_calls == 0


def test_ud_takes_precedence_over_gp(host):
    cpu = host.machine.cpus[0]
    cpu.vmx_on, cpu.vmx_non_root = False, True
    assert raw(host, 0, Regs(rax=SYS_RD)) is SeamcallEnd.UD


# ---- SEAMLDR.INFO --------------------------------------------------------------------------------


def _info(host: EmulatedHost, cpu: int = 0) -> tuple[Regs, bytes, int]:
    pa = _buf(host)
    host.machine.mem.write(pa + SEAMLDR_INFO_SIZE, b"\x5a" * 16)  # just past the buffer
    regs = Regs(rax=INFO, rcx=pa)
    assert raw(host, cpu, regs) is SeamcallEnd.SEAMRET
    return regs, host.machine.mem.read(pa, SEAMLDR_INFO_SIZE), pa


def test_info_output_matches_seamldr_info(host):
    regs, raw_bytes, pa = _info(host)
    assert regs.rax == 0
    assert host.machine.mem.read(pa + SEAMLDR_INFO_SIZE, 16) == b"\x5a" * 16  # exactly 256 written
    info = SeamldrInfo.from_bytes(raw_bytes)
    b = host.pseamldr.build
    assert (info.major_version, info.minor_version, info.update_version) == (b.major, b.minor, b.update) == (1, 5, 0)
    assert info.version_str == "1.5.00"
    assert info.vendor_id == 0x8086 and info.version == 0
    assert info.build_date == b.build_date and info.build_num == b.build_num
    assert info.attributes == 0  # not a debug build
    assert info.seam_ready == 1 and info.p_seam_ready == 1
    assert info.num_remaining_updates == host.pseamldr.num_remaining_updates
    assert 0 < info.num_remaining_updates <= b.seamdb_capacity
    # raw layout: minor before major
    assert int.from_bytes(raw_bytes[18:20], "little") == 5
    assert int.from_bytes(raw_bytes[20:22], "little") == 1
    # features0 at 168: cleanup_supported (bit 1)
    assert int.from_bytes(raw_bytes[168:176], "little") & 0x2
    assert info.to_bytes() == raw_bytes


def test_info_reports_the_build_it_runs():
    build = SeamldrBuild(major=2, minor=0, update=7, debug=True, build_num=300, build_date=0x20250102)
    h = EmulatedHost(2, seed=1, seamldr=build)
    _regs, raw_bytes, _pa = _info(h, 1)
    info = SeamldrInfo.from_bytes(raw_bytes)
    assert (info.major_version, info.minor_version, info.update_version) == (2, 0, 7)
    assert info.version_str == "2.0.07"
    assert info.attributes & (1 << 31)
    assert (info.build_num, info.build_date) == (300, 0x20250102)
    assert raw_bytes[18:24] == bytes([0, 0, 2, 0, 7, 0])


@pytest.mark.parametrize("where", ["misaligned", "in-seamrr", "beyond-max-pa", "max-pa-exactly"])
def test_info_bad_rcx_is_ebadparam(host, where):
    mem = host.machine.mem
    pa = {
        "misaligned": _buf(host) + 0x80,
        "in-seamrr": host.fw.seamrr_base + 0x1000,
        "beyond-max-pa": mem.max_pa + 0x1000,
        "max-pa-exactly": mem.max_pa,
    }[where]
    before = dict(mem.pages)
    regs = Regs(rax=INFO, rcx=pa)
    assert raw(host, 0, regs) is SeamcallEnd.SEAMRET
    assert regs.rax == SeamldrStatus.EBADPARAM
    assert set(mem.pages) == set(before)  # nothing written anywhere


def test_info_at_highest_aligned_pa_below_max_pa_works(host):
    pa = host.machine.mem.max_pa - 256
    regs = Regs(rax=INFO, rcx=pa)
    raw(host, 0, regs)
    assert regs.rax == 0
    assert SeamldrInfo.from_bytes(host.machine.mem.read(pa, 256)).vendor_id == 0x8086


@pytest.mark.parametrize("leaf", [0x8000000000000042, 0x80000000000000FF, 0xFFFFFFFFFFFFFFFF])
def test_unknown_pseamldr_leaf_is_ebadparam(host, leaf):
    regs = Regs(rax=leaf, rcx=_buf(host))
    assert raw(host, 0, regs) is SeamcallEnd.SEAMRET
    assert regs.rax == SeamldrStatus.EBADPARAM


# ---- TDH.SYS.RD ----------------------------------------------------------------------------------


def _rd(host: EmulatedHost, field: int, cpu: int = 0) -> Regs:
    regs = Regs(rax=SYS_RD, rdx=field)
    assert raw(host, cpu, regs) is SeamcallEnd.SEAMRET
    return regs


def test_sys_rd_version_fields_and_features(host):
    got = {}
    for name, fid in [("major", MD_MAJOR), ("minor", MD_MINOR), ("update", MD_UPDATE),
                      ("vendor", MD_VENDOR_ID), ("features0", MD_TDX_FEATURES0)]:
        r = _rd(host, fid, cpu=3)
        assert r.rax == TdxStatus.TDX_SUCCESS, name
        assert r.rdx != fid  # RDX out: the next field id
        got[name] = r.r8
    assert got == {"major": 1, "minor": 5, "update": 6, "vendor": 0x8086, "features0": DEFAULT_FEATURES0}
    assert got["features0"] & 0x2  # TD-preserving


def test_sys_rd_reports_the_loaded_module():
    h = EmulatedHost(2, seed=4, module=DeclaredModule(ModuleVersion(1, 5, 8), features0=0x1234_0002))
    assert [_rd(h, f).r8 for f in (MD_MAJOR, MD_MINOR, MD_UPDATE, MD_TDX_FEATURES0)] == [1, 5, 8, 0x1234_0002]


def test_sys_rd_unknown_field(host):
    r = _rd(host, 0x0800000100000777)
    assert r.rax & TDX_SEAMCALL_STATUS_MASK == TdxStatus.TDX_METADATA_FIELD_ID_INCORRECT


def test_sys_rd_before_lp_init_is_lp_init_not_done():
    h = UnbootedHost(3, seed=1)
    for cpu in range(3):
        assert _rd(h, MD_MAJOR, cpu).rax == TdxStatus.TDX_SYS_LP_INIT_NOT_DONE
    # SYS.INIT (any CPU) then LP.INIT on cpu1 only
    r = Regs(rax=TdxLeaf.TDH_SYS_INIT)
    raw(h, 0, r)
    assert r.rax == 0
    r = Regs(rax=TdxLeaf.TDH_SYS_LP_INIT)
    raw(h, 1, r)
    assert r.rax == 0
    ok = _rd(h, MD_MAJOR, 1)
    assert ok.rax == 0 and ok.r8 == 1
    assert _rd(h, MD_MAJOR, 2).rax == TdxStatus.TDX_SYS_LP_INIT_NOT_DONE
    assert _rd(h, MD_MAJOR, 0).rax == TdxStatus.TDX_SYS_LP_INIT_NOT_DONE


@pytest.mark.parametrize("extra", [1 << 24, 1 << 40, 1 << 62, 1 << 16, 0xFF << 16])
def test_module_rax_reserved_or_version_bits_are_operand_invalid(host, extra):
    regs = Regs(rax=SYS_RD | extra, rdx=MD_MAJOR)
    assert raw(host, 0, regs) is SeamcallEnd.SEAMRET
    assert regs.rax == TdxStatus.TDX_OPERAND_INVALID  # operand id 0 = RAX
    assert regs.rax == 0xC000010000000000
    assert regs.r8 == 0


def test_fault_hook_answers_instead_of_the_leaf(host):
    calls = []

    def hook(cpu, regs):
        calls.append((cpu.id, regs.rax))
        return SeamldrStatus.EBADSIG if regs.rax & SEAMLDR_LEAF_BIT else SeamcallEnd.GP

    host.fw.fault_hook = hook
    r1 = Regs(rax=INFO, rcx=_buf(host))
    assert raw(host, 1, r1) is SeamcallEnd.SEAMRET and r1.rax == SeamldrStatus.EBADSIG
    assert raw(host, 2, Regs(rax=SYS_RD, rdx=MD_MAJOR)) is SeamcallEnd.GP
    assert calls == [(1, INFO), (2, SYS_RD)]
