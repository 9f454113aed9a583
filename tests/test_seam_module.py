"""The TDX module side of an update: SYS.SHUTDOWN, SYS.INIT checks, SYS.UPDATE, handoff metadata.

After spec-firmware.md §10-§13 and the module source (tdh_sys_shutdown.c, tdh_sys_update.c,
tdh_sys_init.c). Everything goes through the door from tasks on simulated CPUs.
"""

from __future__ import annotations

import pytest
from _seam_support import (
    SEAMLDR_SCENARIO_LOAD,
    SeamldrStatus,
    TdxStatus,
    boot_config,
    build_td,
    call,
    host,
    init_lps,
    install,
    rax,
    rd,
    resign,
    shutdown,
    synth,
    update,
    version,
)

from tdxseam.formats.leaves import TdxLeaf
from tdxseam.formats.testsign import make_module
from tdxseam.formats.sigstruct import Sigstruct
from tdxseam.formats.version import ModuleVersion
from tdxseam.host import DeclaredModule
from tdxseam.platform.cpu import Regs, SeamcallEnd
from tdxseam.seam.layout import HANDOFF_HEADER_SIZE, HandoffHeader
from tdxseam.formats.metadata import (
    TDX_FEATURES0_TD_PRESERVING,
    TDX_FEATURES0_UPDATE_COMPAT,
    TDX_SYS_SHUTDOWN_AVOID_COMPAT_SENSITIVE as SHUTDOWN_AVOID_COMPAT_SENSITIVE,
    MdField,
)
from tdxseam.seam.module import SysState, TdxModule
from tdxseam.seam.pseamldr import SeamldrBuild

T = TdxStatus
HV_INVALID = 0xC000010000000001  # TDX_OPERAND_INVALID with operand RCX


def header(h) -> HandoffHeader:
    return HandoffHeader.from_bytes(h.machine.mem.read(h.fw.handoff_pa(), HANDOFF_HEADER_SIZE))


def test_handoff_fields_in_sys_rd():
    h = host(2)
    want = {
        MdField.MODULE_HV: 0, MdField.MIN_UPDATE_HV: 0, MdField.NO_DOWNGRADE: 0,
        MdField.NUM_HANDOFF_PAGES: 13, MdField.HANDOFF_DATA_VALID: 0, MdField.HANDOFF_DATA_HV: 0,
        MdField.HANDOFF_DATA_SIZE: 0, MdField.TDX_FEATURES0: 0x2E1F0FBF,
    }
    for f, v in want.items():
        assert rd(h, f) == (0, v), f.name
    # the next-field chain visits every field once
    seen, fid = [], MdField.VENDOR_ID
    while fid != (1 << 64) - 1:
        end, r = call(h, 0, TdxLeaf.TDH_SYS_RD, rdx=fid)
        assert r.rax == 0
        seen.append(fid)
        fid = r.rdx
    assert len(seen) == len(set(seen)) and MdField.MODULE_HV in seen
    assert rd(h, 0x1234)[0] == T.TDX_METADATA_FIELD_ID_INCORRECT


def test_leaf_rax_checks_and_not_ready_gating():
    h = host(2)
    assert rax(h, 0, TdxLeaf.TDH_SYS_RD | 1 << 16, rdx=MdField.VENDOR_ID) == T.TDX_OPERAND_INVALID
    assert rax(h, 0, TdxLeaf.TDH_SYS_RD | 1 << 40) == T.TDX_OPERAND_INVALID
    assert rax(h, 0, 0x7777) == T.TDX_OPERAND_INVALID  # a leaf the model does not know
    sig, mod = synth("1.5.08")
    assert shutdown(h) == 0 and install(h, sig, mod) == (0, 0)
    # the new module is SYSINIT_PENDING: TD leaves and SHUTDOWN wait for SYS_READY
    assert rax(h, 0, TdxLeaf.TDH_MNG_CREATE, rcx=h.machine.mem.alloc_page(), rdx=1) == T.TDX_SYS_NOT_READY
    assert rax(h, 0, TdxLeaf.TDH_SYS_SHUTDOWN) == T.TDX_SYS_NOT_READY
    assert rax(h, 0, TdxLeaf.TDH_SYS_INIT) == 0
    assert rd(h, MdField.VENDOR_ID, cpu=1)[0] == T.TDX_SYS_LP_INIT_NOT_DONE
    assert rax(h, 1, TdxLeaf.TDH_SYS_LP_INIT) == 0
    assert rax(h, 1, TdxLeaf.TDH_SYS_LP_INIT) == T.TDX_SYS_LP_INIT_DONE
    assert rd(h, MdField.VENDOR_ID, cpu=1) == (0, 0x8086)
    assert rax(h, 0, TdxLeaf.TDH_SYS_INIT) == T.TDX_SYS_INIT_NOT_PENDING


