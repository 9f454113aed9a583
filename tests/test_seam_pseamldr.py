"""SEAMLDR.INSTALL through the door: the rendezvous, every check with its status, recoverability.

After spec-firmware.md §7.3, §7.4, §8 and the P-SEAMLDR 1.5 source order. Each negative case is
also run with its check switched off (`fw.disabled_checks`), to show the test relies on that check.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from _seam_support import (
    INSTALL,
    PAGE,
    SEAMLDR_SCENARIO_LOAD,
    SeamldrStatus,
    TdxStatus,
    boot_config,
    call,
    host,
    init_lps,
    install,
    install_on,
    rax,
    rd,
    resign,
    seamextend,
    shutdown,
    stage,
    synth,
    update,
    version,
)

from tdxseam.formats.leaves import SeamldrLeaf, TdxLeaf
from tdxseam.formats.measure import seamhash
from tdxseam.formats.seamextend import SEAMEXTEND_VALID_ALL
from tdxseam.formats.seamldr_info import SeamldrInfo
from tdxseam.formats.sigstruct import Sigstruct
from tdxseam.formats.testsign import OTHER_SEED, signing_key
from tdxseam.formats.version import ModuleVersion
from tdxseam.host import BootError, DeclaredModule, EmulatedHost
from tdxseam.platform.cpu import SeamcallEnd
from tdxseam.seam.firmware import SEAMRR_BASE
from tdxseam.formats.metadata import MdField
from tdxseam.seam.module import SysState
from tdxseam.seam.pseamldr import INSTALL_CHECKS, Flow, PSeamldr, SeamldrBuild

S = SeamldrStatus


def _flip(data: bytes, offset: int, bit: int = 0) -> bytes:
    b = bytearray(data)
    b[offset] ^= 1 << bit
    return bytes(b)


def info(h: EmulatedHost, cpu: int = 0) -> SeamldrInfo:
    pa = h.machine.mem.alloc_page()
    assert rax(h, cpu, SeamldrLeaf.P_SEAMLDR_INFO, rcx=pa) == 0
    return SeamldrInfo.from_bytes(h.machine.mem.read(pa, 256))


# ---- boot and the rendezvous ----------------------------------------------------------------------


def test_boot_load_records_the_module_in_seamextend_and_seamdb():
    h = host(4)
    sig = h.pseamldr.sigstruct_snapshot
    ext = seamextend(h)
    assert ext.valid == SEAMEXTEND_VALID_ALL and ext.seam_ready == 1 and ext.p_seamldr_ready == 1
    assert ext.mrseam == sig.seamhash and ext.mrsigner == bytes(48)
    assert ext.tee_tcb_svn[:2] == bytes([6, 1])  # 1.5.06-like: minor 6, major 1
    assert len(h.fw.seamdb.entries) == 1
    assert h.pseamldr.num_remaining_updates == h.pseamldr.build.seamdb_capacity - 1
    assert info(h).num_remaining_updates == h.pseamldr.build.seamdb_capacity - 1
    assert h.fw.module.sys_state == SysState.SYS_READY and version(h) == ModuleVersion(1, 5, 6)
    assert h.pseamldr.current_flow == Flow.READY and h.pseamldr.update_bitmap == 0


def test_first_lp_blocks_the_module_and_only_the_last_rcx_matters():
    h = host(4)
    before = seamextend(h)
    sig, mod = synth("1.5.08")
    assert shutdown(h) == 0
    st = stage(h, sig, mod)
    end, r = call(h, 2, INSTALL, rcx=0x123)  # garbage RCX: only registers
    assert (end, r.rax, r.rdx) == (SeamcallEnd.SEAMRET, 0, 0)
    assert seamextend(h).seam_ready == 0 and h.pseamldr.current_flow == Flow.INSTALL
    # the old module is unreachable from now on: VMfailInvalid, nothing runs
    end, r = call(h, 1, TdxLeaf.TDH_SYS_RD, rdx=MdField.MAJOR_VERSION)
    assert end is SeamcallEnd.VMFAILINVALID
    # SEAMLDR.INFO still works in the middle of a session and shows SEAM_READY = 0
    i = info(h, 3)
    assert i.seam_ready == 0 and i.p_seam_ready == 1
    res = install_on(h, st.params_pa, cpus=[0, 3, 1], rcx_early=0xDEAD000)
    assert res == [(0, 0)] * 3
    ext = seamextend(h)
    assert ext.seam_ready == 1 and ext.mrseam == seamhash(mod) == Sigstruct.from_bytes(sig).seamhash
    assert ext.tee_tcb_svn[:2] == bytes([8, 1]) and ext.mrseam != before.mrseam
    assert h.fw.module.sys_state == SysState.SYSINIT_PENDING
    assert h.pseamldr.update_bitmap == 0 and h.pseamldr.lps_in_update == 0


def test_fewer_than_all_lps_loads_nothing():
    """Inferred rule (spec-linux §5.7): with an LP missing, every call succeeds and nothing loads."""
    h = host(4)
    sig, mod = synth("1.5.08")
    old = h.fw.module
    assert shutdown(h) == 0
    st = stage(h, sig, mod)
    assert install_on(h, st.params_pa, cpus=[0, 1, 2]) == [(0, 0)] * 3
    assert seamextend(h).seam_ready == 0 and h.fw.module is old
    assert h.pseamldr.lps_in_update == 3 and h.pseamldr.sessions == 1  # only the boot session
    assert rax(h, 0, TdxLeaf.TDH_SYS_INIT) == TdxStatus.TDX_SEAMCALL_VMFAILINVALID
    # the missing LP completes the session
    assert install_on(h, st.params_pa, cpus=[3]) == [(0, 0)]
    assert seamextend(h).seam_ready == 1 and h.fw.module is not old


def test_a_repeated_call_from_one_lp_is_refused_but_still_counts():
    h = host(3)
    sig, mod = synth("1.5.08")
    assert shutdown(h) == 0
    st = stage(h, sig, mod)
    assert install_on(h, st.params_pa, cpus=[1]) == [(0, 0)]
    assert install_on(h, st.params_pa, cpus=[1]) == [(S.EBADCALL, 0)]
    assert h.pseamldr.last_reject == "repeat_lp" and h.pseamldr.lps_in_update == 1
    assert install_on(h, st.params_pa, cpus=[0, 2]) == [(0, 0), (0, 0)]
    assert seamextend(h).seam_ready == 1 and h.pseamldr.sessions == 2


def test_install_spends_scheduler_steps_and_the_door_admits_one_lp():
    """Unserialized INSTALL callers meet inside the P-SEAMLDR: the door turns one away."""
    from tdxseam.platform.cpu import Regs

    sig, mod = synth("1.5.08")
    for seed in range(20):
        h = host(2, seed=seed)
        assert shutdown(h) == 0
        st = stage(h, sig, mod)
        ends = {}

        def go(c, h=h, st=st, ends=ends):
            r = Regs(rax=INSTALL, rcx=st.params_pa)
            ends[c] = (h.machine.cpus[c].seamcall(r), r.rax)

        steps, calls = h.sched.steps, h.pseamldr.calls
        for c in (0, 1):
            h.sched.spawn(h.machine.cpus[c], go, c)
        h.run()
        admitted = [c for c, (e, _) in ends.items() if e is SeamcallEnd.SEAMRET]
        assert h.pseamldr.calls - calls == len(admitted)
        assert h.sched.steps - steps >= len(admitted) * PSeamldr.steps_inside
        if len(admitted) == 1:
            assert h.fw.stats.seamldr_refused == 1 and h.pseamldr.lps_in_update == 1
            return
    raise AssertionError("no seed made the two callers meet inside the P-SEAMLDR")


# ---- every check, with its status ------------------------------------------------------------------


@dataclass
class Case:
    id: str
    check: str
    status: int
    run: Callable[[EmulatedHost], tuple[int, int]]
    rdx: int = 0
    hostkw: dict = dataclasses.field(default_factory=dict)


def _upd(version_: str = "1.5.08", *, sig_edit=None, mod_edit=None, shut: bool = True, **kw):
    """Run: SHUTDOWN (as the kernel does), then one INSTALL session with a changed input."""
    def run(h):
        sig, mod = synth(version_, **kw)
        if sig_edit:
            sig = sig_edit(sig)
        if mod_edit:
            mod = mod_edit(mod)
        if shut:
            assert shutdown(h) == 0
        return install(h, sig, mod)
    return run


def _upd_params(**ov):
    def run(h):
        sig, mod = synth("1.5.08")
        assert shutdown(h) == 0
        return install(h, sig, mod, **ov)
    return run


def _upd_edit(edit):
    def run(h):
        sig, mod = synth("1.5.08")
        assert shutdown(h) == 0
        return install(h, sig, mod, edit=edit)
    return run


def _rcx_case(make_rcx):
    def run(h):
        sig, mod = synth("1.5.08")
        assert shutdown(h) == 0
        st = stage(h, sig, mod)
        n = h.machine.ncpus
        res = install_on(h, st.params_pa, cpus=range(n - 1))
        assert res == [(0, 0)] * (n - 1)
        end, r = call(h, n - 1, INSTALL, rcx=make_rcx(st.params_pa))
        return r.rax, r.rdx
    return run


def _after_unrecoverable(h):
    sig, mod = synth("1.5.08")
    assert shutdown(h) == 0
    assert install(h, sig, _flip(mod, 100)) == (S.EBADHASH, 1)
    return install(h, sig, mod)


def _no_updates_left(h):
    sig, mod = synth("1.5.08")
    assert update(h, sig, mod).ok
    sig, mod = synth("1.5.09")
    assert shutdown(h) == 0
    return install(h, sig, mod)


def _repeat(h):
    sig, mod = synth("1.5.08")
    st = stage(h, sig, mod)
    assert install_on(h, st.params_pa, cpus=[0]) == [(0, 0)]
    return install_on(h, st.params_pa, cpus=[0])[0]


def _lpid(h):
    h.pseamldr.build = dataclasses.replace(h.pseamldr.build, max_lps=2)
    sig, mod = synth("1.5.08")
    st = stage(h, sig, mod)
    return install_on(h, st.params_pa, cpus=[3])[0]


def _during_cleanup(h):
    assert rax(h, 0, SeamldrLeaf.P_SEAMLDR_CLEANUP) == 0  # opens a CLEANUP session
    sig, mod = synth("1.5.08")
    st = stage(h, sig, mod)
    return install_on(h, st.params_pa, cpus=[1])[0]


def _during_seamldr_shutdown(h):
    for c in range(h.machine.ncpus):  # a SEAMLDR.SHUTDOWN needs clean keys and caches first
        assert rax(h, c, SeamldrLeaf.P_SEAMLDR_CLEANUP) == 0
    assert h.pseamldr.current_flow == Flow.READY
    assert rax(h, 1, SeamldrLeaf.P_SEAMLDR_SHUTDOWN) == 0  # a SEAMLDR.SHUTDOWN session begins
    sig, mod = synth("1.5.08")
    st = stage(h, sig, mod)
    return install_on(h, st.params_pa, cpus=[2])[0]


def _no_shutdown(version_="1.5.08", **kw):
    return _upd(version_, shut=False, **kw)


def _load(**kw):
    def run(h):
        sig, mod = synth("1.5.08", **kw)
        return install(h, sig, mod, scenario=SEAMLDR_SCENARIO_LOAD)
    return run


CASES = [
    Case("lpid>=max", "lpid", S.EUNSPECERR, _lpid),
    Case("seamldr-shutdown-session", "shutdown_session", S.EBADCALL, _during_seamldr_shutdown),
    Case("cleanup-flow", "flow", S.EBADCALL, _during_cleanup),
    Case("repeat-lp", "repeat_lp", S.EBADCALL, _repeat),
    Case("params-pa-misaligned", "params_pa", S.EBADPARAM, _rcx_case(lambda pa: pa + 8)),
    Case("params-pa-in-seamrr", "params_pa", S.EBADPARAM, _rcx_case(lambda pa: SEAMRR_BASE + PAGE)),
    Case("params-version", "params_version", S.EBADPARAM, _upd_params(version=1)),
    Case("params-reserved", "params_reserved", S.EBADPARAM, _upd_params(reserved=bytes(103) + b"\x01")),
    Case("params-scenario", "params_scenario", S.EBADPARAM, _upd_params(scenario=2)),
    Case("params-0-pages", "params_num_pages", S.EBADPARAM, _upd_params(module_nr_pages=0)),
    Case("params-497-pages", "params_num_pages", S.EBADPARAM, _upd_params(module_nr_pages=497)),
    Case("page-pa-misaligned", "params_page_pa", S.EBADPARAM,
         _upd_edit(lambda p: p.module_pages_pa.__setitem__(1, p.module_pages_pa[1] + 0x10))),
    Case("page-pa-in-seamrr", "params_page_pa", S.EBADPARAM,
         _upd_edit(lambda p: p.module_pages_pa.__setitem__(0, SEAMRR_BASE + 0x10000))),
    Case("sigstruct-pa-misaligned", "params_sigstruct_pa", S.EBADPARAM,
         _upd_edit(lambda p: setattr(p, "sigstruct_pa", p.sigstruct_pa + 0x800))),
    Case("update-without-module", "params_update_needs_module", S.EBADPARAM, _after_unrecoverable),
    Case("untrusted-key", "sig.key_hash", S.EBADSIG, _upd(key=signing_key(OTHER_SEED))),
    Case("signature-bit-flip", "sig.signature", S.EBADSIG, _upd(sig_edit=lambda s: _flip(s, 0x14))),
    Case("cpuid-not-in-table", "sig.cpuid", S.EUNSUPCPU, _upd(cpuids=(0x50654,))),
    Case("debug-on-production", "sig.debug", S.EBADSIG, _upd(debug=True)),
    Case("lower-minor-svn", "sig.svn_downgrade", S.EBADSIG, _upd(svn=(1, 5))),
    Case("major-svn-change", "sig.major_svn_change", S.EUNSUPPORTED, _upd(svn=(2, 8))),
    Case("major-svn-zero", "sig.major_svn_zero", S.EUNSUPPORTED, _upd(svn=(0, 8))),
    Case("2.0-sigstruct-on-1.5-loader", "sig.reserved3", S.EBADSIG, _upd("2.0.08", style="2.0", svn=(1, 8))),
    Case("production-without-cpuid-table", "sig.no_cpuid_table", S.EBADSIG, _upd(cpuids=())),
    Case("load-downgrade-needs-cleanup", "sig.cleanup_required", S.ECLEANUPREQ, _load(svn=(1, 5))),
    Case("load-other-major-needs-cleanup", "sig.cleanup_required", S.ECLEANUPREQ, _load(svn=(2, 8))),
    Case("enomem", "enomem", S.ENOMEM, _upd(sig_edit=lambda s: resign(s, num_global_data_pages=0xFFFF))),
    Case("no-updates-left", "updates_left", S.EBADCALL, _no_updates_left,
         hostkw={"seamldr": SeamldrBuild(seamdb_capacity=2)}),
    Case("no-handoff-without-shutdown", "handoff", S.EBADHANDOFF, _no_shutdown()),
    Case("handoff-hv-below-new-min", "handoff", S.EBADHANDOFF, _upd(module_hv=1, min_update_hv=1)),
    Case("module-bit-flip", "seamhash", S.EBADHASH, _upd(mod_edit=lambda m: _flip(m, 3 * PAGE + 7)), rdx=1),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_install_check(case: Case):
    h = host(4, **case.hostkw)
    got = case.run(h)
    assert got == (case.status, case.rdx), (hex(got[0]), got[1])
    assert h.pseamldr.last_reject == case.check


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_install_check_bites(case: Case):
    """With the check switched off the same inputs give another outcome: the test relies on it."""
    h = host(4, **case.hostkw)
    h.fw.disabled_checks.add(case.check)
    got = case.run(h)
    assert (got, h.pseamldr.last_reject) != ((case.status, case.rdx), case.check)


def test_cases_use_the_status_the_check_table_names():
    table = dict(INSTALL_CHECKS)
    for case in CASES:
        assert table[case.check] == case.status, case.id
    assert set(table) >= {c.check for c in CASES}


def test_sigstruct_problem_order_decides_the_status():
    """Several problems: the loader returns the first one's status (CPUID comes after SVN)."""
    h = host(4)
    sig, mod = synth("1.5.08", svn=(2, 8), cpuids=(0x50654,))
    assert shutdown(h) == 0
    assert install(h, sig, mod) == (S.EUNSUPPORTED, 0)
    codes = [p.code for p in h.pseamldr.last_install.problems]
    assert codes == ["major_svn_change", "cpuid"]


