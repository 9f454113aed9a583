"""The kernel's file ABI, in-process: every file's text and mode, the fw_upload state machine
(spec-linux §5.2, §7.2), the tdx_host attributes (§7.1), errnos under abuse, permissions.

The runtime is inline here: each request first advances background kernel work by one slice, so
a status poll sees the same progress on every run.
"""

from __future__ import annotations

import errno
import os
import stat
import threading

import pytest

from tdxseam.formats import testsign
from tdxseam.formats.leaves import SeamldrLeaf, TdxLeaf
from tdxseam.formats.version import ModuleVersion
from tdxseam.host import DeclaredModule
from tdxseam.kernel.firmware_upload import FW_UPLOAD_BUFFER_LIMIT
from tdxseam.seam.faults import FaultPlan, install_fault_plan
from tdxseam.seam.td import compare_tds, td_snapshot
from tdxseam.sysfs import Emulation
from tdxseam.sysfs.tree import (
    CAP_SYS_RAWIO,
    CLASS_TDX_MODULE,
    PAGE_SIZE,
    TDX_HOST,
    TDX_MODULE,
    Cred,
    cpulist,
    decode_cpuid_1_eax,
)

NOBODY = Cred.user(65534)
ROOT = Cred.root()
FW = CLASS_TDX_MODULE
LARGEST_IMAGE = 4096 * (1 + 1 + 496)

_images: dict[str, bytes] = {}


def image(version: str = "1.5.08") -> bytes:
    if version not in _images:
        _images[version] = testsign.make_image(version)
    return _images[version]


def blob(version: str = "1.5.08") -> bytes:
    key = "blob-" + version
    if key not in _images:
        _images[key] = testsign.make_blob(version)
    return _images[key]


@pytest.fixture
def emu():
    e = Emulation(4, seed=3, slice_steps=8)
    yield e
    e.close()


def text(e: Emulation, path: str, cred: Cred = ROOT) -> str:
    return e.tree.read_text(path, cred)


def oserr(fn, *args, **kw) -> int:
    with pytest.raises(OSError) as ei:
        fn(*args, **kw)
    return ei.value.errno


def start_upload(e: Emulation, data: bytes) -> None:
    t = e.tree
    assert t.write_text(f"{FW}/loading", "1\n") == 2
    assert t.write_file(f"{FW}/data", data) == len(data)
    assert t.write_text(f"{FW}/loading", "0\n") == 2


def wait_idle(e: Emulation, limit: int = 10_000) -> list[str]:
    """Poll `status` as Intel's script does (without the sleeps): every status read in order."""
    seen = []
    for _ in range(limit):
        s = text(e, f"{FW}/status").strip()
        seen.append(s)
        if s == "idle":
            return seen
    raise AssertionError(f"status never returned to idle: {seen[-5:]}")


def remaining_updates(e: Emulation) -> int:
    return int(text(e, f"{TDX_HOST}/num_remaining_updates"))


def build_tds(e: Emulation, n: int) -> dict:
    """What QEMU/KVM does: build `n` TDs (kernel/kvm_tdx.py) and run each once; their snapshot."""
    from tdxseam.kernel.kvm_tdx import tdx_td_create, tdx_vcpu_run

    h = e.host
    k = h.kernel

    def build(i: int) -> int:
        ret, td = tdx_td_create(k, nr_vcpus=1, nr_pages=2, seed=i)
        return ret or tdx_vcpu_run(k, td)

    def on_machine() -> dict:
        tasks = [h.sched.spawn(h.machine.cpus[i % h.machine.ncpus], build, i) for i in range(n)]
        h.run()
        assert [t.result for t in tasks] == [0] * n
        return td_snapshot(h.fw)

    snap = e.on_machine(on_machine)
    assert len(snap) == n
    return snap


def tds_now(e: Emulation) -> dict:
    return e.on_machine(lambda: td_snapshot(e.host.fw))


def hold_hotplug(e: Emulation) -> None:
    """cpus_write_lock() held by a task that has returned: the update worker then sleeps in
    cpus_read_lock(), so the upload stays in `transferring` until `release_hotplug`."""
    k = e.host.kernel
    e.on_machine(lambda: e.runtime.run_kernel(k.cpu_hotplug_lock.write_lock))


def release_hotplug(e: Emulation) -> None:
    k = e.host.kernel
    e.on_machine(lambda: e.runtime.run_kernel(k.cpu_hotplug_lock.write_unlock))


