"""seamldr_call: serialized and irq-safe, and what breaks when either protection is switched off."""

from __future__ import annotations

import errno
import faulthandler
import random

import pytest

from tdxseam.formats.leaves import SeamldrLeaf
from tdxseam.host import EmulatedHost
from tdxseam.kernel.seamldr import seamldr_call, seamldr_get_info
from tdxseam.platform.cpu import Regs
from tdxseam.seam.pseamldr import SeamldrBuild
from tdxseam.sim.stress import run_stress


@pytest.fixture(autouse=True)
def no_hang():
    faulthandler.dump_traceback_later(60, exit=True)
    yield
    faulthandler.cancel_dump_traceback_later()


def _storm(host: EmulatedHost, calls: int, irq_share: float = 0.0, seed: int = 0) -> list[tuple[int, bool, int]]:
    """Every CPU calls seamldr_get_info `calls` times, some from interrupt handlers; (cpu, in_irq, ret)."""
    m, k = host.machine, host.kernel
    out: list[tuple[int, bool, int]] = []

    def one(in_irq: bool) -> None:
        ret, info = seamldr_get_info(k)
        assert (info is not None) == (ret == 0)
        out.append((m.current_cpu().id, in_irq, ret))

    def worker(cpu_id: int) -> None:
        rng = random.Random(seed * 7919 + cpu_id)
        cpu = m.cpus[cpu_id]
        for _ in range(calls):
            if rng.random() < irq_share:
                m.irq.raise_irq(m.cpus[rng.randrange(m.ncpus)], one, True)
            else:
                one(False)
            cpu.preempt_point()

    for c in m.cpus:
        host.sched.spawn(c, worker, c.id)
    dl = host.run()
    assert dl is None, dl.describe()
    return out


# ---- with the protections ----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [1, 2])
def test_serialized_calls_never_overlap(seed):
    # interrupt-context callers need the v4 irqsave lock (merged has none)
    host = EmulatedHost(16, seed=seed, trace=False, kernel="v4")
    host.kernel.dmesg.clear()
    out = _storm(host, 30, irq_share=0.3, seed=seed)
    assert len(out) == 16 * 30
    assert any(in_irq for _, in_irq, _ in out)
    assert {ret for _, _, ret in out} == {0}
    st = host.fw.stats
    assert st.max_seamldr_in_flight == 1
    assert st.seamldr_refused == 0
    assert st.seamldr_calls == len(out)
    assert host.kernel.seamldr_lock.acquisitions == len(out)
    assert host.kernel.lockdep.reports == []
    assert host.kernel.dmesg == []


def test_lock_is_released_and_irqs_restored_after_each_call():
    host = EmulatedHost(2, seed=0)
    seen = []

    def body():
        cpu = host.machine.cpus[1]
        seen.append((cpu.irq_enabled, cpu.preempt_count))
        ret, _ = seamldr_get_info(host.kernel)
        seen.append((ret, cpu.irq_enabled, cpu.preempt_count, host.kernel.seamldr_lock.holder))

    host.run_on(1, body)
    assert seen == [(True, 0), (0, True, 0, None)]


@pytest.mark.parametrize("kernel,irqs_on", [("v4", False), ("v10", True), ("merged", True)])
def test_interrupts_inside_the_pseamldr_per_profile(kernel, irqs_on):
    """v4 holds seamldr_lock with interrupts off; v5 on (merged too) with a plain raw spinlock."""
    host = EmulatedHost(2, seed=0, kernel=kernel)
    inside = []
    host.fw.fault_hook = lambda cpu, regs: inside.append((cpu.irq_enabled, host.kernel.seamldr_lock.holder is cpu))
    host.run_on(0, seamldr_get_info, host.kernel)
    assert inside == [(irqs_on, True)]


# ---- no-lock: callers meet inside the P-SEAMLDR ---------------------------------------------------------


