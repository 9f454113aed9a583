"""`--firmware real`: the kernel boots and updates Intel's binaries; the P-SEAMLDR stays the model."""

from __future__ import annotations

import pytest

pytest.importorskip("unicorn")
pytest.importorskip("capstone")

from _real_support import real_host, v2_image  # noqa: E402

from tdxseam.demo import run_demo  # noqa: E402
from tdxseam.formats.leaves import TdxLeaf  # noqa: E402
from tdxseam.kernel.seamldr import seamldr_install_module  # noqa: E402
from tdxseam.kernel.tdx import tdx_get_sysinfo  # noqa: E402
from tdxseam.seam.layout import HandoffHeader  # noqa: E402
from tdxseam.seam.real.module import RealModule  # noqa: E402


@pytest.mark.parametrize("pair", [("1.5.06", "1.5.13"), ("2.0.04", "2.0.05")])
@pytest.mark.parametrize("cpus", [4, 8])
def test_demo_real_firmware_updates(intel_dir, pair, cpus):
    r = run_demo(cpus=cpus, tds=0, from_=pair[0], to=pair[1], catalog=str(intel_dir), firmware="real")
    assert r.ok, r.error
    assert (r.version_before, r.version_after) == pair
    assert r.remaining_updates_after == r.remaining_updates_before - 1


def test_boot_runs_the_kernel_sequence_on_intels_code(intel_dir):
    host = real_host(intel_dir, "1.5.06", cpus=4)
    mod = host.fw.module
    assert isinstance(mod, RealModule) and mod.engine is not None
    leaves = [(leaf, cpu, rax) for leaf, cpu, rax in mod.calls]
    assert leaves[0][0] == TdxLeaf.TDH_SYS_INIT and leaves[0][2] == 0  # on whichever CPU came first
    assert sorted(cpu for leaf, cpu, _ in leaves if leaf == TdxLeaf.TDH_SYS_LP_INIT) == [0, 1, 2, 3]
    for leaf in (TdxLeaf.TDH_SYS_CONFIG, TdxLeaf.TDH_SYS_KEY_CONFIG, TdxLeaf.TDH_SYS_TDMR_INIT):
        assert (leaf, 0, 0) in leaves
    assert all(rax == 0 for _, _, rax in leaves)
    assert mod.engine.pconfigs  # KEY.CONFIG programmed the global key through PCONFIG
    assert str(tdx_get_sysinfo(host.kernel).version) == "1.5.06"


def test_update_hands_off_through_intels_shutdown_and_update(intel_dir):
    host = real_host(intel_dir, "1.5.06", cpus=4)
    old = host.fw.module
    ret = host.run_on(0, seamldr_install_module, host.kernel, v2_image(intel_dir, "1.5.13"))
    assert ret == 0
    new = host.fw.module
    assert isinstance(new, RealModule) and new is not old
    assert (TdxLeaf.TDH_SYS_SHUTDOWN, 0, 0) in old.calls
    assert (TdxLeaf.TDH_SYS_UPDATE, 0, 0) in new.calls
    assert new.release == "1.5.13"  # what the new binary answered to SYS.RD
    # old's SHUTDOWN wrote the handoff header (53,386 bytes of payload on 1.5); new's UPDATE
    # consumed it and cleared the valid bit
    hdr = HandoffHeader.from_bytes(host.machine.mem.read(new.layout.handoff_pa, 8))
    assert hdr.valid == 0
    assert str(tdx_get_sysinfo(host.kernel).version) == "1.5.13"


def test_without_the_handoff_pages_intels_update_refuses(intel_dir):
    """Control: the P-SEAMLDR model's keeping of the handoff pages is what B's UPDATE relies on."""
    host = real_host(intel_dir, "1.5.06", cpus=4)
    fw = host.fw
    keep_range = fw.zero_module_range

    def zero_all(keep=None):  # a loader that forgets to keep the handoff pages
        keep_range(None)

    fw.zero_module_range = zero_all
    ret = host.run_on(0, seamldr_install_module, host.kernel, v2_image(intel_dir, "1.5.13"))
    assert ret != 0
    assert (TdxLeaf.TDH_SYS_UPDATE, 0, 0xC000_0509_0000_0000) in fw.module.calls  # TDX_SYS_INVALID_HANDOFF


