"""The main job: a runtime TDX module update on the emulated host, end to end.

Boot a host running one module, build and run TDs, upload another module through the kernel's
`tdx_module` firmware-upload files exactly as userspace would, and report what changed and what
survived. Real Intel releases are used when a catalog is at hand; otherwise synthetic modules
signed with the test key, which the emulated host trusts.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tdxseam.formats.files import FileError, read_file
from tdxseam.formats.image import MODULE_FILE_MAX_SIZE, ImageFormat, detect, extract, v1_to_v2
from tdxseam.formats.sigstruct import Sigstruct
from tdxseam.formats.status import status_text
from tdxseam.formats.version import ModuleVersion
from tdxseam.host import EmulatedHost
from tdxseam.kernel.firmware_upload import FwUploadProg
from tdxseam.kernel.kvm_tdx import kvm_tdx, tdx_td_create, tdx_vcpu_run
from tdxseam.kernel.seamldr import ModuleUpdateState, seamldr_get_info
from tdxseam.kernel.tdx_host import tdx_host_init
from tdxseam.seam.pseamldr import SeamldrBuild
from tdxseam.seam.td import compare_tds, td_snapshot

INTEL_CATALOG_ENV = "TDXSEAM_INTEL_BINARIES"
DEFAULT_REAL = (ModuleVersion(1, 5, 6), ModuleVersion(1, 5, 13))
DEFAULT_SYNTHETIC = (ModuleVersion(1, 5, 6), ModuleVersion(1, 5, 8))
# Scheduler steps between progress reports: small enough that an 8-CPU update (a few hundred
# steps) shows its lockstep states go by. Slicing does not change the interleaving.
SLICE_STEPS = 16


class DemoError(Exception):
    """Bad demo input: one line for the user."""


def find_intel_catalog(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """Intel's binaries, laid out like Intel's repository, if any are reachable."""
    if explicit is not None:
        p = Path(explicit)
        if not (p / "mapping_file.json").is_file() and not (p / "joined_files").is_dir():
            raise DemoError(f"{p}: not a catalog (no mapping_file.json or joined_files/)")
        return p
    candidates = []
    if os.environ.get(INTEL_CATALOG_ENV):
        candidates.append(Path(os.environ[INTEL_CATALOG_ENV]))
    repo = Path(__file__).resolve().parents[2]
    for base in (repo, Path.cwd()):
        candidates.append(base.parent / "shared" / "fixtures" / "intel-tdx-module-binaries")
    for c in candidates:
        if (c / "joined_files").is_dir():
            return c
    return None


@dataclass
class ModuleChoice:
    label: str  # where it came from, for the report
    image: bytes  # always a v2 image (what the merged kernel takes)
    sigstruct: Sigstruct
    converted: bool = False


def _load_image(data: bytes, label: str) -> ModuleChoice:
    fmt = detect(data)
    if fmt is ImageFormat.V1:
        parts = extract(data, what=label)
        return ModuleChoice(label, v1_to_v2(data), Sigstruct.from_bytes(parts.sigstruct), True)
    if fmt is ImageFormat.V2:
        parts = extract(data, what=label)
        return ModuleChoice(label, data, Sigstruct.from_bytes(parts.sigstruct))
    raise DemoError(f"{label}: not a TDX module image (expected an Intel v1 blob or a v2 image)")


def choose_module(spec: str | ModuleVersion, catalog: Path | None) -> ModuleChoice:
    """A version from the catalog (or synthesized without one), or an image file."""
    if isinstance(spec, str) and (os.sep in spec or spec.endswith((".blob", ".img", ".bin"))
                                  or Path(spec).is_file()):
        p = Path(spec)
        try:
            data = read_file(p, MODULE_FILE_MAX_SIZE, "a TDX module file")
        except FileError as e:
            raise DemoError(str(e)) from None
        return _load_image(data, str(p))
    try:
        v = spec if isinstance(spec, ModuleVersion) else ModuleVersion.parse(spec)
    except ValueError as e:
        raise DemoError(f"{spec!r}: not a version (major.minor.update) nor an image file") from e
    if catalog is not None:
        blob = catalog / "joined_files" / f"{v.major}.{v.minor}" / f"tdx_module_{v}.blob"
        try:
            data = read_file(blob, MODULE_FILE_MAX_SIZE, "a TDX module file")
        except FileError as e:
            if e.code == "missing":
                raise DemoError(f"release {v} is not in the catalog {catalog}") from None
            raise DemoError(str(e)) from None
        return _load_image(data, f"Intel release {v} ({blob.name})")
    from tdxseam.formats.testsign import make_image

    style = "2.0" if (v.major, v.minor) >= (2, 0) else "1.5"
    image = make_image(v, style=style)
    return _load_image(image, f"synthetic {v} (test-signed)")


def platform_cpuid(a: Sigstruct, b: Sigstruct) -> int:
    """A CPU both modules support (stepping as listed), so the update can happen."""
    bs = {c & ~0xF for c in b.cpuids}
    for c in a.cpuids:
        if c & ~0xF in bs:
            return c
    return a.cpuids[0] if a.cpuids else 0x806F8


@dataclass
class Progress:
    step: int  # scheduler steps since the upload began
    state: str  # the lockstep state
    acked: int  # CPUs that acked it so far
    cpus: int
    status: str  # the fw_upload `status` file


@dataclass
class DemoResult:
    ok: bool
    cpus: int
    version_before: str | None
    version_after: str | None
    tds_before: int
    tds_preserved: int
    remaining_updates_before: int | None
    remaining_updates_after: int | None
    error: str | None
    status: str | None
    from_module: str = ""
    to_module: str = ""
    converted: bool = False
    upload_error: str = ""
    td_problems: list[str] = field(default_factory=list)
    td_runs_after: int = 0
    seed: int = 0
    steps: int = 0
    wall_seconds: float = 0.0
    notes: list[str] = field(default_factory=list)  # e.g. that Intel's files were not found

    def to_json(self) -> dict:
        return asdict(self)


def _remaining(host: EmulatedHost) -> int | None:
    ret, info = host.run_on(0, seamldr_get_info, host.kernel)
    return None if ret else info.num_remaining_updates


def run_demo(*, cpus: int = 8, tds: int = 4, from_: str | ModuleVersion | None = None,
             to: str | ModuleVersion | None = None, catalog: str | None = None, seed: int = 0,
             synthetic: bool = False,
             progress: Callable[[Progress], None] | None = None) -> DemoResult:
    cat = None if synthetic else find_intel_catalog(catalog)
    default = DEFAULT_REAL if cat is not None else DEFAULT_SYNTHETIC
    notes = []
    if cat is None and not synthetic:
        notes.append(f"Intel's release files were not found (set ${INTEL_CATALOG_ENV} or pass --catalog DIR): "
                     f"using synthetic modules signed with the test key, {default[0]} -> {default[1]}")
    src = choose_module(from_ or default[0], cat)
    dst = choose_module(to or default[1], cat)
    cpuid = platform_cpuid(src.sigstruct, dst.sigstruct)
    line = (2, 0) if src.sigstruct.declared_version is not None else (1, 5)
    host = EmulatedHost(cpus, seed=seed, module=src.image, trace=False, cpuid_1_eax=cpuid,
                        seamldr=SeamldrBuild(major=line[0], minor=line[1], max_lps=max(cpus, 1024)))
    k = host.kernel
    dev = tdx_host_init(k)
    before = host.run_on(0, dev.version_show)
    remaining_before = _remaining(host)

    # Build and run TDs, spread over the CPUs.
    def build(i: int) -> int:
        ret, td = tdx_td_create(k, nr_vcpus=2, nr_pages=3, seed=seed * 1000 + i)
        return ret or tdx_vcpu_run(k, td)

    for i in range(tds):
        host.sched.spawn(host.machine.cpus[i % cpus], build, i, name=f"qemu-td{i}")
    host.run()
    tds_built = len(kvm_tdx(k).tds)
    snap_before = td_snapshot(host.fw)

    result = DemoResult(ok=False, cpus=cpus, version_before=before.strip() if isinstance(before, str) else None,
                        version_after=None, tds_before=tds_built, tds_preserved=0,
                        remaining_updates_before=remaining_before, remaining_updates_after=None,
                        error=None, status=None, from_module=src.label, to_module=dst.label,
                        converted=dst.converted, seed=seed, notes=notes)
    if dev.fw_upload is None:
        result.error = "runtime update not supported by this host (no firmware/tdx_module)"
        return result

    # Userspace: echo 1 > loading; cat image > data; echo 0 > loading
    fw = dev.fw_upload

    def upload() -> None:
        fw.loading_store("1\n")
        fw.data_write(0, dst.image)
        fw.loading_store("0\n")

    t0 = time.perf_counter()
    steps0 = host.sched.steps
    host.sched.spawn(host.machine.cpus[0], upload, name="userspace-upload")
    slice_steps = SLICE_STEPS if progress is not None else None
    while True:
        host.sched.run(slice_steps=slice_steps)
        if progress is not None:
            ctrl = getattr(k, "last_update_ctrl", None)
            if ctrl is not None:
                state = ModuleUpdateState(min(ctrl.state, 5)).name.removeprefix("MODULE_UPDATE_")
                progress(Progress(host.sched.steps - steps0, state, ctrl.num_ack, ctrl.num_cpus,
                                  fw.status_show().strip()))
        if not host.sched.paused:
            break
    result.wall_seconds = time.perf_counter() - t0
    result.steps = host.sched.steps - steps0

    err = fw.error_show()
    result.upload_error = err.strip() if isinstance(err, str) else f"errno {err}"
    after = host.run_on(0, dev.version_show)
    result.version_after = after.strip() if isinstance(after, str) else None
    result.remaining_updates_after = _remaining(host)
    snap_after = td_snapshot(host.fw)
    result.td_problems = compare_tds(snap_before, snap_after)
    result.tds_preserved = sum(1 for tdr, s in snap_before.items() if snap_after.get(tdr) == s)

    # The TDs must still run on the new module.
    if result.version_after is not None:
        runs = [0]

        def rerun(td) -> None:
            if tdx_vcpu_run(k, td) == 0:
                runs[0] += 1

        for i, td in enumerate(kvm_tdx(k).tds):
            host.sched.spawn(host.machine.cpus[i % cpus], rerun, td)
        host.run()
        result.td_runs_after = runs[0]

    failures = k.seamcall_failures
    if result.upload_error:
        result.error = f"update failed: error file reads {result.upload_error!r}"
        if result.version_after is None:
            result.error += "; the module is unusable (version reads fail with ENXIO), TDs lost: reboot needed"
        if failures:
            result.status = status_text(failures[-1][1])
    else:
        result.ok = (result.version_after is not None and result.tds_preserved == len(snap_before)
                     and result.td_runs_after == tds_built)
        if not result.ok:
            result.error = "update reported success but TDs were not all preserved"
    return result
