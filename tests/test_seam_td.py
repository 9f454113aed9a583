"""TDs across a TD-preserving update: checked, not assumed.

The TD registry lives only in the running module and in the handoff data it writes at
TDH.SYS.SHUTDOWN; these tests show TDs surviving a good update, being lost by a failed one, and
that what survives really travelled through emulated memory.
"""

from __future__ import annotations

import pytest
from _seam_support import (
    PAGE,
    SEAMLDR_SCENARIO_LOAD,
    SeamldrStatus,
    TdxStatus,
    boot_config,
    build_td,
    host,
    init_lps,
    install,
    page_with,
    rax,
    shutdown,
    synth,
    td_params,
    update,
    version,
    vp_enter,
)

from tdxseam.formats.leaves import SeamldrLeaf, TdxLeaf
from tdxseam.formats.status import OPERAND_R8, OPERAND_RCX, OPERAND_RDX, TdxStatus
from tdxseam.formats.version import ModuleVersion
from tdxseam.host import DeclaredModule
from tdxseam.seam.firmware import SEAMRR_BASE
from tdxseam.seam.layout import HANDOFF_HEADER_SIZE
from tdxseam.seam.td import (
    EXIT_REASON_TDCALL,
    OpState,
    compare_tds,
    td_snapshot,
)

T = TdxStatus


def counter(h, td) -> int:
    return int.from_bytes(h.machine.mem.read(td.pages[min(td.pages)], 8), "little")


# ---- building and running a TD --------------------------------------------------------------------


def test_build_and_run_a_td():
    h = host(2)
    td = build_td(h, hkid=7, npages=3, nvcpus=2)
    snap = td_snapshot(h.fw)[td.tdr]
    assert snap.op_state == OpState.RUNNABLE and len(snap.pages) == 3 and len(snap.vcpus) == 2
    assert counter(h, td) == 0
    r = vp_enter(h, td.vcpus[1], cpu=1)
    assert r.rax == EXIT_REASON_TDCALL and r.r11 == 1 and counter(h, td) == 1
    vp_enter(h, td.vcpus[0], cpu=0)
    assert counter(h, td) == 2 and td_snapshot(h.fw)[td.tdr].vcpus[0][3] == 1


def test_mrtd_measures_gpas_and_extended_contents():
    a, b = host(2), host(2)
    ta, tb = build_td(a, hkid=1), build_td(b, hkid=1)
    assert td_snapshot(a.fw)[ta.tdr].mrtd == td_snapshot(b.fw)[tb.tdr].mrtd != bytes(48)
    c = host(2)
    tc = build_td(c, hkid=1, seed=9)  # other page contents
    assert td_snapshot(c.fw)[tc.tdr].mrtd != td_snapshot(a.fw)[ta.tdr].mrtd
    d, e = host(2), host(2)
    td_, te = build_td(d, hkid=1, extend=False), build_td(e, hkid=1, seed=9, extend=False)
    assert td_snapshot(d.fw)[td_.tdr].mrtd == td_snapshot(e.fw)[te.tdr].mrtd  # contents unmeasured