# ---- TDH.SYS.SHUTDOWN ----------------------------------------------------------------------------


@pytest.mark.parametrize("rcx", [1, 1 << 32, 1 << 63, SHUTDOWN_AVOID_COMPAT_SENSITIVE])
def test_shutdown_rejects_an_unsupported_handoff_version(rcx):
    h = host(2)
    assert rax(h, 0, TdxLeaf.TDH_SYS_SHUTDOWN, rcx=rcx) == HV_INVALID
    assert h.fw.module.ready and version(h) == ModuleVersion(1, 5, 6)


def test_shutdown_hv_check_bites():
    h = host(2)
    h.fw.disabled_checks.add("shutdown_hv")
    assert rax(h, 0, TdxLeaf.TDH_SYS_SHUTDOWN, rcx=1) == 0


def test_shutdown_serialises_handoff_and_then_only_lp_shutdown_answers():
    h = host(2)
    td = build_td(h, hkid=3)
    assert shutdown(h) == 0
    mod = h.fw.module
    hdr = header(h)
    assert (hdr.valid, hdr.hv) == (1, 0) and 0 < hdr.size <= mod.handoff_capacity()
    payload = h.machine.mem.read(h.fw.handoff_pa() + HANDOFF_HEADER_SIZE, hdr.size)
    assert payload.startswith(b"TDXSEAM0") and td.tdr.to_bytes(8, "little") in payload
    assert h.fw.handoff_pa() == mod.layout.handoff_pa
    assert h.fw.in_seamrr(h.fw.handoff_pa())
    for leaf, kw in [
        (TdxLeaf.TDH_SYS_RD, {"rdx": MdField.VENDOR_ID}), (TdxLeaf.TDH_SYS_INIT, {}),
        (TdxLeaf.TDH_SYS_LP_INIT, {}), (TdxLeaf.TDH_SYS_UPDATE, {}), (TdxLeaf.TDH_SYS_SHUTDOWN, {}),
        (TdxLeaf.TDH_SYS_CONFIG, {}), (TdxLeaf.TDH_VP_ENTER, {"rcx": td.vcpus[0]}),
        (TdxLeaf.TDH_MNG_CREATE, {"rcx": h.machine.mem.alloc_page(), "rdx": 9}),
    ]:
        assert rax(h, 1, leaf, **kw) == T.TDX_SYS_SHUTDOWN, leaf
    assert rax(h, 1, TdxLeaf.TDH_SYS_LP_SHUTDOWN) == 0


def _vp_enter_while_shutdown(h, td):
    """cpu1 runs the vCPU; cpu0 calls SYS.SHUTDOWN while cpu1 is inside the module."""
    mod = h.fw.module
    mod.vp_enter_steps = 200
    res = {}

    def guest():
        r = Regs(rax=TdxLeaf.TDH_VP_ENTER, rcx=td.vcpus[0])
        h.machine.cpus[1].seamcall(r)
        res["enter"] = r.rax

    def host_cpu():
        cpu = h.machine.cpus[0]
        while 1 not in mod.lp_busy:
            cpu.preempt_point()
        r = Regs(rax=TdxLeaf.TDH_SYS_SHUTDOWN, rcx=0)
        cpu.seamcall(r)
        res["shutdown"] = r.rax
        res["busy_seen"] = 1 in mod.lp_busy

    h.sched.spawn(h.machine.cpus[1], guest)
    h.sched.spawn(h.machine.cpus[0], host_cpu)
    h.run()
    return res


