"""A crash during the update's lockstep, then a reboot or a kexec: what comes back, what survives.

A platform reset clears SEAMRR: the BIOS loads its boot module again and the SEAMDB starts afresh,
so `num_remaining_updates` is the boot value (capacity - 1) whatever the crashed update did. A
kexec keeps SEAM as it was: the module, initialised or lost, and the SEAMDB with its count.
"""

from __future__ import annotations

import pytest

from tdxseam.formats.version import ModuleVersion
from tdxseam.host import DeclaredModule, EmulatedHost
from tdxseam.kernel.kvm_tdx import tdx_td_create, tdx_vcpu_run
from tdxseam.kernel.seamldr import ModuleUpdateState as S
from tdxseam.kernel.seamldr import seamldr_get_info, seamldr_install_module
from tdxseam.kernel.tdx_host import tdx_host_init
from tdxseam.seam.pseamldr import SeamldrBuild
from tdxseam.sim.runner import update_image

CAP = 8  # SEAMDB entries: 7 updates left after boot
CPUS = 4


def _host(kernel: str = "merged") -> EmulatedHost:
    h = EmulatedHost(CPUS, seed=3, trace=False, kernel=kernel, module=DeclaredModule(ModuleVersion(1, 5, 6)),
                     seamldr=SeamldrBuild(seamdb_capacity=CAP))
    h.run_on(1, lambda: tdx_td_create(h.kernel, seed=1))
    return h


def _remaining(h: EmulatedHost) -> int:
    ret, info = h.run_on(0, seamldr_get_info, h.kernel)
    assert ret == 0
    return info.num_remaining_updates


def _healthy(h: EmulatedHost) -> str:
    """The host has a usable module: version readable, a new TD builds and runs."""
    dev = tdx_host_init(h.kernel)
    v = h.run_on(0, dev.version_show)
    assert isinstance(v, str), v

    def td() -> int:
        ret, t = tdx_td_create(h.kernel, seed=7)
        return ret or tdx_vcpu_run(h.kernel, t)

    assert h.run_on(2, td) == 0
    return v.strip()


def _crash_in(h: EmulatedHost, state: int, installs: int = 0) -> None:
    """Start an update and crash the kernel the first time the lockstep's shared state is
    `state` (and, in CPU_INSTALL, after `installs` CPUs have installed)."""
    k = h.kernel
    h.sched.spawn(h.machine.cpus[0], seamldr_install_module, k, update_image("1.5.08"))

    def at_crash_point() -> bool:
        ctrl = getattr(k, "last_update_ctrl", None)
        if ctrl is None or ctrl.state != state:
            return False
        done = sum(1 for (_c, st, ev, _r) in ctrl.log if ev == "done" and st == S.MODULE_UPDATE_CPU_INSTALL)
        return state != S.MODULE_UPDATE_CPU_INSTALL or done >= installs

    while not at_crash_point():
        h.sched.run(slice_steps=1)
        assert h.sched.paused, "the update ended before the crash point"
    h.crash()


POINTS = [(S.MODULE_UPDATE_SHUTDOWN, 0), (S.MODULE_UPDATE_CPU_INSTALL, 0), (S.MODULE_UPDATE_CPU_INSTALL, 1),
          (S.MODULE_UPDATE_CPU_INSTALL, CPUS - 1), (S.MODULE_UPDATE_CPU_INIT, 0),
          (S.MODULE_UPDATE_RUN_UPDATE, 0), (S.MODULE_UPDATE_DONE, 0)]


@pytest.mark.parametrize("kernel", ["merged", "v4"])
@pytest.mark.parametrize("state,installs", POINTS, ids=[f"{S(s).name}-{n}" for s, n in POINTS])
def test_crash_in_the_lockstep_then_reboot_comes_back_with_the_boot_module(kernel, state, installs):
    h = _host(kernel)
    assert _remaining(h) == CAP - 1
    _crash_in(h, state, installs)
    h2 = h.reboot()
    assert h2.fw.module is not None and h2.fw.module.ready
    assert _healthy(h2) == "1.5.06"  # the BIOS's module, not what the update was installing
    assert _remaining(h2) == CAP - 1  # a fresh SEAMDB: the boot value again
    assert h2.fw.seamdb.remaining() == CAP - 1


def test_kexec_after_an_update_keeps_the_seamdb_and_the_module():
    h = _host()
    dev = tdx_host_init(h.kernel)

    assert h.run_on(0, seamldr_install_module, h.kernel, update_image("1.5.08")) == 0
    assert _remaining(h) == CAP - 2
    ret = h.kexec()
    # the new kernel finds a module already initialised: TDH.SYS.INIT refuses, TDX stays off
    assert ret != 0 and h.tdx_error == ret
    assert h.fw.module.ready and str(h.fw.module.build.version) == "1.5.08"  # SEAM kept it
    assert h.fw.seamdb.remaining() == CAP - 2  # the SEAMDB survives: no updates given back
    assert dev is not None
    # a reboot, by contrast, gives the updates back and the BIOS's module
    h2 = h.reboot()
    assert _healthy(h2) == "1.5.06" and _remaining(h2) == CAP - 1


def test_kexec_after_a_crash_mid_install_finds_no_usable_module():
    h = _host()
    _crash_in(h, S.MODULE_UPDATE_CPU_INSTALL, 1)
    assert h.kexec() != 0  # the old module is shut down, the new one half installed
    assert not (h.fw.module is not None and h.fw.module.ready and h.fw.seamextend.seam_ready)
    h2 = h.reboot()
    assert _healthy(h2) == "1.5.06" and _remaining(h2) == CAP - 1