def test_td_lifecycle_errors():
    h = host(2)
    mem = h.machine.mem
    td = build_td(h, hkid=5)
    src = page_with(h, b"x")
    tdr2 = mem.alloc_page()
    # after MR.FINALIZE the build is over
    assert rax(h, 0, TdxLeaf.TDH_MEM_PAGE_ADD, rcx=0x20_0000, rdx=td.tdr, r8=mem.alloc_page(), r9=src) \
        == TdxStatus.TDX_OP_STATE_INCORRECT
    assert rax(h, 0, TdxLeaf.TDH_MR_EXTEND, rcx=0x10_0000, rdx=td.tdr) == TdxStatus.TDX_OP_STATE_INCORRECT
    assert rax(h, 0, TdxLeaf.TDH_MR_FINALIZE, rcx=td.tdr) == TdxStatus.TDX_OP_STATE_INCORRECT
    assert rax(h, 0, TdxLeaf.TDH_MNG_INIT, rcx=td.tdr, rdx=td_params(h)) == TdxStatus.TDX_OP_STATE_INCORRECT
    # resources
    assert rax(h, 0, TdxLeaf.TDH_MNG_CREATE, rcx=tdr2, rdx=5) == TdxStatus.TDX_HKID_NOT_FREE
    assert rax(h, 0, TdxLeaf.TDH_MNG_CREATE, rcx=tdr2, rdx=0) == T.TDX_OPERAND_INVALID | OPERAND_RDX
    assert rax(h, 0, TdxLeaf.TDH_MNG_CREATE, rcx=td.tdr, rdx=6) == TdxStatus.TDX_PAGE_METADATA_INCORRECT | OPERAND_RCX
    assert rax(h, 0, TdxLeaf.TDH_MNG_CREATE, rcx=SEAMRR_BASE, rdx=6) == T.TDX_OPERAND_INVALID | OPERAND_RCX
    assert rax(h, 0, TdxLeaf.TDH_MNG_CREATE, rcx=tdr2, rdx=6) == 0
    # a TD being built
    assert rax(h, 0, TdxLeaf.TDH_VP_CREATE, rcx=mem.alloc_page(), rdx=tdr2) == TdxStatus.TDX_OP_STATE_INCORRECT
    assert rax(h, 0, TdxLeaf.TDH_MNG_INIT, rcx=tdr2, rdx=td_params(h, max_vcpus=1)) == 0
    v = mem.alloc_page()
    assert rax(h, 0, TdxLeaf.TDH_VP_CREATE, rcx=v, rdx=tdr2) == 0
    assert rax(h, 0, TdxLeaf.TDH_VP_CREATE, rcx=mem.alloc_page(), rdx=tdr2) == TdxStatus.TDX_MAX_VCPUS_EXCEEDED
    assert rax(h, 0, TdxLeaf.TDH_VP_ENTER, rcx=v) == TdxStatus.TDX_OP_STATE_INCORRECT  # not finalized
    page = mem.alloc_page()
    assert rax(h, 0, TdxLeaf.TDH_MEM_PAGE_ADD, rcx=0x10_0008, rdx=tdr2, r8=page, r9=src) \
        == T.TDX_OPERAND_INVALID | OPERAND_RCX
    assert rax(h, 0, TdxLeaf.TDH_MEM_PAGE_ADD, rcx=0x10_0000, rdx=tdr2, r8=td.pages[0x10_0000], r9=src) \
        == TdxStatus.TDX_PAGE_METADATA_INCORRECT | OPERAND_R8  # another TD's private page
    assert rax(h, 0, TdxLeaf.TDH_MEM_PAGE_ADD, rcx=0x10_0000, rdx=tdr2, r8=SEAMRR_BASE + PAGE, r9=src) \
        == T.TDX_OPERAND_INVALID | OPERAND_R8
    assert rax(h, 0, TdxLeaf.TDH_MEM_PAGE_ADD, rcx=0x10_0000, rdx=tdr2, r8=page, r9=src) == 0
    assert rax(h, 0, TdxLeaf.TDH_MEM_PAGE_ADD, rcx=0x10_0000, rdx=tdr2, r8=mem.alloc_page(), r9=src) \
        == TdxStatus.TDX_EPT_ENTRY_NOT_FREE
    assert rax(h, 0, TdxLeaf.TDH_MR_EXTEND, rcx=0x30_0000, rdx=tdr2) == TdxStatus.TDX_EPT_WALK_FAILED
    assert rax(h, 0, TdxLeaf.TDH_MR_EXTEND, rcx=0x10_0010, rdx=tdr2) == T.TDX_OPERAND_INVALID | OPERAND_RCX
    assert rax(h, 0, TdxLeaf.TDH_MR_FINALIZE, rcx=tdr2) == 0
    assert rax(h, 0, TdxLeaf.TDH_VP_ENTER, rcx=v) == TdxStatus.TDX_VCPU_STATE_INCORRECT  # no VP.INIT
    assert rax(h, 0, TdxLeaf.TDH_VP_INIT, rcx=v) == 0
    assert rax(h, 0, TdxLeaf.TDH_VP_INIT, rcx=v) == TdxStatus.TDX_VCPU_STATE_INCORRECT
    assert rax(h, 0, TdxLeaf.TDH_VP_ENTER, rcx=v) == EXIT_REASON_TDCALL
    assert rax(h, 0, TdxLeaf.TDH_VP_ENTER, rcx=tdr2) == TdxStatus.TDX_PAGE_METADATA_INCORRECT | OPERAND_RCX
    assert rax(h, 0, TdxLeaf.TDH_MR_FINALIZE, rcx=mem.alloc_page()) \
        == TdxStatus.TDX_PAGE_METADATA_INCORRECT | OPERAND_RCX