@pytest.mark.parametrize("firmware", ["real", "model"])
def test_handoff_version_above_module_hv_fails_update_and_the_module_is_lost(intel_dir, firmware):
    """Fault switch: the header's hv raised after the P-SEAMLDR checked it. Intel's UPDATE (and the
    model's) refuse with TDX_SYS_INVALID_HANDOFF; Linux ends with no module (spec-linux §5.7):
    `version` reads -ENXIO, the upload's error file reads firmware-invalid."""
    import errno

    from tdxseam.kernel.tdx_host import tdx_host_init

    host = real_host(intel_dir, "1.5.06", cpus=4, firmware=firmware)
    dev = tdx_host_init(host.kernel)
    host.fw.handoff_hv_raise = 1
    fwu = dev.fw_upload

    def upload() -> None:
        fwu.loading_store("1\n")
        fwu.data_write(0, v2_image(intel_dir, "1.5.13"))
        fwu.loading_store("0\n")

    host.run_on(0, upload)
    host.run()
    assert fwu.error_show().strip() == "transferring:firmware-invalid"
    assert host.run_on(0, dev.version_show) == -errno.ENXIO
    failures = host.kernel.seamcall_failures
    assert failures and failures[-1][1] == 0xC000_0509_0000_0000  # TDX_SYS_INVALID_HANDOFF
    if firmware == "real":
        assert host.fw.module.calls[-1] == (TdxLeaf.TDH_SYS_UPDATE, 0, 0xC000_0509_0000_0000)


def test_a_td_created_on_the_old_binary_is_known_to_the_new_one(intel_dir):
    """As far as TDs go under the real module: TDH.MNG.CREATE on 1.5.06 (its PAMT initialised by
    TDH.SYS.TDMR.INIT up to the TDR page), update, and 1.5.13 reads the page as a TDR, refuses the
    same HKID for a new TD, and configures the TD's key. The PAMT crossed over in host memory."""
    from tdxseam.kernel.tdx import tdx_of
    from tdxseam.platform.cpu import Regs

    host = real_host(intel_dir, "1.5.06", cpus=4)
    old, cpu, mem = host.fw.module, host.machine.cpus[0], host.machine.mem
    tdmr = tdx_of(host.kernel).tdmrs[0]
    tdr = mem.alloc_contig(1)

    def call(mod, leaf: int, **kw) -> Regs:
        regs = Regs(rax=leaf, **kw)
        mod.dispatch(cpu, regs)
        return regs

    nxt = tdmr.base
    while nxt <= tdr:
        r = call(old, TdxLeaf.TDH_SYS_TDMR_INIT, rcx=tdmr.base)
        assert r.rax == 0
        nxt = r.rdx
    hkid = 2  # the global KeyID is 1
    assert call(old, TdxLeaf.TDH_MNG_CREATE, rcx=tdr, rdx=hkid).rax == 0
    PHYMEM_PAGE_RDMD, TDH_MNG_KEY_CONFIG, PT_TDR = 24, 8, 4
    assert (call(old, PHYMEM_PAGE_RDMD, rcx=tdr).rcx) == PT_TDR

    assert host.run_on(0, seamldr_install_module, host.kernel, v2_image(intel_dir, "1.5.13")) == 0
    new = host.fw.module
    r = call(new, PHYMEM_PAGE_RDMD, rcx=tdr)
    assert (r.rax, r.rcx) == (0, PT_TDR)
    assert call(new, TdxLeaf.TDH_MNG_CREATE, rcx=mem.alloc_contig(1), rdx=hkid).rax == 0xC000_0820_0000_0000
    assert call(new, TDH_MNG_KEY_CONFIG, rcx=tdr).rax == 0
    assert new.engine.pconfigs[-1][1] == hkid