# ---- the files ----------------------------------------------------------------------------------


EXPECTED = {
    "/proc/cpuinfo": ("f", 0o444),
    "/sys/class/firmware": ("d", 0o755),
    CLASS_TDX_MODULE: ("l", 0o777),
    TDX_HOST: ("d", 0o755),
    f"{TDX_HOST}/version": ("f", 0o444),
    f"{TDX_HOST}/seamldr_version": ("f", 0o400),
    f"{TDX_HOST}/num_remaining_updates": ("f", 0o400),
    f"{TDX_HOST}/firmware": ("d", 0o755),
    TDX_MODULE: ("d", 0o755),
    f"{TDX_MODULE}/loading": ("f", 0o644),
    f"{TDX_MODULE}/data": ("f", 0o644),
    f"{TDX_MODULE}/status": ("f", 0o444),
    f"{TDX_MODULE}/error": ("f", 0o444),
    f"{TDX_MODULE}/remaining_size": ("f", 0o444),
    f"{TDX_MODULE}/cancel": ("f", 0o200),
    "/sys/devices/system/cpu/online": ("f", 0o444),
    "/sys/devices/system/cpu/present": ("f", 0o444),
    "/sys/devices/system/cpu/possible": ("f", 0o444),
}


def test_every_file_its_mode_owner_and_size(emu):
    listing = dict(emu.tree.walk())
    for path, (kind, perm) in EXPECTED.items():
        st = listing[path]
        assert {"f": stat.S_ISREG, "d": stat.S_ISDIR, "l": stat.S_ISLNK}[kind](st.st_mode), path
        assert st.perm == perm, (path, oct(st.perm))
        assert (st.st_uid, st.st_gid) == (0, 0)
    # sysfs: text attributes are PAGE_SIZE by stat, the binary `data` 0, procfs files 0
    assert listing[f"{TDX_MODULE}/status"].st_size == PAGE_SIZE
    assert listing[f"{TDX_HOST}/version"].st_size == PAGE_SIZE
    assert listing[f"{TDX_MODULE}/data"].st_size == 0
    assert listing["/proc/cpuinfo"].st_size == 0
    assert emu.tree.listdir(TDX_MODULE) == ["cancel", "data", "error", "loading", "remaining_size", "status"]
    assert emu.tree.listdir(TDX_HOST) == ["firmware", "num_remaining_updates", "seamldr_version", "version"]
    assert len({st.st_ino for st in listing.values()}) == len(listing)


def test_attribute_texts(emu):
    pseamldr = emu.host.pseamldr
    assert text(emu, f"{TDX_HOST}/version") == "1.5.06\n"
    assert text(emu, f"{TDX_HOST}/seamldr_version") == "1.5.00\n"
    assert text(emu, f"{TDX_HOST}/num_remaining_updates") == f"{pseamldr.num_remaining_updates}\n"
    assert text(emu, f"{FW}/loading") == "0\n"
    assert text(emu, f"{FW}/status") == "idle\n"
    assert text(emu, f"{FW}/error") == ""
    assert text(emu, f"{FW}/remaining_size") == "0\n"
    assert text(emu, f"{FW}/data") == ""
    for name in ("online", "present", "possible"):
        assert text(emu, f"/sys/devices/system/cpu/{name}") == "0-3\n"
    # the class link resolves to the device directory, as `cd /sys/class/firmware/tdx_module` does
    assert emu.tree.readlink(CLASS_TDX_MODULE) == "../../devices/faux/tdx_host/firmware/tdx_module"
    assert emu.tree.lstat(CLASS_TDX_MODULE).is_link
    assert emu.tree.stat(CLASS_TDX_MODULE).is_dir
    assert text(emu, f"{TDX_MODULE}/../../version") == "1.5.06\n"


def test_version_format_zero_pads_the_update():
    with Emulation(2, module=DeclaredModule(ModuleVersion(2, 0, 5))) as e:
        assert text(e, f"{TDX_HOST}/version") == "2.0.05\n"


