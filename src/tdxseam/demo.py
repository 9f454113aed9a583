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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from tdxseam.formats.files import FileError, read_file
from tdxseam.formats.identity import ModuleIdentity, resolve_identity
from tdxseam.formats.image import MODULE_FILE_MAX_SIZE, ImageFormat, detect, extract, v1_to_v2
from tdxseam.formats.mapping import MappingFile, load_mapping
from tdxseam.formats.sigstruct import Sigstruct
from tdxseam.formats.status import status_text
from tdxseam.formats.version import ModuleVersion
from tdxseam.host import EmulatedHost
from tdxseam.kernel.firmware_upload import FwUploadProg
from tdxseam.kernel.kvm_tdx import kvm_tdx, tdx_td_create, tdx_vcpu_run
from tdxseam.kernel.seamldr import ModuleUpdateState, seamldr_get_info
from tdxseam.kernel.tdx_host import tdx_host_init
from tdxseam.probe import Probe
from tdxseam.seam.pseamldr import SeamldrBuild
from tdxseam.platform.trace import Trace
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
    identity: ModuleIdentity  # what it is, and where each fact came from
    converted: bool = False


def _load_image(data: bytes, label: str, *, name: str | None = None, option: ModuleVersion | None = None,
                mapping: MappingFile | None = None, probe: Probe | None = None) -> ModuleChoice:
    fmt = detect(data)
    if fmt not in (ImageFormat.V1, ImageFormat.V2):
        raise DemoError(f"{label}: not a TDX module image (expected an Intel v1 blob or a v2 image)")
    parts = extract(data, what=label)
    sig = Sigstruct.from_bytes(parts.sigstruct)
    ident = resolve_identity(sig, parts.module, name=name, option=option, mapping=mapping, probe=probe,
                             what=label)
    if fmt is ImageFormat.V1:
        return ModuleChoice(label, v1_to_v2(data), sig, ident, True)
    return ModuleChoice(label, data, sig, ident)


def _catalog_mapping(catalog: Path | None) -> MappingFile | None:
    if catalog is None or not (catalog / "mapping_file.json").is_file():
        return None
    return load_mapping(catalog / "mapping_file.json")


def choose_module(spec: str | ModuleVersion, catalog: Path | None, *, option: ModuleVersion | None = None,
                  mapping: MappingFile | None = None, probe: Probe | None = None) -> ModuleChoice:
    """A version from the catalog (or synthesized without one), or an image file, identified from
    its files (`option`: the operator's --module-version for a file that states nothing).

    IdentityError (a FormatError) when the facts disagree or the version cannot be known.
    """
    if isinstance(spec, str) and (os.sep in spec or spec.endswith((".blob", ".img", ".bin"))
                                  or Path(spec).is_file()):
        p = Path(spec)
        try:
            data = read_file(p, MODULE_FILE_MAX_SIZE, "a TDX module file")
        except FileError as e:
            raise DemoError(str(e)) from None
        return _load_image(data, str(p), name=p.name, option=option, mapping=mapping, probe=probe)
    try:
        v = spec if isinstance(spec, ModuleVersion) else ModuleVersion.parse(spec)
    except ValueError as e:
        raise DemoError(f"{spec!r}: not a version (major.minor.update) nor an image file") from e
    if option is not None and option != v:
        raise DemoError(f"--module-version {option} names another release than {v}")
    if catalog is not None:
        blob = catalog / "joined_files" / f"{v.major}.{v.minor}" / f"tdx_module_{v}.blob"
        try:
            data = read_file(blob, MODULE_FILE_MAX_SIZE, "a TDX module file")
        except FileError as e:
            if e.code == "missing":
                raise DemoError(f"release {v} is not in the catalog {catalog}") from None
            raise DemoError(str(e)) from None
        return _load_image(data, f"Intel release {v} ({blob.name})", name=blob.name,
                           mapping=mapping, probe=probe)
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


def host_for(module: ModuleChoice, cpus: int, *, seed: int = 0, firmware: str = "model",
             other: ModuleChoice | None = None, record_seamcalls: bool = False,
             kernel: str = "merged") -> EmulatedHost:
    """A host booted with `module`, on CPUs it (and `other`, if given) supports, with a P-SEAMLDR
    of the module's line (a 2.0 one reads the version a 2.0 sigstruct carries). The emulated
    platform is told what the two binaries are (a real module knows it itself)."""
    sig = module.sigstruct
    cpuid = platform_cpuid(sig, (other or module).sigstruct)
    line = (2, 0) if sig.declared_version is not None else (1, 5)
    return EmulatedHost(cpus, seed=seed, module=module.image, trace=False, cpuid_1_eax=cpuid,
                        seamldr=SeamldrBuild(major=line[0], minor=line[1], max_lps=max(cpus, 1024)),
                        known_modules=tuple(m.identity for m in (module, other) if m is not None),
                        kernel=kernel, firmware=firmware, record_seamcalls=record_seamcalls)


