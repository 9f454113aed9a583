"""Kernel profiles (merged, v10, v4): one table of switches, and the behaviours that differ."""

from __future__ import annotations

import dataclasses
import errno
from pathlib import Path

import pytest

from tdxseam.host import EmulatedHost
from tdxseam.kernel.cpu_hotplug import cpu_down, cpu_up
from tdxseam.kernel.kvm_tdx import kvm_tdx, tdx_td_create
from tdxseam.kernel.profile import PROFILE_NAMES, PROFILES, KernelProfile, get_profile

ROOT = Path(__file__).resolve().parents[1]
SWITCHES = [f.name for f in dataclasses.fields(KernelProfile) if f.name not in ("name", "description")]


def test_default_is_merged_and_unknown_names_are_refused():
    assert get_profile(None).name == "merged"
    assert EmulatedHost(1, trace=False).kernel.profile is PROFILES["merged"]
    with pytest.raises(ValueError, match="unknown kernel profile 'v7'"):
        get_profile("v7")


def test_every_switch_differs_somewhere_and_is_documented():
    docs = (ROOT / "docs" / "simulation.md").read_text() + (ROOT / "README.md").read_text()
    for name in SWITCHES:
        values = {getattr(PROFILES[p], name) for p in PROFILE_NAMES}
        assert len(values) > 1, f"{name} is the same in every profile: not a switch"
        assert f"`{name}`" in docs, f"{name} is not documented"


def test_every_switch_is_read_by_kernel_code_and_nowhere_the_profile_name():
    src = "".join(p.read_text() for p in (ROOT / "src" / "tdxseam" / "kernel").glob("*.py")
                  if p.name != "profile.py")
    for name in SWITCHES:
        assert f"profile.{name}" in src, name
    assert "profile.name ==" not in src


def _two_package_host(kernel: str, tds: int) -> EmulatedHost:
    h = EmulatedHost(4, sockets=2, kernel=kernel, trace=False)  # package 0: cpu0-1, package 1: cpu2-3
    for i in range(tds):
        h.run_on(0, lambda i=i: tdx_td_create(h.kernel, seed=i))
    assert len(kvm_tdx(h.kernel).tds) == tds
    return h


@pytest.mark.parametrize("kernel", PROFILE_NAMES)
def test_last_cpu_of_a_package_stays_online_while_keyids_are_in_use(kernel):
    h = _two_package_host(kernel, tds=1)
    k = h.kernel
    assert h.run_on(1, cpu_down, k, 3) == 0  # cpu2 still holds package 1
    assert h.run_on(1, cpu_down, k, 2) == -errno.EBUSY
    assert h.machine.cpus[2].online and not h.machine.cpus[3].online
    assert "TDX requires all packages to have an online CPU" in k.dmesg_text()
    assert h.run_on(1, cpu_up, k, 3) == 0
    assert h.run_on(1, cpu_down, k, 2) == 0  # cpu3 is back: cpu2 is no longer the last


@pytest.mark.parametrize("kernel", PROFILE_NAMES)
def test_without_tds_a_whole_package_may_go_offline(kernel):
    h = _two_package_host(kernel, tds=0)
    assert h.run_on(1, cpu_down, h.kernel, 3) == 0
    assert h.run_on(1, cpu_down, h.kernel, 2) == 0
    assert h.run_on(1, cpu_up, h.kernel, 2) == 0


def test_a_failed_build_gives_its_keyid_back():
    h = _two_package_host("merged", tds=0)
    h.machine.num_private_hkids = 0  # the build fails before it allocates anything
    ret, _ = h.run_on(0, tdx_td_create, h.kernel)
    assert ret == -errno.ENOSPC and not kvm_tdx(h.kernel).keyids
    assert h.run_on(1, cpu_down, h.kernel, 3) == 0 and h.run_on(1, cpu_down, h.kernel, 2) == 0


def test_a_busy_cpu_going_offline_hands_its_tasks_to_an_online_cpu_of_its_package():
    from tdxseam.kernel.seamldr import seamldr_get_info
    from tdxseam.platform.sched import WaitQueue

    h = _two_package_host("merged", tds=0)
    k, m = h.kernel, h.machine
    wq = WaitQueue(m.sched, "test")
    go: list[bool] = []
    ran_on: list[int] = []

    def reader() -> None:  # sleeps on cpu3, wakes after cpu3 went offline
        m.current_cpu().sleep_until(wq, lambda: bool(go), "test: go")
        ret, _ = seamldr_get_info(k)
        ran_on.append((m.current_cpu().id, ret))

    t = m.sched.spawn(m.cpus[3], reader, name="reader")

    def hotplug() -> None:
        assert cpu_down(k, 3) == 0
        go.append(True)
        wq.notify_all()

    m.sched.spawn(m.cpus[1], hotplug)
    assert h.run() is None and t.done
    assert ran_on == [(2, 0)]  # cpu2: the other CPU of package 1, online
    assert not m.cpus[3].online and t.cpu is m.cpus[2]