def test_cpuinfo_and_cpu_lists(emu):
    info = text(emu, "/proc/cpuinfo")
    stanzas = [s for s in info.split("\n\n") if s.strip()]
    assert len(stanzas) == 4
    first = dict(line.split("\t: ", 1) if "\t: " in line else (line.rstrip(":"), "")
                 for line in stanzas[0].splitlines())
    assert first["processor"] == "0"
    assert first["vendor_id"] == "GenuineIntel"
    assert first["cpu family"] == "6"
    assert first["model\t"] == "143"  # 0x8F: Sapphire Rapids, from CPUID.1.EAX 0x806F8
    assert first["stepping"] == "8"
    assert "tdx_host_platform" in first["flags\t"].split()
    assert "seamret_invd_vmcs" not in first["bugs\t"].split()
    assert info.endswith("power management:\n\n")
    # a CPU taken offline leaves `online` and /proc/cpuinfo, not `present`
    emu.on_machine(lambda: setattr(emu.host.machine.cpus[2], "online", False))
    assert text(emu, "/sys/devices/system/cpu/online") == "0-1,3\n"
    assert text(emu, "/sys/devices/system/cpu/present") == "0-3\n"
    assert text(emu, "/proc/cpuinfo").count("processor\t:") == 3


def test_cpuid_decoding_and_cpulist():
    assert decode_cpuid_1_eax(0x806F8) == (6, 0x8F, 8)
    assert decode_cpuid_1_eax(0xC06F2) == (6, 0xCF, 2)
    assert decode_cpuid_1_eax(0xA06D1) == (6, 0xAD, 1)
    assert decode_cpuid_1_eax(0x00A20F12) == (0x19, 0x21, 2)  # family 0xF adds the extended family
    assert decode_cpuid_1_eax(0x00000F41) == (0xF, 4, 1)  # below family 6 no extended model
    assert cpulist([0, 1, 2, 3]) == "0-3"
    assert cpulist([0, 2, 3, 5, 7, 8, 9]) == "0,2-3,5,7-9"


def test_cpuinfo_of_another_cpu_model():
    with Emulation(2, cpuid_1_eax=0xC06F2) as e:
        info = text(e, "/proc/cpuinfo")
        assert "model\t\t: 207\n" in info and "stepping\t: 2\n" in info


# ---- visibility (§5.1, §9) -----------------------------------------------------------------------


def test_erratum_hides_the_update_interface():
    with Emulation(2, erratum=True) as e:
        t = e.tree
        assert t.listdir(TDX_HOST) == ["version"]
        assert t.listdir("/sys/class/firmware") == []
        assert oserr(t.read_text, f"{TDX_HOST}/seamldr_version") == errno.ENOENT
        assert oserr(t.stat, CLASS_TDX_MODULE) == errno.ENOENT
        assert text(e, f"{TDX_HOST}/version") == "1.5.06\n"
        for stanza in text(e, "/proc/cpuinfo").strip().split("\n\n"):
            bugs = [ln for ln in stanza.splitlines() if ln.startswith("bugs")][0]
            assert "seamret_invd_vmcs" in bugs.split()


def test_no_td_preserving_bit_hides_the_update_interface():
    features0 = 0x2E1F0FBF & ~(1 << 1)
    with Emulation(2, module=DeclaredModule(ModuleVersion(1, 5, 6), features0=features0)) as e:
        assert e.tree.listdir(TDX_HOST) == ["version"]
        assert not e.tree.exists(CLASS_TDX_MODULE)


# ---- updates ------------------------------------------------------------------------------------


def test_good_v2_image_updates_the_module_and_keeps_tds(emu):
    before = build_tds(emu, 2)
    left = remaining_updates(emu)
    img = image("1.5.08")
    start_upload(emu, img)
    seen = wait_idle(emu)
    # reads were answered while the update ran, not only after it
    assert any(s != "idle" for s in seen), seen
    assert set(seen) <= {"receiving", "preparing", "transferring", "programming", "idle"}
    assert text(emu, f"{FW}/error") == ""
    assert text(emu, f"{TDX_HOST}/version") == "1.5.08\n"
    assert text(emu, f"{FW}/remaining_size") == "0\n"
    assert remaining_updates(emu) == left - 1
    assert text(emu, f"{FW}/loading") == "0\n"
    assert compare_tds(before, tds_now(emu)) == []
    assert emu.runtime.errors == []