@pytest.mark.parametrize("check", ["td_op_state", "vcpu_state"])
def test_td_state_checks_bite(check):
    h = host(2)
    td = build_td(h, hkid=5, finalize=(check == "vcpu_state"))
    h.fw.disabled_checks.add(check)
    if check == "td_op_state":
        assert rax(h, 0, TdxLeaf.TDH_VP_ENTER, rcx=td.vcpus[0]) == EXIT_REASON_TDCALL  # before finalize
    else:
        assert rax(h, 0, TdxLeaf.TDH_VP_INIT, rcx=td.vcpus[0]) == 0  # a second VP.INIT


# ---- preservation ---------------------------------------------------------------------------------


def _fleet(h):
    a = build_td(h, hkid=1, npages=3, nvcpus=2)
    b = build_td(h, hkid=2, npages=1, nvcpus=1, seed=5)
    c = build_td(h, hkid=3, npages=2, nvcpus=0)  # no vCPU yet
    for v in a.vcpus + b.vcpus:
        vp_enter(h, v, cpu=1)
    vp_enter(h, a.vcpus[0], cpu=h.machine.ncpus - 1)
    return a, b, c


def test_a_td_preserving_update_keeps_every_td():
    h = host(4)
    a, b, c = _fleet(h)
    before = td_snapshot(h.fw)
    assert len(before) == 3 and counter(h, a) == 3
    sig, mod = synth("1.5.08")
    assert update(h, sig, mod).ok and version(h) == ModuleVersion(1, 5, 8)
    assert compare_tds(before, td_snapshot(h.fw)) == []
    # the TDs keep working on the new module: vCPUs run on, vCPUs are added, new TDs come
    assert vp_enter(h, a.vcpus[1], cpu=3).r11 == 4
    v = h.machine.mem.alloc_page()
    assert rax(h, 0, TdxLeaf.TDH_VP_CREATE, rcx=v, rdx=c.tdr) == 0
    assert rax(h, 0, TdxLeaf.TDH_VP_INIT, rcx=v) == 0
    assert rax(h, 0, TdxLeaf.TDH_VP_ENTER, rcx=v) == EXIT_REASON_TDCALL
    d = build_td(h, hkid=4)
    assert set(td_snapshot(h.fw)) == {a.tdr, b.tdr, c.tdr, d.tdr}
    assert h.fw.module.corrupted_builds == []
    # and survive a second update
    before = td_snapshot(h.fw)
    sig, mod = synth("1.5.09")
    assert update(h, sig, mod).ok and compare_tds(before, td_snapshot(h.fw)) == []