def test_cpuid_match_ignores_stepping_and_debug_unlock_allows_debug_modules():
    h = host(4)
    sig, mod = synth("1.5.08", cpuids=(0x806F0,), debug=True)  # platform is 0x806F8
    assert shutdown(h) == 0
    assert install(h, sig, mod) == (S.EBADSIG, 0)
    assert h.pseamldr.last_reject == "sig.debug"
    h.machine.debug_unlocked = True
    assert install(h, sig, mod) == (0, 0)


def test_a_2_0_loader_accepts_versioned_sigstructs():
    h = host(4, seamldr=SeamldrBuild(major=2, minor=0), module=DeclaredModule(ModuleVersion(2, 0, 4)))
    sig, mod = synth("2.0.08", style="2.0")
    assert update(h, sig, mod).ok
    assert version(h) == ModuleVersion(2, 0, 8)


# ---- recoverable and unrecoverable failures -------------------------------------------------------


def test_recoverable_failure_without_shutdown_leaves_the_old_module_running():
    h = host(4)
    before = seamextend(h).to_bytes()
    old = h.fw.module
    sig, mod = synth("1.5.08")
    assert install(h, sig, mod, version=1) == (S.EBADPARAM, 0)
    assert seamextend(h).to_bytes() == before
    assert h.fw.module is old and version(h) == ModuleVersion(1, 5, 6)