def test_intel_v1_blob_is_firmware_invalid(emu):
    before = build_tds(emu, 1)
    left = remaining_updates(emu)
    b = blob("1.5.08")
    start_upload(emu, b)
    wait_idle(emu)
    assert text(emu, f"{FW}/error") == "transferring:firmware-invalid\n"
    assert text(emu, f"{TDX_HOST}/version") == "1.5.06\n"
    assert text(emu, f"{FW}/remaining_size") == f"{len(b)}\n"  # unchanged on failure
    assert remaining_updates(emu) == left
    assert compare_tds(before, tds_now(emu)) == []
    # the error stays until the next non-empty upload starts; an empty one leaves it
    emu.tree.write_text(f"{FW}/loading", "1\n")
    emu.tree.write_text(f"{FW}/loading", "0\n")
    assert text(emu, f"{FW}/status") == "idle\n"
    assert text(emu, f"{FW}/error") == "transferring:firmware-invalid\n"
    # and a good image afterwards works
    start_upload(emu, image("1.5.08"))
    wait_idle(emu)
    assert text(emu, f"{FW}/error") == ""
    assert text(emu, f"{TDX_HOST}/version") == "1.5.08\n"


def test_untrusted_signature_passes_the_kernel_and_loses_the_module(emu):
    """The merged kernel does not check signatures: the P-SEAMLDR refuses the INSTALL after the
    old module was shut down, so `version` reads ENXIO (spec-linux §5.7)."""
    other = testsign.signing_key(testsign.OTHER_SEED)
    start_upload(emu, testsign.make_image("1.5.08", key=other))
    wait_idle(emu)
    assert text(emu, f"{FW}/error") == "transferring:firmware-invalid\n"
    assert oserr(emu.tree.read_text, f"{TDX_HOST}/version") == errno.ENXIO
    assert "seamldr: SEAMCALL (0x8000000000000001) failed" in emu.host.kernel.dmesg_text()


def test_install_failure_loses_the_module_version_reads_enxio(emu):
    """§5.7: INSTALL fails after the shutdown: `version` gives ENXIO, seamldr_version still works."""
    plan = FaultPlan().add(SeamldrLeaf.P_SEAMLDR_INSTALL, 0x8000000000000005, cpu=1)
    emu.on_machine(install_fault_plan, emu.host.fw, plan)
    start_upload(emu, image("1.5.08"))
    wait_idle(emu)
    assert text(emu, f"{FW}/error") == "transferring:firmware-invalid\n"
    assert oserr(emu.tree.read_text, f"{TDX_HOST}/version") == errno.ENXIO
    assert text(emu, f"{TDX_HOST}/seamldr_version") == "1.5.00\n"
    assert emu.tree.exists(CLASS_TDX_MODULE)  # visibility is not re-evaluated


def test_shutdown_failure_keeps_the_old_module(emu):
    emu.on_machine(install_fault_plan, emu.host.fw,
                   FaultPlan().add(TdxLeaf.TDH_SYS_SHUTDOWN, 0xC000010000000000))
    start_upload(emu, image("1.5.08"))
    wait_idle(emu)
    assert text(emu, f"{FW}/error") == "transferring:firmware-invalid\n"
    assert text(emu, f"{TDX_HOST}/version") == "1.5.06\n"


def test_same_seed_same_interleaving():
    def run() -> tuple[list[str], str]:
        with Emulation(4, seed=11, slice_steps=8) as e:
            start_upload(e, image("1.5.08"))
            seen = wait_idle(e)
            return seen, e.host.sched.schedule_digest()

    assert run() == run()


# ---- the state machine (§5.2, §7.2) ----------------------------------------------------------


def test_loading_and_data_state_machine(emu):
    t = emu.tree
    t.write_text(f"{FW}/loading", "1\n")
    assert text(emu, f"{FW}/loading") == "1\n"
    assert t.write(f"{FW}/data", 0, b"abc") == 3
    assert t.write(f"{FW}/data", 10, b"xyz") == 3  # a sparse write grows the buffer
    assert t.read_file(f"{FW}/data") == b"abc" + bytes(7) + b"xyz"
    assert t.read(f"{FW}/data", 11, 100) == b"yz"
    assert t.read(f"{FW}/data", 13, 100) == b""
    t.write_text(f"{FW}/loading", "-1\n")  # abort: back to init, nothing uploaded
    assert text(emu, f"{FW}/loading") == "0\n"
    assert t.read_file(f"{FW}/data") == b"abc" + bytes(7) + b"xyz"  # the buffer outlives an abort
    assert text(emu, f"{FW}/status") == "idle\n"
    t.write_text(f"{FW}/loading", "2\n")  # any other value: logged, abort
    t.write_text(f"{FW}/loading", "0\n")  # 0 while not loading: the same
    log = emu.host.kernel.dmesg_text()
    assert "tdx_module: unexpected value (2)" in log
    assert "tdx_module: unexpected value (0)" in log
    assert emu.on_machine(lambda: len(emu.tree.fw.history)) == 0
    # 1 discards a previous partial load
    t.write_text(f"{FW}/loading", "1\n")
    t.write(f"{FW}/data", 0, b"partial")
    t.write_text(f"{FW}/loading", "1\n")
    assert t.read_file(f"{FW}/data") == b""