def test_a_td_build_spanning_an_update_ends_with_a_wrong_measurement():
    """The TD-build erratum (spec-linux §9): a build in flight across an update is corrupted."""
    ref = host(2)
    ref_td = build_td(ref, hkid=3, npages=1)  # the same build with no update in the middle
    h = host(2)
    td = build_td(h, hkid=3, finalize=False, npages=0)
    src = page_with(h, bytes(8) + bytes([3]) * 56 + b"page 0 of TD 3")
    sig, mod = synth("1.5.08")
    before = td_snapshot(h.fw)
    assert update(h, sig, mod).ok
    assert compare_tds(before, td_snapshot(h.fw)) == [f"TD 0x{td.tdr:x}: mrtd changed"]
    assert h.fw.module.corrupted_builds == [td.tdr]
    # the build goes on and finishes, but its MRTD is not what the same build gives elsewhere
    target = h.machine.mem.alloc_page()
    assert rax(h, 0, TdxLeaf.TDH_MEM_PAGE_ADD, rcx=0x10_0000, rdx=td.tdr, r8=target, r9=src) == 0
    for off in range(0, PAGE, 256):
        assert rax(h, 0, TdxLeaf.TDH_MR_EXTEND, rcx=0x10_0000 + off, rdx=td.tdr) == 0
    assert rax(h, 0, TdxLeaf.TDH_MR_FINALIZE, rcx=td.tdr) == 0
    got, want = td_snapshot(h.fw)[td.tdr], td_snapshot(ref.fw)[ref_td.tdr]
    assert got.pages[0][2] == want.pages[0][2]  # same contents...
    assert got.mrtd != want.mrtd  # ...different measurement


def test_update_compatibility_refuses_instead_of_corrupting():
    feats = 0x2E1F0FBF | (1 << 47)
    h = host(2, module=DeclaredModule(ModuleVersion(1, 5, 24), features0=feats))
    build_td(h, hkid=3, finalize=False)
    assert rax(h, 0, TdxLeaf.TDH_SYS_SHUTDOWN, rcx=1 << 16) == TdxStatus.TDX_UPDATE_COMPAT_SENSITIVE
    assert h.fw.module.ready and len(td_snapshot(h.fw)) == 1


def test_failed_install_after_shutdown_loses_the_tds():
    h = host(4)
    a, b, c = _fleet(h)
    before = td_snapshot(h.fw)
    sig, mod = synth("1.5.08")
    bad = bytearray(mod)
    bad[100] ^= 1
    assert shutdown(h) == 0
    assert install(h, sig, bytes(bad)) == (SeamldrStatus.EBADHASH, 1)
    assert td_snapshot(h.fw) == {}
    assert sorted(compare_tds(before, td_snapshot(h.fw))) == sorted(
        f"TD 0x{t.tdr:x}: lost" for t in (a, b, c))
    # recovery by CLEANUP + LOAD brings a module back, but not the TDs
    for cpu in range(4):
        assert rax(h, cpu, SeamldrLeaf.P_SEAMLDR_CLEANUP) == 0
    assert install(h, sig, mod, scenario=SEAMLDR_SCENARIO_LOAD) == (0, 0)
    assert not any(init_lps(h)) and not any(boot_config(h))
    assert td_snapshot(h.fw) == {}
    assert rax(h, 0, TdxLeaf.TDH_VP_ENTER, rcx=a.vcpus[0]) == TdxStatus.TDX_PAGE_METADATA_INCORRECT | OPERAND_RCX
    # the guest pages are still in host memory, now owned by nobody: a new TD may take them
    assert rax(h, 0, TdxLeaf.TDH_MNG_CREATE, rcx=a.tdr, rdx=1) == 0


def test_recoverable_failure_after_shutdown_parks_the_tds_until_a_good_install():
    h = host(4)
    _fleet(h)
    before = td_snapshot(h.fw)
    sig, mod = synth("1.5.08")
    assert shutdown(h) == 0
    assert install(h, sig, mod, reserved=b"\x01" + bytes(103)) == (SeamldrStatus.EBADPARAM, 0)
    assert td_snapshot(h.fw) == {}  # the old module is shut down: no TD can run
    assert install(h, sig, mod) == (0, 0)
    assert not any(init_lps(h)) and rax(h, 0, TdxLeaf.TDH_SYS_UPDATE) == 0
    assert compare_tds(before, td_snapshot(h.fw)) == []


def test_a_new_module_that_skips_sys_update_has_no_tds():
    h = host(2)
    _fleet(h)
    sig, mod = synth("1.5.08")
    assert shutdown(h) == 0 and install(h, sig, mod) == (0, 0)
    assert not any(init_lps(h))
    assert not any(boot_config(h))  # the non-preserving init path (SPEC §4.5.5 fallback)
    assert td_snapshot(h.fw) == {} and len(h.fw.module.tds) == 0