def test_recoverable_failure_after_shutdown_leaves_a_shut_down_module_then_a_retry_works():
    h = host(4)
    before = seamextend(h).to_bytes()
    sig, mod = synth("1.5.08")
    assert shutdown(h) == 0
    assert install(h, sig, mod, version=7) == (S.EBADPARAM, 0)
    assert seamextend(h).to_bytes() == before  # SEAM_READY restored...
    st, _ = rd(h, MdField.MAJOR_VERSION)
    assert st == TdxStatus.TDX_SYS_SHUTDOWN  # ...but the old module has shut down
    # the handoff data survived the failed session: a second INSTALL completes the update
    assert install(h, sig, mod) == (0, 0)
    assert not any(init_lps(h)) and rax(h, 0, TdxLeaf.TDH_SYS_UPDATE) == 0
    assert version(h) == ModuleVersion(1, 5, 8)


def test_unrecoverable_failure_zeroes_the_identity_and_a_new_load_needs_cleanup():
    h = host(4)
    cap = h.pseamldr.build.seamdb_capacity
    sig, mod = synth("1.5.08")
    assert shutdown(h) == 0
    assert install(h, sig, _flip(mod, 5)) == (S.EBADHASH, 1)
    ext = seamextend(h)
    assert (ext.valid, ext.seam_ready, ext.attributes) == (0, 0, 0)
    assert ext.mrseam == bytes(48) and ext.tee_tcb_svn[:2] == bytes(2)
    assert ext.p_seamldr_ready == 1  # the P-SEAMLDR stays callable
    assert h.fw.module is None and h.pseamldr.module_range_initialized
    assert rax(h, 0, TdxLeaf.TDH_SYS_INIT) == TdxStatus.TDX_SEAMCALL_VMFAILINVALID
    assert info(h).seam_ready == 0
    # keys/caches are dirty since the boot install and SEAMEXTEND's SVN is now 0: LOAD needs CLEANUP
    assert install(h, sig, mod, scenario=SEAMLDR_SCENARIO_LOAD) == (S.ECLEANUPREQ, 0)
    for c in range(4):
        assert rax(h, c, SeamldrLeaf.P_SEAMLDR_CLEANUP) == 0
    assert not any(h.pseamldr.key_dirty) and h.pseamldr.num_remaining_updates == cap
    assert install(h, sig, mod, scenario=SEAMLDR_SCENARIO_LOAD) == (0, 0)
    assert not any(init_lps(h)) and not any(boot_config(h))
    assert version(h) == ModuleVersion(1, 5, 8) and h.pseamldr.num_remaining_updates == cap - 1


