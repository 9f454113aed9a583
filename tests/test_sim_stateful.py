"""Hypothesis state machine: the P-SEAMLDR's INSTALL rendezvous (scenario UPDATE) and the TDX module's
update states, driven through the real SEAMCALL door in any order, against a small reference model
written from spec-firmware.md §4, §7.3 and §10.

Rules issue single SEAMCALLs from chosen CPUs (and, for the door rule, two at once); the model
predicts every status and the invariants compare the firmware's state after each step:
- INSTALL: every LP once per session, in any order; a repeat is EBADCALL; the last LP decides with
  its own parameters; SEAM_READY is 0 while a session is open; recoverable failures restore it,
  EBADHASH (unrecoverable) leaves no module; an UPDATE needs a module, updates left and a valid
  handoff (from TDH.SYS.SHUTDOWN), and a success costs one update;
- the module: SYS_READY -> (SHUTDOWN) SYS_SHUTDOWN -> (INSTALL) SYSINIT_PENDING -> (SYS.INIT)
  SYSINIT_DONE -> (LP.INIT on every LP, then SYS.UPDATE) SYS_READY with the TDs handed over; every
  leaf answers as the dispatcher's gating says in each state;
- the door: a second LP entering the P-SEAMLDR while one is inside fails with VMfailInvalid and
  changes nothing.
"""

from __future__ import annotations

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule

from tdxseam.formats.leaves import SeamldrLeaf, TdxLeaf
from tdxseam.formats.seamldr_info import SEAMLDR_INFO_SIZE, SeamldrInfo
from tdxseam.formats.seamldr_params import SEAMLDR_SCENARIO_UPDATE, SeamldrParams
from tdxseam.formats.status import OPERAND_RCX, SeamldrStatus as S, TdxStatus as T
from tdxseam.formats.testsign import make_module
from tdxseam.host import EmulatedHost
from tdxseam.kernel.kvm_tdx import tdx_td_create
from tdxseam.platform.cpu import Regs, SeamcallEnd
from tdxseam.formats.metadata import MdField
from tdxseam.seam.module import SysState
from tdxseam.seam.pseamldr import SeamldrBuild

NCPUS = 3
PAGE = 4096
VMFAIL = "vmfail"
KINDS = ("good", "badparams", "badsig", "badhash")
STATE_OF = {"ready": SysState.SYS_READY, "shutdown": SysState.SYS_SHUTDOWN,
            "pending": SysState.SYSINIT_PENDING, "initdone": SysState.SYSINIT_DONE}

_MODULE = make_module("1.5.08")


def _flip(b: bytes, at: int) -> bytes:
    return b[:at] + bytes([b[at] ^ 0x40]) + b[at + 1:]


