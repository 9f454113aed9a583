"""The runtime update through the kernel: real releases, rejections, and every fault position.

Outcomes follow spec-linux.md §5.7: a failure before TDH.SYS.SHUTDOWN leaves the old module
running with its TDs; a failure at or after the install leaves no usable module (version reads
ENXIO) and the TDs are gone; a P-SEAMLDR failure is still reported as recoverable (RDX = 0,
SEAMEXTEND restored) or not (RDX = 1, SEAMEXTEND zeroed), as the firmware spec gives.
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, replace

import pytest

from tdxseam.demo import run_demo
from tdxseam.formats.image import build_v2, v1_to_v2
from tdxseam.formats.leaves import SeamldrLeaf, TdxLeaf
from tdxseam.formats.seamldr_params import SeamldrParams
from tdxseam.formats.status import SeamldrStatus, TdxStatus
from tdxseam.formats.metadata import TDX_FEATURES0_UPDATE_COMPAT
from tdxseam.formats.testsign import DEFAULT_FEATURES0, make_image, make_module
from tdxseam.formats.version import ModuleVersion
from tdxseam.host import DeclaredModule, EmulatedHost
from tdxseam.kernel.kvm_tdx import kvm_tdx, tdx_td_create, tdx_vcpu_run
from tdxseam.kernel.seamldr import ModuleUpdateState, seamldr_install_module
from tdxseam.kernel.tdx import tdx_get_sysinfo
from tdxseam.kernel.tdx_host import tdx_host_init
from tdxseam.seam.faults import FaultPlan, install_fault_plan
from tdxseam.seam.pseamldr import SeamldrBuild
from tdxseam.platform.cpu import Regs
from tdxseam.seam.td import compare_tds, td_snapshot

OLD, NEW = "1.5.06", "1.5.08"


@dataclass
class Outcome:
    ret: int
    version: str | None  # None: tdx_get_sysinfo() is NULL (the version file gives ENXIO)
    td_problems: list[str]
    tds: int
    seamextend_ready: int
    mrseam_zero: bool
    failures: list[tuple[int, int]]
    warnings: int


def booted(cpus: int = 4, *, tds: int = 2, compat: bool | None = None, **kw) -> EmulatedHost:
    """A host on OLD with `tds` TDs; `compat`: the module offers Update Compatibility (bit 47),
    which a v10 kernel needs (it always asks TDH.SYS.SHUTDOWN to avoid compat-sensitive work)."""
    kw.setdefault("trace", False)
    if compat is None:
        compat = kw.get("kernel") == "v10"
    mod = DeclaredModule(ModuleVersion.parse(OLD))
    if compat:
        mod = replace(mod, features0=mod.features0 | TDX_FEATURES0_UPDATE_COMPAT)
    h = EmulatedHost(cpus, module=mod, **kw)
    for i in range(tds):
        h.sched.spawn(h.machine.cpus[i % cpus], lambda i=i: tdx_td_create(h.kernel, nr_vcpus=1, nr_pages=2, seed=i))
    h.run()
    assert len(kvm_tdx(h.kernel).tds) == tds
    return h


def update(h: EmulatedHost, image: bytes, plan: FaultPlan | None = None, *, pre=None) -> Outcome:
    k = h.kernel
    before = td_snapshot(h.fw)
    install_fault_plan(h.fw, plan)
    if pre is not None:
        h.fw.fault_hook = pre
    k.seamcall_failures.clear()
    warnings = k.warnings
    dl = None
    t = h.sched.spawn(h.machine.cpus[0], seamldr_install_module, k, image)
    dl = h.run()
    assert dl is None, dl.describe()
    assert t.done
    install_fault_plan(h.fw, None)
    sysinfo = tdx_get_sysinfo(k)
    ext = h.fw.seamextend
    return Outcome(t.result, str(sysinfo.version) if sysinfo else None,
                   compare_tds(before, td_snapshot(h.fw)), len(before), ext.seam_ready,
                   not any(ext.mrseam), list(k.seamcall_failures), k.warnings - warnings)


def assert_no_cpu_left(h: EmulatedHost) -> None:
    """Every stopper finished: nothing parked, nothing runnable."""
    assert all(c.task is None for c in h.machine.cpus)
    ctrl = h.kernel.last_update_ctrl
    leavers = {cpu for cpu, _state, ev, _ret in ctrl.log if ev == "done"}
    assert leavers == {c.id for c in h.machine.cpus}


# ---- success ------------------------------------------------------------------------------------


def test_synthetic_update_preserves_tds_and_counts_down():
    h = booted(4, tds=3)
    rem0 = h.pseamldr.num_remaining_updates
    out = update(h, make_image(NEW))
    assert out.ret == 0 and out.version == NEW and out.td_problems == [] and out.tds == 3
    assert h.pseamldr.num_remaining_updates == rem0 - 1
    assert_no_cpu_left(h)
    # the TDs still run on the new module
    for td in kvm_tdx(h.kernel).tds:
        assert h.run_on(1, tdx_vcpu_run, h.kernel, td) == 0


@pytest.mark.parametrize("cpus", [8, 256])
@pytest.mark.parametrize("pair", [("1.5.06", "1.5.13"), ("2.0.04", "2.0.05")])
def test_real_intel_releases(intel_dir, cpus, pair):
    r = run_demo(cpus=cpus, tds=3, from_=pair[0], to=pair[1], catalog=str(intel_dir))
    assert r.ok, r.error
    assert (r.version_before, r.version_after) == pair
    assert r.tds_preserved == r.tds_before == 3 and r.td_runs_after == 3
    assert r.remaining_updates_after == r.remaining_updates_before - 1


# ---- rejections, each with its own status -----------------------------------------------------


def flip(data: bytes, offset: int, bit: int = 0) -> bytes:
    b = bytearray(data)
    b[offset] ^= 1 << bit
    return bytes(b)


SIG = 4096  # the sigstruct page in a v2 image
MOD = 8192  # the first module page


def test_header_bit_flip_is_refused_before_anything_runs():
    h = booted()
    for off in (0, 5, 12, 100):  # version, magic, page count, reserved
        out = update(h, flip(make_image(NEW), off))
        assert out.ret == -errno.EINVAL
        assert out.version == OLD and out.td_problems == [] and out.failures == []
    assert not hasattr(h.kernel, "last_update_ctrl")  # the lockstep never started


def _lost_after(out: Outcome, status: int) -> None:
    assert out.ret == -errno.EIO
    assert out.failures and out.failures[-1][1] == status, [hex(s) for _l, s in out.failures]
    assert out.version is None  # shut down before the install: no usable module
    assert len(out.td_problems) == out.tds


def test_signature_bit_flip_ebadsig_recoverable():
    h = booted()
    out = update(h, flip(make_image(NEW), SIG + 0x204 + 7))
    _lost_after(out, SeamldrStatus.EBADSIG)
    # recoverable: SEAMEXTEND restored (the old identity), but the old module was already shut down
    assert out.seamextend_ready == 1 and not out.mrseam_zero
    assert h.pseamldr.last_install.rdx == 0


def test_module_bit_flip_ebadhash_unrecoverable():
    h = booted()
    out = update(h, flip(make_image(NEW), MOD + 4096 + 17, 3))
    _lost_after(out, SeamldrStatus.EBADHASH)
    assert out.seamextend_ready == 0 and out.mrseam_zero
    assert h.pseamldr.last_install.rdx == 1


def test_page_list_bit_flip_is_caught():
    """Corrupt the first module page PA in seamldr_params as the last INSTALL reads it."""
    h = booted()
    n = [0]

    def corrupt(cpu, regs):
        if regs.rax == SeamldrLeaf.P_SEAMLDR_INSTALL:
            n[0] += 1
            if n[0] == h.machine.ncpus:  # the last LP performs the load
                mem = h.machine.mem
                raw = mem.read(regs.rcx, 4096)
                p = SeamldrParams.from_bytes(raw)
                p.module_pages_pa[0] ^= 1 << 12  # another page: the hash cannot match
                mem.write(regs.rcx, p.to_bytes())
        return None

    out = update(h, make_image(NEW), pre=corrupt)
    _lost_after(out, SeamldrStatus.EBADHASH)


@pytest.mark.parametrize("kind,status", [
    ("debug", SeamldrStatus.EBADSIG),
    ("other-cpu", SeamldrStatus.EUNSUPCPU),
    ("lower-svn", SeamldrStatus.EBADSIG),
    ("major-svn", SeamldrStatus.EUNSUPPORTED),
])
def test_policy_rejections(kind, status):
    h = booted()
    kw = {"debug": {"debug": True}, "other-cpu": {"cpuids": (0xA06D0,)},
          "lower-svn": {"svn": (1, 2)}, "major-svn": {"svn": (2, 8)}}[kind]
    out = update(h, build_v2(*make_module(NEW, **kw)))
    _lost_after(out, status)


def test_empty_seamdb_log_ebadcall():
    h = booted(seamldr=SeamldrBuild(seamdb_capacity=1))  # the boot LOAD used the only entry
    assert h.pseamldr.num_remaining_updates == 0
    out = update(h, make_image(NEW))
    _lost_after(out, SeamldrStatus.EBADCALL)
    assert h.pseamldr.last_install.rdx == 0


def test_td_build_in_flight_refuses_the_update():
    h = booted(tds=0, kernel="v4")  # the kernel gate
    k = h.kernel
    assert kvm_tdx(k).build_lock.build_begin()  # a build is between its SEAMCALLs
    out = update(h, make_image(NEW))
    assert out.ret == -errno.EBUSY and out.version == OLD and out.failures == []
    kvm_tdx(k).build_lock.build_end()


def _half_built_td(h: EmulatedHost) -> None:
    """A TD past TDH.MNG.INIT and not finalized: its build is in flight on the SEAM side."""
    from tdxseam.kernel.seamcall import seamcall

    def body() -> None:
        k, mem = h.kernel, h.machine.mem
        tdr = mem.alloc_page()
        assert seamcall(k, TdxLeaf.TDH_MNG_CREATE, Regs(rcx=tdr, rdx=60)) == 0
        params = mem.alloc_page()
        mem.write(params + 16, (1).to_bytes(2, "little"))
        assert seamcall(k, TdxLeaf.TDH_MNG_INIT, Regs(rcx=tdr, rdx=params)) == 0

    h.run_on(1, body)
    assert h.fw.module.tds.any_in_build()


@pytest.mark.parametrize("kernel,ret,version", [
    ("v10", -errno.EBUSY, OLD),  # the module refuses: TDX_UPDATE_COMPAT_SENSITIVE
    ("merged", 0, NEW),  # no guard at all: the update goes through (userspace must avoid this)
    ("v4", -errno.EBUSY, OLD),  # tdxseam's kernel gate: KVM holds it for the build
])
def test_update_during_td_build_per_profile(kernel, ret, version):
    h = booted(tds=1, kernel=kernel, compat=True)
    _half_built_td(h)
    assert kvm_tdx(h.kernel).build_lock.build_begin()  # and KVM is between the build's ioctls
    out = update(h, make_image(NEW, features0=DEFAULT_FEATURES0 | TDX_FEATURES0_UPDATE_COMPAT))
    assert (out.ret, out.version) == (ret, version), out
    assert out.td_problems == [] if ret else True
    if kernel == "v10":
        # asked with RCX bit 16, answered silently (no log line), nothing lost
        assert h.kernel.dmesg_text().count("SEAMCALL") == 0 and h.fw.module.ready


def test_v10_shutdown_flag_is_rejected_by_a_module_without_update_compat():
    h = booted(tds=0, kernel="v10", compat=False)
    out = update(h, make_image(NEW))
    assert out.ret == -errno.EIO and out.version == OLD
    assert "virt/tdx: SEAMCALL (0x0000000000000034) failed" in h.kernel.dmesg_text()


# ---- every fault position ------------------------------------------------------------------------


def fault_points(cpus: int) -> list[tuple[str, int, int | None, int]]:
    """(label, leaf, cpu, nth) for every SEAMCALL the update makes, in lockstep order."""
    pts = [("RD(MODULE_HV)", TdxLeaf.TDH_SYS_RD, 0, 1), ("SHUTDOWN", TdxLeaf.TDH_SYS_SHUTDOWN, 0, 1)]
    pts += [(f"INSTALL@cpu{c}", SeamldrLeaf.P_SEAMLDR_INSTALL, c, 1) for c in range(cpus)]
    pts.append(("SYS.INIT", TdxLeaf.TDH_SYS_INIT, None, 1))
    pts += [(f"LP.INIT@cpu{c}", TdxLeaf.TDH_SYS_LP_INIT, c, 1) for c in range(cpus)]
    pts.append(("SYS.UPDATE", TdxLeaf.TDH_SYS_UPDATE, 0, 1))
    pts += [(f"RD(version)#{i}", TdxLeaf.TDH_SYS_RD, 0, i) for i in (2, 3, 4)]
    return pts


STATUS = {"status": TdxStatus.TDX_OPERAND_INVALID, "vmfailinvalid": "vmfailinvalid"}


@pytest.mark.parametrize("cpus,kernel", [(1, "merged"), (2, "merged"), (4, "merged"), (8, "merged"),
                                         (2, "v10"), (2, "v4")])
@pytest.mark.parametrize("kind", ["status", "vmfailinvalid"])
def test_fault_at_every_step_and_cpu(cpus, kernel, kind):
    image = make_image(NEW, features0=DEFAULT_FEATURES0 | TDX_FEATURES0_UPDATE_COMPAT)
    for label, leaf, cpu, nth in fault_points(cpus):
        h = booted(cpus, tds=2, seed=cpus * 7 + nth, kernel=kernel)
        status = STATUS[kind]
        if leaf == SeamldrLeaf.P_SEAMLDR_INSTALL and kind == "status":
            status = SeamldrStatus.EBADPARAM
        out = update(h, image, FaultPlan().add(leaf, status, cpu=cpu, nth=nth))
        assert_no_cpu_left(h)
        ctx = f"{cpus} CPUs, fault {kind} at {label}: {out}"
        if label == "RD(MODULE_HV)" and kernel == "merged":
            # merged: handoff information is required for a proper shutdown; it refuses
            assert out.ret != 0 and out.version == OLD and out.td_problems == [] and out.warnings == 0, ctx
            assert h.fw.module.ready and out.seamextend_ready, ctx
        elif label == "RD(MODULE_HV)":
            # v10 (and v4): a failed handoff-version read only WARNs; the update goes on with version 0
            assert out.ret == 0 and out.version == NEW and out.td_problems == [] and out.warnings == 1, ctx
        elif label == "SHUTDOWN":
            assert out.ret != 0 and out.version == OLD and out.td_problems == [], ctx
        elif label.startswith("RD(version)"):
            # the new module runs and keeps the TDs; the stale version is only WARNed about
            assert out.ret == 0 and out.version == OLD and out.td_problems == [] and out.warnings == 1, ctx
        else:
            assert out.ret != 0, ctx
            assert out.version is None, ctx  # after shutdown: no usable module, version ENXIO
            assert len(out.td_problems) == out.tds, ctx
        # the lockstep never went past the failing state
        ctrl = h.kernel.last_update_ctrl
        if out.ret:
            assert ctrl.num_failed >= 1 and ctrl.state < ModuleUpdateState.MODULE_UPDATE_DONE, ctx


def test_fw_upload_reports_failures_as_firmware_invalid():
    h = booted()
    dev = tdx_host_init(h.kernel)
    fw = dev.fw_upload

    def upload(img: bytes) -> None:
        fw.loading_store("1")
        fw.data_write(0, img)
        fw.loading_store("0")

    h.run_on(0, upload, flip(make_image(NEW), 12))
    h.run()
    assert fw.error_show() == "transferring:firmware-invalid\n"
    assert fw.remaining_size_show() == f"{len(make_image(NEW))}\n"  # unchanged on failure
    assert h.run_on(0, dev.version_show) == f"{OLD}\n"
    h.run_on(0, upload, make_image(NEW))
    h.run()
    assert fw.error_show() == "" and fw.remaining_size_show() == "0\n"
    assert h.run_on(0, dev.version_show) == f"{NEW}\n"


def test_intel_v1_blob_is_refused_by_the_kernel_until_converted(intel_dir):
    blob = (intel_dir / "joined_files" / "1.5" / "tdx_module_1.5.08.blob").read_bytes()
    h = booted()
    out = update(h, blob)
    assert out.ret == -errno.EINVAL and out.version == OLD and out.td_problems == []
    # Intel's 1.5.08 is built for the CPUs in its table: boot one of them, from Intel's 1.5.06
    from tdxseam.formats.identity import identify_image

    old = intel_dir / "joined_files" / "1.5" / "tdx_module_1.5.06.blob"
    told = identify_image(blob, name="tdx_module_1.5.08.blob")  # what the files say it is
    h2 = EmulatedHost(4, module=old, trace=False, cpuid_1_eax=0x806F8, known_modules=[told])
    out = update(h2, v1_to_v2(blob))
    assert out.ret == 0 and out.version == "1.5.08"