def test_cleanup_is_interruptible():
    h = host(2)
    h.fw.machine.cpus[1].pending_irqs.append((lambda: None, (), "test"))  # an interrupt waits
    assert rax(h, 0, SeamldrLeaf.P_SEAMLDR_CLEANUP) == 0
    # cpu1 is its package's last LP: programming keys stops at the pending interrupt
    end, r = call(h, 1, SeamldrLeaf.P_SEAMLDR_CLEANUP)
    assert r.rax == S.EINTERRUPT and h.pseamldr.key_dirty[0]
    assert not h.machine.cpus[1].pending_irqs  # taken after SEAMRET
    assert rax(h, 1, SeamldrLeaf.P_SEAMLDR_CLEANUP) == 0  # resumes where it stopped
    assert h.pseamldr.current_flow == Flow.READY and not any(h.pseamldr.key_dirty)


def test_aslr_entropy_failure_is_recoverable():
    h = host(4)
    before = seamextend(h).to_bytes()
    h.pseamldr.faults.aslr_entropy = True
    sig, mod = synth("1.5.08")
    assert install(h, sig, mod) == (S.ENOENTROPY, 0)
    assert seamextend(h).to_bytes() == before and h.pseamldr.last_reject == "aslr_entropy"


def test_seamdb_insert_entropy_failure_is_unrecoverable():
    h = host(4)
    sig, mod = synth("1.5.08")
    assert shutdown(h) == 0
    h.fw.seamdb.fail_next_inserts = 5
    assert install(h, sig, mod) == (S.ENOENTROPY, 1)
    ext = seamextend(h)
    # per the 1.5 source: the new identity stays recorded, SEAM_READY stays 0
    assert ext.seam_ready == 0 and ext.mrseam == seamhash(mod) and ext.valid == SEAMEXTEND_VALID_ALL
    assert rax(h, 0, TdxLeaf.TDH_SYS_INIT) == TdxStatus.TDX_SEAMCALL_VMFAILINVALID
    # four failures are absorbed by the retries
    h2 = host(4)
    assert shutdown(h2) == 0
    h2.fw.seamdb.fail_next_inserts = 4
    assert install(h2, sig, mod) == (0, 0)