def real_host(cpus: int, version: str | None = None, catalog: str | None = None,
              seed: int = 0) -> EmulatedHost:
    """A host whose TDX module is Intel's binary (`version` from the catalog, default 1.5.06)."""
    cat = find_intel_catalog(catalog)
    if cat is None:
        raise DemoError("--firmware real needs Intel's binaries: give --catalog DIR or set "
                        f"${INTEL_CATALOG_ENV}")
    return host_for(choose_module(version or DEFAULT_REAL[0], cat), cpus, seed=seed, firmware="real")


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
    from_identity: dict | None = None  # ModuleIdentity.to_json(): version, build, sources, summary
    to_identity: dict | None = None
    mrseam_after: str | None = None  # what a TD quote now carries (SEAMEXTEND after the update)
    converted: bool = False
    upload_error: str = ""
    td_problems: list[str] = field(default_factory=list)
    td_runs_after: int = 0
    seed: int = 0
    steps: int = 0
    wall_seconds: float = 0.0
    firmware: str = "model"
    stopped_in_seam: str | None = None  # real firmware: the module stopped inside a SEAMCALL
    fault: str | None = None  # the fault rule injected into the update, if any
    trace: Any = field(default=None, repr=False, compare=False)  # the update's events, when traced
    notes: list[str] = field(default_factory=list)  # e.g. that Intel's files were not found

    def to_json(self) -> dict:
        d = asdict(replace(self, trace=None))
        del d["trace"]
        return d


def _stopped_in_seam(host: EmulatedHost):
    """The ModuleStopped a run ended with, if any (taken out of the scheduler)."""
    from tdxseam.seam.stopped import ModuleStopped

    for _task, err in host.sched.errors:
        if isinstance(err, ModuleStopped):
            host.sched.errors.clear()
            return err
    return None


def _remaining(host: EmulatedHost) -> int | None:
    ret, info = host.run_on(0, seamldr_get_info, host.kernel)
    return None if ret else info.num_remaining_updates


def run_demo(*, cpus: int = 8, tds: int = 4, from_: str | ModuleVersion | None = None,
             to: str | ModuleVersion | None = None, catalog: str | None = None, seed: int = 0,
             synthetic: bool = False, module_version: ModuleVersion | None = None,
             probe: Probe | None = None,
             progress: Callable[[Progress], None] | None = None, kernel: str = "merged",
             firmware: str = "model", fault: str | None = None, trace: bool = False) -> DemoResult:
    """`module_version` is the --module-version of the `to` module (for a file that states nothing).
    `fault`: a fault rule (`LEAF[@CPU][#N]=STATUS`) armed for the update only; `trace`: record
    the update's events (from the upload to its end) in `DemoResult.trace`.

    Both modules are identified before the host boots: a version that disagrees or cannot be
    known is refused (IdentityError) before any SEAMCALL."""
    from tdxseam.seam.faults import FaultPlan, FaultSpecError, install_fault_plan, parse_fault_spec

    try:
        rule = parse_fault_spec(fault) if fault is not None else None
    except FaultSpecError as e:
        raise DemoError(f"--fault: {e}") from None
    if rule is not None and rule.cpu is not None and rule.cpu >= cpus:
        raise DemoError(f"--fault: cpu{rule.cpu} does not exist on a {cpus}-CPU host")
    cat = None if synthetic else find_intel_catalog(catalog)
    if firmware == "real" and cat is None:
        raise DemoError("--firmware real runs Intel's binaries: it needs their catalog (--catalog DIR "
                        f"or ${INTEL_CATALOG_ENV}), not synthetic modules")
    if firmware == "real" and tds:
        raise DemoError("--firmware real runs no TDs yet (the TD leaves on Intel's binary are not "
                        "driven by the emulated host): use --tds 0")
    default = DEFAULT_REAL if cat is not None else DEFAULT_SYNTHETIC
    notes = []
    if cat is None and not synthetic:
        notes.append(f"Intel's release files were not found (set ${INTEL_CATALOG_ENV} or pass --catalog DIR): "
                     f"using synthetic modules signed with the test key, {default[0]} -> {default[1]}")
    mapping = _catalog_mapping(cat)
    src = choose_module(from_ or default[0], cat, mapping=mapping, probe=probe)
    dst = choose_module(to or default[1], cat, option=module_version, mapping=mapping, probe=probe)
    host = host_for(src, cpus, seed=seed, firmware=firmware, other=dst, kernel=kernel)
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
                        from_identity=src.identity.to_json(), to_identity=dst.identity.to_json(),
                        converted=dst.converted, seed=seed, firmware=firmware,
                        fault=fault, notes=notes)
    if dev.fw_upload is None:
        result.error = "runtime update not supported by this host (no firmware/tdx_module)"
        return result

    # Userspace: echo 1 > loading; cat image > data; echo 0 > loading
    fw = dev.fw_upload

    def upload() -> None:
        fw.loading_store("1\n")
        fw.data_write(0, dst.image)
        fw.loading_store("0\n")

    if rule is not None:
        install_fault_plan(host.fw, FaultPlan([rule]))
    if trace:  # boot and the TDs are not the story: the trace starts with the upload
        host.sched.trace = Trace(enabled=True)
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
    install_fault_plan(host.fw, None)
    host.sched.trace.enabled = False
    result.trace = host.sched.trace if trace else None
    stopped = _stopped_in_seam(host)
    if stopped is not None:
        # Intel's code never returned from a SEAMCALL: on hardware that CPU stays in SEAM mode and
        # the others wait for it in stop_machine forever. Nothing more can run on this host.
        result.stopped_in_seam = str(stopped)
        result.error = (f"update failed: {stopped}; the host hangs in stop_machine, the TDX module "
                        f"is lost and with it every TD ({tds_built} built): reboot needed")
        return result

    err = fw.error_show()
    result.upload_error = err.strip() if isinstance(err, str) else f"errno {err}"
    after = host.run_on(0, dev.version_show)
    result.version_after = after.strip() if isinstance(after, str) else None
    result.remaining_updates_after = _remaining(host)
    snap_after = td_snapshot(host.fw)
    result.mrseam_after = host.fw.seamextend.mrseam.hex()
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