def test_busy_upload_error_ebusy_writes_ignored_and_cancel(emu):
    t = emu.tree
    hold_hotplug(emu)
    img = image("1.5.08")
    start_upload(emu, img)
    for _ in range(5):
        assert text(emu, f"{FW}/status") == "transferring\n"
        assert oserr(t.read_text, f"{FW}/error") == errno.EBUSY
    assert text(emu, f"{FW}/remaining_size") == f"{len(img)}\n"
    # a second writer: `loading` is ignored while done, `data` gives ENODEV both ways
    assert t.write_text(f"{FW}/loading", "1\n") == 2
    assert text(emu, f"{FW}/loading") == "0\n"
    assert oserr(t.write, f"{FW}/data", 0, b"x") == errno.ENODEV
    assert oserr(t.read, f"{FW}/data") == errno.ENODEV
    # cancel: must parse as true; while busy it "succeeds" and changes nothing
    assert oserr(t.write_text, f"{FW}/cancel", "0\n") == errno.EINVAL
    assert oserr(t.write_text, f"{FW}/cancel", "maybe\n") == errno.EINVAL
    assert t.write_text(f"{FW}/cancel", "1\n") == 2
    assert t.write_text(f"{FW}/cancel", "on\n") == 3
    release_hotplug(emu)
    wait_idle(emu)
    assert text(emu, f"{FW}/error") == ""  # updates cannot be cancelled
    assert text(emu, f"{TDX_HOST}/version") == "1.5.08\n"
    assert oserr(t.write_text, f"{FW}/cancel", "1\n") == errno.ENODEV  # idle


def test_a_killed_writer_leaves_a_partial_load_that_the_next_writer_discards(emu):
    t = emu.tree
    img = image("1.5.08")
    t.write_text(f"{FW}/loading", "1\n")
    fh = t.open(f"{FW}/data", os.O_WRONLY)
    assert t.write_fh(fh, 0, img[:PAGE_SIZE]) == PAGE_SIZE
    t.release(fh)  # the writer died: its file is closed, nothing else happens
    assert text(emu, f"{FW}/loading") == "1\n"
    assert text(emu, f"{FW}/status") == "idle\n"
    start_upload(emu, img)
    wait_idle(emu)
    assert text(emu, f"{FW}/error") == ""
    assert text(emu, f"{TDX_HOST}/version") == "1.5.08\n"


def test_writes_past_the_largest_image_are_taken_then_refused(emu):
    t = emu.tree
    t.write_text(f"{FW}/loading", "1\n")
    assert t.write(f"{FW}/data", LARGEST_IMAGE, b"\1") == 1  # the kernel's buffer just grows
    t.write_text(f"{FW}/loading", "0\n")
    wait_idle(emu)
    assert text(emu, f"{FW}/error") == "transferring:firmware-invalid\n"
    assert text(emu, f"{FW}/remaining_size") == f"{LARGEST_IMAGE + 1}\n"
    assert text(emu, f"{TDX_HOST}/version") == "1.5.06\n"
    # beyond what the emulated kernel can allocate: ENOMEM from the write itself
    t.write_text(f"{FW}/loading", "1\n")
    assert oserr(t.write, f"{FW}/data", FW_UPLOAD_BUFFER_LIMIT, b"\1") == errno.ENOMEM
    # ... which aborts the load (fw_realloc_pages -> fw_load_abort): `loading` reads 0, and the
    # kernel ignores `loading` from then on, so nothing is ever handed to the driver
    assert text(emu, f"{FW}/loading") == "0\n"
    assert t.write_text(f"{FW}/loading", "0\n") == 2
    assert t.write_text(f"{FW}/loading", "1\n") == 2
    assert text(emu, f"{FW}/loading") == "0\n"
    assert "unexpected value" not in emu.host.kernel.dmesg_text()
    assert emu.on_machine(lambda: len(emu.tree.fw.history)) == 1  # only the upload above