def test_relocation_failure_is_unrecoverable():
    h = host(4)
    h.pseamldr.faults.relocation = True
    sig, mod = synth("1.5.08")
    assert install(h, sig, mod, scenario=SEAMLDR_SCENARIO_LOAD) == (S.EBADPARAM, 1)
    assert seamextend(h).valid == 0 and h.pseamldr.last_reject == "relocation"


def test_no_canary_entropy_fails_every_leaf():
    from tdxseam.platform.machine import Machine
    from tdxseam.platform.cpu import Regs
    from tdxseam.seam.firmware import SeamFirmware

    m = Machine(1, trace=False)
    fw = SeamFirmware(m)
    ldr = PSeamldr(fw)
    ldr.faults.canary_entropy = True
    for leaf in (SeamldrLeaf.P_SEAMLDR_INFO, SeamldrLeaf.P_SEAMLDR_INSTALL):
        r = Regs(rax=leaf, rcx=m.mem.alloc_page())
        assert m.cpus[0].seamcall(r) is SeamcallEnd.SEAMRET and r.rax == S.EUNSPECERR


def test_num_remaining_updates_counts_down_and_seamdb_is_a_bounded_log():
    h = host(2, seamldr=SeamldrBuild(seamdb_capacity=4))
    assert info(h).num_remaining_updates == 3
    for v in ("1.5.07", "1.5.08", "1.5.09"):
        sig, mod = synth(v)
        assert update(h, sig, mod).ok
    assert info(h).num_remaining_updates == 0 and len(h.fw.seamdb.entries) == 4
    assert [e[0][24:72] for e in h.fw.seamdb.entries][-1] == seamextend(h).mrseam
    sig, mod = synth("1.5.10")
    out = update(h, sig, mod)
    assert out.install == (S.EBADCALL, 0)


