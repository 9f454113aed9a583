"""Scenarios on real firmware: Intel's TDX module binaries behind the SEAMCALL door.

`sim run --firmware real` runs the scenario machinery of the model on a host whose TDX module is
Intel's binary on the emulated CPU (`seam/real`); the P-SEAMLDR stays the Python model. What
changes is where the modules come from and what the checks may read:

- the boot module and every update image are releases from Intel's catalog
  (`demo.find_intel_catalog`), the update images converted to the v2 image the kernel takes and
  broken in the scenario's chosen way as the synthetic ones are (`runner.break_image`);
- a module's version is what the binary answered to TDH.SYS.RD (`RealModule.reported`), not a
  field of the model's `TdxModule`;
- no TDs: the emulated KVM speaks the model's simplified TD ABI, so the TD leaves are not driven
  on Intel's binary, and the generator leaves TDs (and TD-leaf faults) out.

Loading a release (reading, identifying, converting) is cached per catalog and version, so the
reboot check and repeated runs pay for it once.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

from tdxseam.formats.metadata import TDX_FEATURES0_UPDATE_COMPAT
from tdxseam.formats.version import ModuleVersion


class SimSetupError(ValueError):
    """A real-firmware scenario this machine or kernel cannot run (one line for the user).
    `code` is the CLI exit code: 2 for a bad combination of options, 3 for missing files."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def catalog_dir(catalog: str | Path | None) -> Path:
    """Intel's binaries: `catalog`, else $TDXSEAM_INTEL_BINARIES, else beside the repository."""
    from tdxseam.demo import INTEL_CATALOG_ENV, DemoError, find_intel_catalog

    try:
        cat = find_intel_catalog(catalog)
    except DemoError as e:
        raise SimSetupError(str(e), 3) from None
    if cat is None:
        raise SimSetupError("--firmware real runs Intel's binaries: give --catalog DIR or set "
                            f"${INTEL_CATALOG_ENV}", 3)
    return cat


@lru_cache(maxsize=16)
def release(catalog: Path, version: str) -> Any:
    """A catalog release as `demo.ModuleChoice` (a v2 image and its identity from its files)."""
    from tdxseam.demo import DemoError, _catalog_mapping, choose_module
    from tdxseam.formats.errors import FormatError

    try:
        return choose_module(ModuleVersion.parse(version), catalog, mapping=_catalog_mapping(catalog))
    except (DemoError, FormatError) as e:
        raise SimSetupError(str(e), 3) from None


def update_image(catalog: Path, version: str, kind: str) -> bytes:
    """The v2 image of a catalog release, intact or broken as `kind` says."""
    from tdxseam.sim.runner import break_image

    return break_image(release(catalog, version).image, kind)


def real_host(sc: Any, catalog: Path, *, mutations: frozenset[str], trace: bool) -> Any:
    """The scenario's host, booted with Intel's `sc.module` on CPUs every release of the scenario
    supports; the P-SEAMLDR model of the module's line with the scenario's SEAMDB capacity."""
    from tdxseam.demo import platform_cpuid
    from tdxseam.host import EmulatedHost
    from tdxseam.seam.pseamldr import SeamldrBuild

    boot = release(catalog, sc.module)
    targets = [release(catalog, v) for v in dict.fromkeys(u.to for u in sc.updates)]
    cpuid = platform_cpuid(boot.sigstruct, (targets[0] if targets else boot).sigstruct)
    line = (2, 0) if boot.sigstruct.declared_version is not None else (1, 5)
    idents = tuple({str(m.identity.version): m.identity for m in [boot, *targets]}.values())
    host = EmulatedHost(sc.cpus, seed=sc.seed, module=boot.image, trace=trace, cpuid_1_eax=cpuid,
                        seamldr=SeamldrBuild(major=line[0], minor=line[1], seamdb_capacity=sc.seamdb_capacity,
                                             max_lps=max(1024, sc.cpus)),
                        mutations=mutations, kernel=sc.kernel, known_modules=idents, firmware="real")
    if host.kernel.profile.td_build_guard == "module":
        from tdxseam.kernel.tdx import tdx_get_sysinfo

        info = tdx_get_sysinfo(host.kernel)
        if info is not None and not info.tdx_features0 & TDX_FEATURES0_UPDATE_COMPAT:
            raise SimSetupError(
                f"--kernel {sc.kernel} asks TDH.SYS.SHUTDOWN to avoid compat-sensitive work, which Intel's "
                f"{sc.module} does not offer (TDX_FEATURES0 0x{info.tdx_features0:X}, bit 47 clear): its "
                "binary refuses every update; use --kernel merged or v4")
    return host


def module_version(mod: Any) -> str | None:
    """The version a module says it is: the model's build, or a binary's TDH.SYS.RD answers
    (None when the binary has not answered them)."""
    if mod is None:
        return None
    if getattr(mod, "real", False):
        from tdxseam.formats.metadata import MdField

        r = mod.reported
        fields = (MdField.MAJOR_VERSION, MdField.MINOR_VERSION, MdField.UPDATE_VERSION)
        if not all(f in r for f in fields):
            return None
        return str(ModuleVersion(*(r[f] for f in fields)))
    return str(mod.build.version) if mod.build is not None else None