def test_shutdown_is_busy_while_another_lp_is_inside_the_module():
    h = host(2)
    td = build_td(h, hkid=2)
    res = _vp_enter_while_shutdown(h, td)
    assert res["busy_seen"] and res["shutdown"] == T.TDX_SYS_BUSY and res["enter"] == 77
    assert h.fw.module.sys_state == SysState.SYS_READY  # restored
    h.fw.module.vp_enter_steps = TdxModule.vp_enter_steps
    assert shutdown(h) == 0


def test_shutdown_busy_check_bites():
    h = host(2)
    td = build_td(h, hkid=2)
    h.fw.disabled_checks.add("shutdown_busy")
    assert _vp_enter_while_shutdown(h, td)["shutdown"] == 0


def test_no_downgrade_pins_the_handoff_version():
    h = host(2, module=DeclaredModule(ModuleVersion(1, 5, 6), module_hv=2, min_update_hv=1, no_downgrade=1))
    assert rd(h, MdField.MODULE_HV) == (0, 2) and rd(h, MdField.NO_DOWNGRADE) == (0, 1)
    for bad in (0, 1, 3):
        assert rax(h, 0, TdxLeaf.TDH_SYS_SHUTDOWN, rcx=bad) == HV_INVALID
    assert shutdown(h) == 0 and header(h).hv == 2


def test_avoid_compat_sensitive_on_a_module_that_knows_it():
    feats = 0x2E1F0FBF | TDX_FEATURES0_UPDATE_COMPAT
    h = host(2, module=DeclaredModule(ModuleVersion(1, 5, 24), features0=feats))
    td = build_td(h, hkid=4, finalize=False)  # a TD build in flight
    flag = SHUTDOWN_AVOID_COMPAT_SENSITIVE
    assert rax(h, 0, TdxLeaf.TDH_SYS_SHUTDOWN, rcx=flag) == T.TDX_UPDATE_COMPAT_SENSITIVE
    assert h.fw.module.ready
    h.fw.disabled_checks.add("shutdown_compat")
    assert h.fw.module.tds.any_in_build()
    h.fw.disabled_checks.clear()
    assert rax(h, 0, TdxLeaf.TDH_MR_FINALIZE, rcx=td.tdr) == 0
    assert rax(h, 0, TdxLeaf.TDH_SYS_SHUTDOWN, rcx=flag) == 0
    assert header(h).hv == 0  # the flag is not part of the version


def test_avoid_compat_check_bites():
    feats = 0x2E1F0FBF | TDX_FEATURES0_UPDATE_COMPAT
    h = host(2, module=DeclaredModule(ModuleVersion(1, 5, 24), features0=feats))
    build_td(h, hkid=4, finalize=False)
    h.fw.disabled_checks.add("shutdown_compat")
    assert rax(h, 0, TdxLeaf.TDH_SYS_SHUTDOWN, rcx=SHUTDOWN_AVOID_COMPAT_SENSITIVE) == 0


# ---- TDH.SYS.UPDATE ------------------------------------------------------------------------------


def test_update_needs_sys_init_and_every_lp():
    h = host(3)
    sig, mod = synth("1.5.08")
    assert shutdown(h) == 0
    hdr = header(h)
    assert install(h, sig, mod) == (0, 0)
    assert header(h) == hdr  # the handoff data survived the range initialisation
    assert rax(h, 0, TdxLeaf.TDH_SYS_UPDATE) == T.TDX_SYS_STATE_INCORRECT
    assert rax(h, 0, TdxLeaf.TDH_SYS_INIT) == 0
    assert rax(h, 0, TdxLeaf.TDH_SYS_UPDATE) == T.TDX_SYS_STATE_INCORRECT
    assert rax(h, 0, TdxLeaf.TDH_SYS_LP_INIT) == 0 and rax(h, 2, TdxLeaf.TDH_SYS_LP_INIT) == 0
    assert rax(h, 0, TdxLeaf.TDH_SYS_UPDATE) == T.TDX_SYS_STATE_INCORRECT  # cpu1 missing
    assert rax(h, 1, TdxLeaf.TDH_SYS_LP_INIT) == 0
    assert rax(h, 1, TdxLeaf.TDH_SYS_UPDATE) == 0
    assert version(h) == ModuleVersion(1, 5, 8)
    assert rd(h, MdField.HANDOFF_DATA_VALID) == (0, 0) and rd(h, MdField.HANDOFF_DATA_SIZE) == (0, 0)
    assert rax(h, 0, TdxLeaf.TDH_SYS_UPDATE) == T.TDX_SYS_STATE_INCORRECT  # now SYS_READY