def test_boot_rejects_what_the_loader_rejects():
    with pytest.raises(BootError, match="EUNSUPCPU"):
        EmulatedHost(2, trace=False, module=synth("1.5.08", cpuids=(0x50654,)))
    with pytest.raises(BootError, match="EBADSIG"):
        EmulatedHost(2, trace=False, module=synth("1.5.08"), trust_test_key=False)


# ---- real Intel releases ----------------------------------------------------------------------------


def _blob(intel_dir, v: str):
    """The release's path: booting from it identifies it by its name and bytes."""
    return intel_dir / "joined_files" / v[:3] / f"tdx_module_{v}.blob"


def _parts(intel_dir, v: str, h=None) -> tuple[bytes, bytes]:
    """(sigstruct, module) of a release; with `h`, the platform is told what it is, as the demo and
    `tdxseam emulate` tell it from the files (a real module knows its own update number)."""
    from tdxseam.formats.identity import identify_image
    from tdxseam.formats.image import extract

    path = _blob(intel_dir, v)
    if h is not None:
        ident = identify_image(path.read_bytes(), name=path.name)
        h.fw.known_modules[ident.seamhash] = ident
    x = extract(path.read_bytes())
    return x.sigstruct, x.module


def test_intel_1_5_06_to_1_5_13(intel_dir):
    h = host(4, module=_blob(intel_dir, "1.5.06"), cpuid_1_eax=0x806F8)
    assert version(h) == ModuleVersion(1, 5, 6)
    assert rd(h, MdField.TDX_FEATURES0)[1] & 2  # TD-preserving
    sig, mod = _parts(intel_dir, "1.5.13", h)
    assert update(h, sig, mod).ok
    assert version(h) == ModuleVersion(1, 5, 13)
    ext = seamextend(h)
    assert ext.mrseam.hex().startswith("27b67e0b20508f0a") and ext.tee_tcb_svn[:2] == bytes([0x0A, 1])
    assert rd(h, MdField.BUILD_NUM)[1] == 864