def test_without_the_lock_calls_overlap_and_fail_with_enodev():
    host = EmulatedHost(16, seed=1, trace=False, mutations=frozenset({"no-lock"}))
    host.kernel.dmesg.clear()
    out = _storm(host, 30, seed=1)
    rets = [ret for _, _, ret in out]
    assert len(rets) == 16 * 30
    assert set(rets) == {0, -errno.ENODEV}  # VMfailInvalid, and only that
    assert rets.count(-errno.ENODEV) == host.fw.stats.seamldr_refused > 0
    assert host.fw.stats.max_seamldr_in_flight >= 2
    assert host.kernel.seamldr_lock.acquisitions == 0
    assert host.kernel.dmesg == []  # -ENODEV is not printed


def test_stress_no_lock_matches_the_storm():
    res, host = run_stress(8, 40, seed=3, unserialized=True)
    assert res.calls == 320 and res.failed > 0 and res.max_inside >= 2
    assert res.failed == res.refused
    res2, _ = run_stress(8, 40, seed=3)
    assert res2.failed == 0 and res2.max_inside == 1 and res2.refused == 0


# ---- no-irqsave: an interrupt on the holder ------------------------------------------------------------


def _irq_inside_pseamldr(mutations: frozenset[str], kernel: str = "v4"):
    """cpu0 calls SEAMLDR.INFO; while it is inside, an interrupt whose handler does the same arrives."""
    host = EmulatedHost(2, seed=4, mutations=mutations, kernel=kernel)
    m, k = host.machine, host.kernel
    rets: list[tuple[str, int]] = []

    def handler():
        rets.append(("irq-entry", k.seamldr_lock.holder))
        rets.append(("irq", seamldr_get_info(k)[0]))

    def hook(cpu, regs):
        if cpu.id == 0 and host.fw.stats.seamldr_calls == 1:
            m.irq.raise_irq(cpu, handler, name="seamldr-info-irq")
        return None

    host.fw.fault_hook = hook

    def task():
        rets.append(("task", seamldr_get_info(k)[0]))

    host.sched.spawn(m.cpus[0], task)
    dl = host.run()
    return host, rets, dl


def test_irq_during_call_with_irqsave_waits_for_unlock():
    host, rets, dl = _irq_inside_pseamldr(frozenset())
    assert dl is None
    # the handler ran once the task's call had dropped the lock and restored interrupts (the
    # restore is the delivery point, inside seamldr_call, so the task's result is recorded last)
    assert rets == [("irq-entry", None), ("irq", 0), ("task", 0)]
    assert host.kernel.lockdep.reports == []
    assert host.fw.stats.max_seamldr_in_flight == 1


@pytest.mark.parametrize("kernel,mutations", [("v4", {"no-irqsave"}), ("merged", set()), ("v10", set())])
def test_irq_during_call_without_irqsave_is_reported_and_deadlocks(kernel, mutations):
    """v4 without its irqsave, and the later postings by design: an interrupt handler calling the
    P-SEAMLDR on the holder's CPU spins forever (which is why no interrupt path may call it)."""
    host, rets, dl = _irq_inside_pseamldr(frozenset(mutations), kernel)
    assert rets == [("irq-entry", host.machine.cpus[0])]  # it came in with the lock held; nothing completed
    assert dl is not None
    assert [(w.cpu, w.what, w.holder) for w in dl.waiting] == [(0, "seamldr_lock", 0)]
    assert "cpu0 waits for seamldr_lock (held by itself)" in dl.describe()
    kinds = sorted(r.kind for r in host.kernel.lockdep.reports)
    assert kinds == ["irq-inversion", "recursion"]
    for r in host.kernel.lockdep.reports:
        assert r.lock == "seamldr_lock" and "cpu0" in r.message and "(seamldr_get_info)" in r.message


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_stress_no_irqsave_with_irq_calls_is_caught(seed):
    res, _host = run_stress(8, 60, seed=seed, irq_calls=True, no_irqsave=True, kernel="v4")
    kinds = {r["kind"] for r in res.lock_reports}
    assert "irq-inversion" in kinds or res.deadlock
    if res.deadlock:
        assert "(held by itself)" in res.deadlock_report