def test_update_state_check_bites():
    h = host(2)
    sig, mod = synth("1.5.08")
    assert shutdown(h) == 0 and install(h, sig, mod) == (0, 0)
    assert rax(h, 0, TdxLeaf.TDH_SYS_INIT) == 0
    h.fw.disabled_checks.add("update_state")
    assert rax(h, 0, TdxLeaf.TDH_SYS_UPDATE) == 0


def test_update_after_a_load_finds_no_handoff_and_the_boot_path_still_works():
    h = host(2)
    sig, mod = synth("1.5.08")
    assert install(h, sig, mod, scenario=SEAMLDR_SCENARIO_LOAD) == (0, 0)  # wipes the range
    assert not any(init_lps(h))
    assert rax(h, 0, TdxLeaf.TDH_SYS_UPDATE) == T.TDX_SYS_INVALID_HANDOFF
    assert not any(boot_config(h)) and version(h) == ModuleVersion(1, 5, 8)


def test_the_module_checks_the_handoff_version_too():
    """Defence in depth: with the P-SEAMLDR's handoff check off, SYS.UPDATE still refuses."""
    h = host(2)
    sig, mod = synth("1.5.08", module_hv=1, min_update_hv=1)
    assert shutdown(h) == 0
    assert install(h, sig, mod) == (SeamldrStatus.EBADHANDOFF, 0)
    h.fw.disabled_checks.add("handoff")
    assert install(h, sig, mod) == (0, 0)
    assert not any(init_lps(h))
    assert rax(h, 0, TdxLeaf.TDH_SYS_UPDATE) == T.TDX_SYS_INVALID_HANDOFF
    h.fw.disabled_checks.add("update_handoff")
    assert rax(h, 0, TdxLeaf.TDH_SYS_UPDATE) == 0


def test_update_with_a_newer_handoff_version_range():
    """New module speaks HV 0..1: an old HV-0 handoff is accepted; its own HV is 1 afterwards."""
    h = host(2)
    sig, mod = synth("1.5.08", module_hv=1, min_update_hv=0)
    assert update(h, sig, mod).ok
    assert rd(h, MdField.MODULE_HV) == (0, 1) and rd(h, MdField.MIN_UPDATE_HV) == (0, 0)


# ---- TDH.SYS.INIT ----------------------------------------------------------------------------------


INCOMPATIBLE = [
    ("module_hv-differs", lambda: (resign(synth("1.5.08")[0], module_hv=1), synth("1.5.08")[1])),
    ("fewer-handoff-pages", lambda: (resign(synth("1.5.08")[0], num_handoff_pages=5), synth("1.5.08")[1])),
    ("no_downgrade-dropped", lambda: (resign(synth("1.5.08", module_hv=0, no_downgrade=1)[0], no_downgrade=0),
                                      synth("1.5.08", module_hv=0, no_downgrade=1)[1])),
    ("min_update_hv-lowered", lambda: (resign(synth("1.5.08", module_hv=1, min_update_hv=1)[0], min_update_hv=0),
                                       synth("1.5.08", module_hv=1, min_update_hv=1)[1])),
]


@pytest.mark.parametrize("make", [m for _, m in INCOMPATIBLE], ids=[n for n, _ in INCOMPATIBLE])
def test_sys_init_refuses_an_incompatible_sigstruct(make):
    h = host(2)
    sig, mod = make()
    assert shutdown(h) == 0
    assert install(h, sig, mod) == (0, 0)  # the P-SEAMLDR loads it...
    assert rax(h, 0, TdxLeaf.TDH_SYS_INIT) == T.TDX_SYS_INCOMPATIBLE_SIGSTRUCT  # ...the module refuses
    assert h.fw.module.sys_state == SysState.SYSINIT_PENDING
    # the check is what refuses it: switched off, the same module initialises
    h.fw.disabled_checks.add("init_sigstruct")
    assert rax(h, 0, TdxLeaf.TDH_SYS_INIT) == 0