def test_an_intel_1_5_release_nobody_named(intel_dir):
    """Installed without being told its update number, a 1.5 release still initialises (its
    constants are its sigstruct's) and keeps its TDs; it reads 1.5.00 and the gap is named."""
    h = host(2, module=_blob(intel_dir, "1.5.06"), cpuid_1_eax=0x806F8)
    sig, mod = _parts(intel_dir, "1.5.13")
    assert update(h, sig, mod).ok
    assert version(h) == ModuleVersion(1, 5, 0) and rd(h, MdField.BUILD_NUM)[1] == 864
    assert h.fw.module.build.gaps == ("update number", "TDX_FEATURES0")


def test_intel_1_5_06_on_an_unlisted_cpu_is_refused(intel_dir):
    with pytest.raises(BootError, match="EUNSUPCPU"):
        host(2, module=_blob(intel_dir, "1.5.06"), cpuid_1_eax=0xA06D0)


def test_intel_2_0_04_to_2_0_05_needs_a_2_0_loader(intel_dir):
    with pytest.raises(BootError, match="EBADSIG"):
        host(2, module=_blob(intel_dir, "2.0.04"), cpuid_1_eax=0xA06D0)
    h = host(2, module=_blob(intel_dir, "2.0.04"), cpuid_1_eax=0xA06D0,
             seamldr=SeamldrBuild(major=2, minor=0))
    assert version(h) == ModuleVersion(2, 0, 4)
    sig, mod = _parts(intel_dir, "2.0.05")  # a 2.0 sigstruct states its version: nothing to tell
    assert update(h, sig, mod).ok  # same SVN 0x304: not a downgrade
    assert version(h) == ModuleVersion(2, 0, 5) and rd(h, MdField.BUILD_NUM)[1] == 863