def test_stress_no_irqsave_without_irq_calls_is_quiet():
    """Without interrupt-context callers, leaving interrupts on is harmless (the merged design)."""
    res, _ = run_stress(8, 40, seed=1, no_irqsave=True)
    assert res.failed == 0 and not res.deadlock and res.lock_reports == []


# ---- erratum, get_info ----------------------------------------------------------------------------------


def test_erratum_cpu_gets_einval_and_a_warning():
    host = EmulatedHost(2, seed=0, erratum=True)
    host.kernel.dmesg.clear()
    ret, info = host.run_on(1, seamldr_get_info, host.kernel)
    assert (ret, info) == (-errno.EINVAL, None)
    assert host.kernel.warnings == 1
    lines = [line.text for line in host.kernel.dmesg]
    assert len(lines) == 1 and lines[0].startswith("WARNING: ") and "cpu1" in lines[0]
    assert "seamret_invd_vmcs" in lines[0]
    assert host.fw.stats.seamldr_calls == 0  # the P-SEAMLDR was never entered
    assert host.kernel.seamldr_lock.acquisitions == 0


def test_erratum_applies_to_every_pseamldr_leaf():
    host = EmulatedHost(1, seed=0, erratum=True)
    ret = host.run_on(0, seamldr_call, host.kernel, SeamldrLeaf.P_SEAMLDR_INSTALL, Regs(rcx=0x1000))
    assert ret == -errno.EINVAL and host.kernel.warnings == 1


@pytest.mark.parametrize("build,expected", [
    (None, "1.5.00"),
    (SeamldrBuild(major=1, minor=5, update=8), "1.5.08"),
    (SeamldrBuild(major=2, minor=0, update=3), "2.0.03"),
    (SeamldrBuild(major=1, minor=5, update=12), "1.5.12"),
])
def test_get_info_version_str(build, expected):
    host = EmulatedHost(2, seed=0, seamldr=build)
    ret, info = host.run_on(0, seamldr_get_info, host.kernel)
    assert ret == 0
    assert info.version_str == expected
    assert info.vendor_id == 0x8086
    assert info.num_remaining_updates == host.pseamldr.num_remaining_updates


def test_get_info_buffer_is_on_this_cpus_stack():
    host = EmulatedHost(2, seed=0)
    pas = []
    host.fw.fault_hook = lambda cpu, regs: pas.append((cpu.id, regs.rcx))
    host.run_on(1, seamldr_get_info, host.kernel)
    assert pas == [(1, host.kernel.percpu[1].stack_pa)]
    assert pas[0][1] % 256 == 0


@pytest.mark.parametrize("kernel", ["v4", "merged"])
def test_nmi_on_the_holder_is_taken_inside_the_locked_section(kernel):
    """An NMI ignores the interrupt flag: it lands while cpu0 holds seamldr_lock (v4: with
    interrupts off), runs (taking no lock), and the P-SEAMLDR call completes."""
    host = EmulatedHost(2, seed=4, kernel=kernel)
    m, k = host.machine, host.kernel
    seen: list = []

    def nmi():
        seen.append(("nmi", k.seamldr_lock.holder is m.cpus[0], m.cpus[0].irq_enabled))

    def hook(cpu, regs):
        if cpu.id == 0 and not seen:
            m.irq.raise_nmi(cpu, nmi)
        return None

    host.fw.fault_hook = hook
    t = host.sched.spawn(m.cpus[0], lambda: seen.append(("task", seamldr_get_info(k)[0])))
    assert host.run() is None and t.done
    assert seen == [("nmi", True, kernel == "merged"), ("task", 0)]
    assert k.lockdep.reports == []