class UpdateMachine(RuleBasedStateMachine):
    @initialize()
    def boot(self):
        self.h = EmulatedHost(NCPUS, seed=3, trace=False, seamldr=SeamldrBuild(seamdb_capacity=3))
        ret, self.td = self.h.run_on(0, lambda: tdx_td_create(self.h.kernel, nr_vcpus=1, nr_pages=1))
        assert ret == 0
        self.params = {k: self._stage(k) for k in KINDS}
        # the model
        self.mod = "ready"
        self.session: set[int] = set()
        self.lp_done: set[int] = set()
        self.handoff = False
        self.remaining = 2
        self.version = (1, 5, 6)

    def _stage(self, kind: str) -> int:
        mem = self.h.machine.mem
        sig, mod = _MODULE
        if kind == "badsig":
            sig = _flip(sig, 0x204 + 9)
        if kind == "badhash":
            mod = _flip(mod, 700)
        sig_pa = mem.alloc_page()
        mem.write(sig_pa, sig)
        pas = []
        for i in range(0, len(mod), PAGE):
            pa = mem.alloc_page()
            mem.write(pa, mod[i:i + PAGE])
            pas.append(pa)
        p = SeamldrParams(version=3 if kind == "badparams" else 0, scenario=SEAMLDR_SCENARIO_UPDATE,
                          sigstruct_pa=sig_pa, module_nr_pages=len(pas), module_pages_pa=pas)
        pa = mem.alloc_page()
        mem.write(pa, p.to_bytes())
        return pa

    # ---- the door ----------------------------------------------------------------------------

    def _call(self, cpu: int, rax: int, **regs: int) -> tuple[object, Regs]:
        r = Regs(rax=rax, **regs)
        end = self.h.run_on(cpu, lambda: self.h.machine.cpus[cpu].seamcall(r))
        return (VMFAIL if end is SeamcallEnd.VMFAILINVALID else r.rax), r

    @property
    def seam_ready(self) -> int:
        return 0 if self.session or self.mod == "lost" else 1

    def _module_gate(self, leaf: int):
        """What the door and the dispatcher answer before the leaf runs, or None (§4, §10.3)."""
        if not self.seam_ready:
            return VMFAIL
        if self.mod == "shutdown":
            return T.TDX_SYS_SHUTDOWN
        allowed = {TdxLeaf.TDH_SYS_RD, TdxLeaf.TDH_SYS_INIT, TdxLeaf.TDH_SYS_LP_INIT, TdxLeaf.TDH_SYS_UPDATE}
        if self.mod != "ready" and leaf not in allowed:
            return T.TDX_SYS_NOT_READY
        return None

    # ---- P-SEAMLDR ---------------------------------------------------------------------------

    def _expect_install(self, lp: int, kind: str) -> tuple[int, int]:
        if lp in self.session:
            return S.EBADCALL, 0
        was_ready = self.seam_ready if not self.session else self._snapshot_ready
        if not self.session:
            self._snapshot_ready = self.seam_ready
            was_ready = self._snapshot_ready
        self.session.add(lp)
        if len(self.session) < NCPUS:
            return 0, 0
        self.session.clear()
        if kind == "badparams" or not was_ready:
            return S.EBADPARAM, 0
        if kind == "badsig":
            return S.EBADSIG, 0
        if self.remaining == 0:
            return S.EBADCALL, 0
        if not self.handoff:
            return S.EBADHANDOFF, 0
        if kind == "badhash":
            self.mod = "lost"
            return S.EBADHASH, 1
        self.mod, self.lp_done, self.remaining = "pending", set(), self.remaining - 1
        self.version = (1, 5, 8)
        return 0, 0

    @rule(lp=st.integers(0, NCPUS - 1), kind=st.sampled_from(KINDS))
    def install(self, lp, kind):
        got, r = self._call(lp, SeamldrLeaf.P_SEAMLDR_INSTALL, rcx=self.params[kind])
        assert (got, r.rdx) == self._expect_install(lp, kind), (hex(got) if isinstance(got, int) else got, r.rdx)

    @rule(order=st.permutations(list(range(NCPUS))), kind=st.sampled_from(KINDS))
    def install_session(self, order, kind):
        """A whole session (what the kernel's CPU_INSTALL state does), the last LP's input deciding."""
        for i, lp in enumerate(order):
            self.install(lp, kind if i == len(order) - 1 else "good")

    @rule(cpu=st.integers(0, NCPUS - 1))
    def info(self, cpu):
        buf = self.h.kernel.percpu[cpu].stack_pa
        got, _ = self._call(cpu, SeamldrLeaf.P_SEAMLDR_INFO, rcx=buf)
        assert got == 0
        info = SeamldrInfo.from_bytes(self.h.machine.mem.read(buf, SEAMLDR_INFO_SIZE))
        assert info.seam_ready == self.seam_ready and info.num_remaining_updates == self.remaining

    @rule(a=st.integers(0, NCPUS - 1), b=st.integers(0, NCPUS - 1), kind=st.sampled_from(KINDS))
    def install_racing_info(self, a, b, kind):
        """Two LPs at the P-SEAMLDR at once: whoever finds it occupied fails and changes nothing."""
        if a == b:
            return
        m = self.h.machine
        regs_a = Regs(rax=SeamldrLeaf.P_SEAMLDR_INSTALL, rcx=self.params[kind])
        regs_b = Regs(rax=SeamldrLeaf.P_SEAMLDR_INFO, rcx=self.h.kernel.percpu[b].stack_pa)
        ta = m.sched.spawn(m.cpus[a], lambda: m.cpus[a].seamcall(regs_a))
        tb = m.sched.spawn(m.cpus[b], lambda: m.cpus[b].seamcall(regs_b))
        assert self.h.run() is None
        assert SeamcallEnd.SEAMRET in (ta.result, tb.result)  # one of them always gets in
        assert tb.result is SeamcallEnd.SEAMRET or ta.result is SeamcallEnd.SEAMRET
        if ta.result is SeamcallEnd.SEAMRET:
            assert (regs_a.rax, regs_a.rdx) == self._expect_install(a, kind)
        else:
            assert ta.result is SeamcallEnd.VMFAILINVALID and tb.result is SeamcallEnd.SEAMRET
        if tb.result is SeamcallEnd.SEAMRET:
            assert regs_b.rax == 0

    # ---- the TDX module ----------------------------------------------------------------------

    @rule(cpu=st.integers(0, NCPUS - 1), good_hv=st.booleans())
    def sys_shutdown(self, cpu, good_hv):
        got, _ = self._call(cpu, TdxLeaf.TDH_SYS_SHUTDOWN, rcx=0 if good_hv else 1)
        want = self._module_gate(TdxLeaf.TDH_SYS_SHUTDOWN)
        if want is None:
            if good_hv:
                want, self.mod, self.handoff = 0, "shutdown", True
            else:
                want = T.TDX_OPERAND_INVALID | OPERAND_RCX
        assert got == want, (got, want)

    @rule(cpu=st.integers(0, NCPUS - 1))
    def sys_init(self, cpu):
        got, _ = self._call(cpu, TdxLeaf.TDH_SYS_INIT)
        want = self._module_gate(TdxLeaf.TDH_SYS_INIT)
        if want is None:
            if self.mod == "pending":
                want, self.mod = 0, "initdone"
            else:
                want = T.TDX_SYS_INIT_NOT_PENDING
        assert got == want, (got, want)

    @rule(cpu=st.integers(0, NCPUS - 1))
    def lp_init(self, cpu):
        got, _ = self._call(cpu, TdxLeaf.TDH_SYS_LP_INIT)
        want = self._module_gate(TdxLeaf.TDH_SYS_LP_INIT)
        if want is None:
            if self.mod != "initdone":
                want = T.TDX_SYS_LP_INIT_NOT_PENDING
            elif cpu in self.lp_done:
                want = T.TDX_SYS_LP_INIT_DONE
            else:
                want = 0
                self.lp_done.add(cpu)
        assert got == want, (got, want)

    @rule()
    def lp_init_all(self):
        for cpu in range(NCPUS):
            self.lp_init(cpu)

    @rule(cpu=st.integers(0, NCPUS - 1))
    def sys_update(self, cpu):
        got, _ = self._call(cpu, TdxLeaf.TDH_SYS_UPDATE)
        want = self._module_gate(TdxLeaf.TDH_SYS_UPDATE)
        if want is None:
            if self.mod == "initdone" and len(self.lp_done) == NCPUS:
                want, self.mod, self.handoff = 0, "ready", False
            else:
                want = T.TDX_SYS_STATE_INCORRECT
        assert got == want, (got, want)

    @rule(cpu=st.integers(0, NCPUS - 1))
    def sys_rd_version(self, cpu):
        got, r = self._call(cpu, TdxLeaf.TDH_SYS_RD, rdx=MdField.UPDATE_VERSION)
        want = self._module_gate(TdxLeaf.TDH_SYS_RD)
        if want is None:
            if self.mod in ("pending", "initdone") and cpu not in self.lp_done:
                want = T.TDX_SYS_LP_INIT_NOT_DONE
            else:
                want = 0
        assert got == want, (got, want)
        if got == 0:
            assert r.r8 == self.version[2]

    @rule(cpu=st.integers(0, NCPUS - 1))
    def vp_enter(self, cpu):
        got, _ = self._call(cpu, TdxLeaf.TDH_VP_ENTER, rcx=self.td.vcpus[0])
        want = self._module_gate(TdxLeaf.TDH_VP_ENTER)
        if want is None:
            want = 77  # a TD exit (TDCALL): status class 0
        assert got == want, (got, want)

    @rule(upto=st.integers(1, 5), kind=st.sampled_from(("good",) * 3 + KINDS[1:]), lead=st.integers(0, NCPUS - 1))
    def host_update_order(self, upto, kind, lead):
        """The host's update order (spec-firmware §10.6), stopped after `upto` of its five steps."""
        steps = [lambda: self.sys_shutdown(lead, True),
                 lambda: self.install_session(list(range(NCPUS)), kind),
                 lambda: self.sys_init(lead), self.lp_init_all, lambda: self.sys_update(lead)]
        for step in steps[:upto]:
            step()

    # ---- the firmware's state against the model --------------------------------------------------

    @invariant()
    def matches_the_model(self):
        if not hasattr(self, "h"):
            return
        fw, ldr = self.h.fw, self.h.pseamldr
        assert ldr.lps_in_update == len(self.session)
        assert fw.seamextend.seam_ready == self.seam_ready
        assert ldr.num_remaining_updates == self.remaining
        if self.mod == "lost":
            assert fw.module is None
        else:
            assert fw.module is not None and fw.module.sys_state == STATE_OF[self.mod]
            if self.mod in ("ready", "shutdown"):
                assert len(fw.module.tds) == 1  # the TD survives every completed update
        assert fw.stats.max_seamldr_in_flight <= 2  # the door admits one; a second is turned away


TestUpdateMachine = UpdateMachine.TestCase
TestUpdateMachine.settings = settings(max_examples=120, stateful_step_count=40, deadline=None,
                                      suppress_health_check=[HealthCheck.too_slow])