def test_intel_downgrade_and_cross_line_are_refused(intel_dir):
    h = host(2, module=_blob(intel_dir, "1.5.13"))
    sig, mod = _parts(intel_dir, "1.5.06")
    assert shutdown(h) == 0
    assert install(h, sig, mod) == (S.EBADSIG, 0) and h.pseamldr.last_reject == "sig.svn_downgrade"


# ---- a state machine over INSTALL calls from random LPs, against a tiny reference model ------------

from hypothesis import HealthCheck, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule  # noqa: E402

_PAYLOAD_SVN = {"same": (1, 6), "newer": (1, 8), "older": (1, 4), "badhash": (1, 8), "badparams": (1, 8)}


class InstallMachine(RuleBasedStateMachine):
    """LOAD sessions from random LPs with assorted inputs; CLEANUP between them.

    Reference: an LP set per session; the last LP's input decides; LOAD after an install needs the
    same major and a non-lower minor SVN until CLEANUP (ECLEANUPREQ); a bad hash zeroes the identity.
    """

    NCPUS = 3

    def __init__(self):
        super().__init__()
        self.h = host(self.NCPUS)
        self.staged: dict[str, int] = {}
        self.session: set[int] = set()
        self.svn = (1, 6)
        self.ready = 1
        self.dirty = True

    def _params(self, kind: str) -> int:
        if kind not in self.staged:
            major, minor = _PAYLOAD_SVN[kind]
            sig, mod = synth(f"1.5.{minor:02d}", svn=(major, minor))
            if kind == "badhash":
                mod = _flip(mod, 2 * PAGE + 1)
            ov = {"version": 3} if kind == "badparams" else {}
            self.staged[kind] = stage(self.h, sig, mod, scenario=SEAMLDR_SCENARIO_LOAD, **ov).params_pa
        return self.staged[kind]

    def _expect_last(self, kind: str) -> tuple[int, int]:
        if kind == "badparams":
            return S.EBADPARAM, 0
        new = _PAYLOAD_SVN[kind]
        if self.dirty and (new[0] != self.svn[0] or new[1] < self.svn[1]):
            return S.ECLEANUPREQ, 0
        if kind == "badhash":
            self.svn, self.ready = (0, 0), 0
            return S.EBADHASH, 1
        self.svn, self.ready, self.dirty = new, 1, True
        return 0, 0

    @rule(lp=st.integers(0, NCPUS - 1), kind=st.sampled_from(sorted(_PAYLOAD_SVN)))
    def install_call(self, lp, kind):
        end, r = call(self.h, lp, INSTALL, rcx=self._params(kind))
        assert end is SeamcallEnd.SEAMRET
        if lp in self.session:
            want = (S.EBADCALL, 0)
        else:
            self.session.add(lp)
            if len(self.session) < self.NCPUS:
                want = (0, 0)
            else:
                self.session.clear()
                want = self._expect_last(kind)
        assert (r.rax, r.rdx) == want, (hex(r.rax), r.rdx, want)

    @rule()
    def cleanup(self):
        if self.session:
            assert rax(self.h, 0, SeamldrLeaf.P_SEAMLDR_CLEANUP) == S.EBADCALL
            return
        for c in range(self.NCPUS):
            assert rax(self.h, c, SeamldrLeaf.P_SEAMLDR_CLEANUP) == 0
        self.svn, self.ready, self.dirty = (0, 0), 0, False

    @invariant()
    def seamextend_matches(self):
        ext = self.h.fw.seamextend
        assert self.h.pseamldr.lps_in_update == len(self.session)
        assert ext.seam_ready == (0 if self.session else self.ready)
        if not self.session:
            assert (ext.tee_tcb_svn[1], ext.tee_tcb_svn[0]) == self.svn
            assert ext.p_seamldr_ready == 1


TestInstallMachine = InstallMachine.TestCase
TestInstallMachine.settings = settings(max_examples=25, stateful_step_count=25, deadline=None,
                                       suppress_health_check=[HealthCheck.too_slow])