def test_loading_is_parsed_as_the_kernels_int(emu):
    """kstrtoint(buf, 10): "1abc", " 1", "--1", "0x1" are -EINVAL (simple_strtol read them as 1,
    1, 0, 0); a value beyond int is -ERANGE; "+1" and "1\\n" are 1. A refused value changes nothing."""
    t = emu.tree
    for bad in ("1abc", " 1", "1 ", "--1", "+-1", "0x1", "\n", "1\n\n", "\xb9"):
        assert oserr(t.write_text, f"{FW}/loading", bad) == errno.EINVAL, bad
        assert text(emu, f"{FW}/loading") == "0\n", bad
    for big in ("2147483648", "-2147483649", "99999999999999999999999"):
        assert oserr(t.write_text, f"{FW}/loading", big) == errno.ERANGE, big
    assert t.write_text(f"{FW}/loading", "+1") == 2
    assert text(emu, f"{FW}/loading") == "1\n"
    assert t.write_text(f"{FW}/loading", "-1\n") == 3
    assert text(emu, f"{FW}/loading") == "0\n"
    assert "unexpected value" not in emu.host.kernel.dmesg_text()


def test_writes_are_at_most_a_page_and_empty_writes_do_nothing(emu):
    t = emu.tree
    t.write_text(f"{FW}/loading", "1\n")
    assert t.write(f"{FW}/data", 0, bytes(3 * PAGE_SIZE)) == PAGE_SIZE  # short, as kernfs
    assert t.write(f"{FW}/data", PAGE_SIZE, b"") == 0
    t.write_file(f"{FW}/data", bytes(3 * PAGE_SIZE))  # `cat` goes on after short writes
    assert len(t.read(f"{FW}/data", 0, 3 * PAGE_SIZE)) == PAGE_SIZE  # reads too
    assert len(t.read_file(f"{FW}/data")) == 3 * PAGE_SIZE
    # text attributes: store sees at most PAGE_SIZE; the rest is another write
    assert t.write(f"{FW}/loading", 0, b"1\n" + bytes(2 * PAGE_SIZE)) == PAGE_SIZE  # the store stops at NUL
    assert t.write(f"{FW}/loading", 0, b"") == 0
    assert text(emu, f"{FW}/loading") == "1\n"


def test_a_read_session_keeps_its_text(emu):
    """seq_file: a read continuing at the offset where the last ended gets the same text."""
    t = emu.tree
    fh = t.open(f"{FW}/status")
    assert t.read_fh(fh, 0, 2) == b"id"
    start_upload(emu, image("1.5.08"))
    assert t.read_fh(fh, 2, 100) == b"le\n"  # not "ansferring\n"
    assert t.read_fh(fh, 5, 100) == b""
    assert t.read_fh(fh, 0, 100) != b""  # offset 0: a new session, a new show()
    t.release(fh)
    wait_idle(emu)


# ---- permissions and abuse ----------------------------------------------------------------------


def test_unprivileged_caller_refused_where_the_kernel_refuses(emu):
    t = emu.tree
    assert text(emu, f"{TDX_HOST}/version", NOBODY) == "1.5.06\n"
    assert text(emu, f"{FW}/status", NOBODY) == "idle\n"
    assert text(emu, f"{FW}/error", NOBODY) == ""
    assert text(emu, "/proc/cpuinfo", NOBODY).startswith("processor")
    for f in (f"{TDX_HOST}/seamldr_version", f"{TDX_HOST}/num_remaining_updates"):
        assert oserr(t.read_text, f, NOBODY) == errno.EACCES
    assert oserr(t.write_text, f"{FW}/loading", "1\n", NOBODY) == errno.EACCES
    assert oserr(t.write_file, f"{FW}/data", b"x", NOBODY) == errno.EACCES
    assert oserr(t.write_text, f"{FW}/cancel", "1\n", NOBODY) == errno.EACCES
    assert oserr(t.truncate, f"{FW}/loading", 0, NOBODY) == errno.EACCES
    assert oserr(t.chmod, f"{TDX_HOST}/seamldr_version", 0o444, NOBODY) == errno.EPERM
    assert oserr(t.refuse, "mkdir", "/sys/x", NOBODY) == errno.EACCES
    assert oserr(t.open, "/sys/new", os.O_WRONLY | os.O_CREAT, NOBODY) == errno.EACCES
    assert t.read_file(f"{FW}/data", NOBODY) == b""  # data is 0644: reading is allowed