@pytest.mark.parametrize("form", ["immediates", "rodata", "none"])
def test_a_vendor_build_takes_its_constants_from_its_sigstruct(form):
    """A module without a synthetic identity header is a vendor's build, compiled with the very
    constants its sigstruct carries: TDH.SYS.INIT's check cannot fail on it, even with a handoff
    version no synthetic default has. What the files leave open is a named gap, read as 0."""
    h = host(2)
    sig, mod = make_module("1.5.16", build=869, date=20250219, identity=form, module_hv=1, min_update_hv=0,
                           num_handoff_pages=14)
    assert shutdown(h) == 0
    assert install(h, sig, mod) == (0, 0)
    b = h.fw.module.build
    assert (b.module_hv, b.min_update_hv, b.min_handoff_pages) == (1, 0, 15)
    assert rax(h, 0, TdxLeaf.TDH_SYS_INIT) == 0
    if form == "none":
        assert b.version == ModuleVersion(0, 0, 0) and b.gaps == ("version", "build", "TDX_FEATURES0")
    else:
        assert (b.version, b.build_num, b.build_date) == (ModuleVersion(1, 5, 0), 869, 20250219)
        assert b.gaps == ("update number", "TDX_FEATURES0") and b.features0 == TDX_FEATURES0_TD_PRESERVING


def test_what_the_platform_was_told_completes_a_vendor_build():
    from tdxseam.formats.identity import resolve_identity

    h = host(2)
    sig, mod = make_module("1.5.16", build=869, date=20250219, identity="immediates")
    ident = resolve_identity(Sigstruct.from_bytes(sig), mod, name="tdx_module_1.5.16.bin")
    h.fw.known_modules[ident.seamhash] = ident
    assert update(h, sig, mod).ok
    assert version(h) == ModuleVersion(1, 5, 16) and rd(h, MdField.BUILD_NUM) == (0, 869)
    assert rd(h, MdField.BUILD_DATE) == (0, 20250219)
    assert h.fw.module.build.identity == ident.describe() and h.fw.module.build.gaps == ("TDX_FEATURES0",)


def test_sys_init_needs_seamdb_capabilities_and_entropy():
    h = host(2)
    sig, mod = synth("1.5.08")
    assert shutdown(h) == 0 and install(h, sig, mod) == (0, 0)
    h.fw.seamops_capabilities &= ~(1 << 5)
    assert rax(h, 0, TdxLeaf.TDH_SYS_INIT) == T.TDX_INCOMPATIBLE_SEAM_CAPABILITIES
    h.fw.seamops_capabilities |= 1 << 5
    h.fw.module.rdrand_failures = 1
    assert rax(h, 0, TdxLeaf.TDH_SYS_INIT) == T.TDX_RND_NO_ENTROPY
    assert rax(h, 0, TdxLeaf.TDH_SYS_INIT) == 0
    assert h.fw.module.seamdb_index == len(h.fw.seamdb.entries) - 1
    assert h.fw.module.num_of_lps == 2


def test_every_module_instance_starts_from_zeroed_global_data():
    h = host(2)
    old = h.fw.module
    sig, mod = synth("1.5.08")
    out = update(h, sig, mod)
    assert out.ok and h.fw.module is not old and h.fw.module.tds is not old.tds
    assert old.sys_state == SysState.SYS_SHUTDOWN  # the old object is gone from the door


def test_vmfailinvalid_when_no_module_is_ready():
    h = host(2)
    h.fw.seamextend.seam_ready = 0
    end, _ = call(h, 0, TdxLeaf.TDH_SYS_RD, rdx=MdField.VENDOR_ID)
    assert end is SeamcallEnd.VMFAILINVALID


def test_2_0_style_module_identity_comes_from_its_sigstruct():
    h = host(2, seamldr=SeamldrBuild(major=2, minor=0), module=DeclaredModule(ModuleVersion(2, 0, 2)))
    sig, mod = make_module("2.0.06", style="2.0", build=900)
    assert update(h, sig, mod).ok
    assert version(h) == ModuleVersion(2, 0, 6) and rd(h, MdField.BUILD_NUM) == (0, 900)
    assert h.fw.module.build.source == "sigstruct"
    assert rd(h, MdField.NUM_HANDOFF_PAGES) == (0, 24)