def test_td_state_travels_through_emulated_memory():
    h = host(2)
    a = build_td(h, hkid=1)
    before = td_snapshot(h.fw)
    old = h.fw.module
    assert shutdown(h) == 0
    # what the old object holds after SHUTDOWN no longer matters...
    old.tds.tds.clear()
    # ...but what is in the handoff area does: flip one byte of the serialized MRTD
    mem = h.machine.mem
    pa = h.fw.handoff_pa() + HANDOFF_HEADER_SIZE
    hdr_size = int.from_bytes(mem.read(h.fw.handoff_pa() + 4, 4), "little")
    payload = bytearray(mem.read(pa, hdr_size))
    mrtd = before[a.tdr].mrtd
    at = payload.find(mrtd)
    assert at > 0
    payload[at] ^= 0xFF
    mem.write(pa, bytes(payload))
    sig, mod = synth("1.5.08")
    assert install(h, sig, mod) == (0, 0) and not any(init_lps(h))
    assert rax(h, 0, TdxLeaf.TDH_SYS_UPDATE) == 0
    assert compare_tds(before, td_snapshot(h.fw)) == [f"TD 0x{a.tdr:x}: mrtd changed"]


def test_a_torn_handoff_payload_is_refused():
    h = host(2)
    build_td(h, hkid=1)
    assert shutdown(h) == 0
    mem = h.machine.mem
    mem.write(h.fw.handoff_pa() + HANDOFF_HEADER_SIZE, b"garbage!")
    sig, mod = synth("1.5.08")
    assert install(h, sig, mod) == (0, 0) and not any(init_lps(h))
    assert rax(h, 0, TdxLeaf.TDH_SYS_UPDATE) == TdxStatus.TDX_SYS_INVALID_HANDOFF


def test_td_state_is_bounded_by_the_handoff_area():
    h = host(2, module=DeclaredModule(ModuleVersion(1, 5, 6), num_handoff_pages=0))
    mem = h.machine.mem
    td = build_td(h, hkid=1, npages=0, finalize=False)
    src = page_with(h, b"p")
    added = 0
    while True:
        st = rax(h, 0, TdxLeaf.TDH_MEM_PAGE_ADD, rcx=0x100_0000 + added * PAGE, rdx=td.tdr,
                 r8=mem.alloc_page(), r9=src)
        if st:
            break
        added += 1
    assert st == T.TDX_OPERAND_INVALID | OPERAND_R8
    assert h.fw.module.tds.serialized_size() <= h.fw.module.handoff_capacity() < 4096
    assert added > 200
    assert rax(h, 0, TdxLeaf.TDH_MR_FINALIZE, rcx=td.tdr) == 0
    before = td_snapshot(h.fw)
    sig, mod = synth("1.5.08", num_handoff_pages=0)
    assert update(h, sig, mod).ok and compare_tds(before, td_snapshot(h.fw)) == []


def test_td_snapshot_is_pure():
    h = host(2)
    build_td(h, hkid=1)
    steps, stats = h.sched.steps, dict(vars(h.fw.stats))
    assert td_snapshot(h.fw) == td_snapshot(h.fw)
    assert h.sched.steps == steps and dict(vars(h.fw.stats)) == stats


def test_intel_1_5_06_to_1_5_13_preserves_tds(intel_dir):
    from tdxseam.formats.identity import identify_image
    from tdxseam.formats.image import extract
    h = host(4, module=intel_dir / "joined_files" / "1.5" / "tdx_module_1.5.06.blob")
    a, b, c = _fleet(h)
    before = td_snapshot(h.fw)
    new = (intel_dir / "joined_files" / "1.5" / "tdx_module_1.5.13.blob").read_bytes()
    told = identify_image(new, name="tdx_module_1.5.13.blob")
    h.fw.known_modules[told.seamhash] = told
    x = extract(new)
    assert update(h, x.sigstruct, x.module).ok
    assert version(h) == ModuleVersion(1, 5, 13) and compare_tds(before, td_snapshot(h.fw)) == []
    assert vp_enter(h, b.vcpus[0]).r11 == 2