def test_data_needs_cap_sys_rawio(emu):
    t = emu.tree
    no_rawio = ROOT.without(CAP_SYS_RAWIO)
    t.write_text(f"{FW}/loading", "1\n", no_rawio)  # loading needs only the mode
    fh = t.open(f"{FW}/data", os.O_WRONLY, no_rawio)  # the open passes (root owns it)
    assert oserr(t.write_fh, fh, 0, b"x") == errno.EPERM  # the write does not
    t.release(fh)
    # capabilities without the uid do not open a 0644 file for writing either
    rawio_user = Cred(uid=1000, gid=1000, caps=1 << CAP_SYS_RAWIO)
    assert oserr(t.open, f"{FW}/data", os.O_WRONLY, rawio_user) == errno.EACCES


def test_root_is_refused_by_kernfs_and_procfs(emu):
    t = emu.tree
    # the VFS lets root open anything; kernfs wants a write bit and a store method
    assert oserr(t.write_text, f"{TDX_HOST}/version", "1\n") == errno.EACCES
    assert oserr(t.write_text, f"{FW}/status", "idle\n") == errno.EACCES
    assert oserr(t.read_text, f"{FW}/cancel") == errno.EACCES
    # procfs: cpuinfo opens for writing, every write is EIO
    fh = t.open("/proc/cpuinfo", os.O_WRONLY)
    assert oserr(t.write_fh, fh, 0, b"x") == errno.EIO
    t.release(fh)
    # names are fixed
    assert oserr(t.refuse, "mkdir", "/sys/x") == errno.EPERM
    assert oserr(t.refuse, "unlink", f"{TDX_HOST}/version") == errno.EPERM
    assert oserr(t.refuse, "rename", f"{FW}/data") == errno.EPERM
    assert oserr(t.refuse, "unlink", f"{TDX_HOST}/nothing") == errno.ENOENT
    assert oserr(t.refuse, "mkdir", TDX_HOST) == errno.EEXIST
    assert oserr(t.open, "/sys/new", os.O_WRONLY | os.O_CREAT) == errno.EACCES
    assert oserr(t.open, f"{FW}/status", os.O_WRONLY | os.O_CREAT | os.O_EXCL) == errno.EEXIST
    assert oserr(t.open, TDX_HOST, os.O_WRONLY) == errno.EISDIR
    assert oserr(t.read_text, f"{TDX_HOST}/version/x") == errno.ENOTDIR
    assert oserr(t.read_text, "/sys/nothing") == errno.ENOENT
    # truncation is accepted and ignored (`echo 1 > loading` opens with O_TRUNC)
    t.truncate(f"{TDX_HOST}/version", 0)
    assert text(emu, f"{TDX_HOST}/version") == "1.5.06\n"
    # root may chmod, as on sysfs; the mode then decides for everyone else
    t.chmod(f"{TDX_HOST}/seamldr_version", 0o444)
    assert text(emu, f"{TDX_HOST}/seamldr_version", NOBODY) == "1.5.00\n"


# ---- the threaded runtime ------------------------------------------------------------------------


def test_threaded_runtime_serves_many_threads_during_an_update():
    with Emulation(4, seed=5, threaded=True) as e:
        t = e.tree
        statuses: list[str] = []
        errors: list[BaseException] = []
        stop = threading.Event()

        def reader() -> None:
            try:
                while not stop.is_set():
                    statuses.append(t.read_text(f"{FW}/status").strip())
                    assert t.read_text(f"{TDX_HOST}/version") in ("1.5.06\n", "1.5.08\n")
            except BaseException as ex:  # noqa: BLE001
                errors.append(ex)

        readers = [threading.Thread(target=reader) for _ in range(3)]
        for r in readers:
            r.start()
        start_upload(e, image("1.5.08"))
        wait_idle(e)
        stop.set()
        for r in readers:
            r.join()
        assert errors == []
        assert text(e, f"{FW}/error") == ""
        assert text(e, f"{TDX_HOST}/version") == "1.5.08\n"
        assert e.runtime.errors == []
