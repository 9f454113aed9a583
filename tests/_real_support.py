"""Hosts running Intel's binaries on the real-firmware engine, shared by the real-firmware tests."""

from __future__ import annotations

from tdxseam.formats.image import extract, v1_to_v2
from tdxseam.formats.sigstruct import Sigstruct
from tdxseam.host import EmulatedHost
from tdxseam.seam.pseamldr import SeamldrBuild


def blob(intel_dir, version: str) -> bytes:
    return (intel_dir / "joined_files" / version[:3] / f"tdx_module_{version}.blob").read_bytes()


def real_host(intel_dir, version: str, cpus: int = 4, seed: int = 0, firmware: str = "real",
              known_modules=()) -> EmulatedHost:  # noqa: ANN001
    data = blob(intel_dir, version)
    sig = Sigstruct.from_bytes(extract(data, what=version).sigstruct)
    line = SeamldrBuild(major=2, minor=0) if sig.declared_version is not None else SeamldrBuild()
    return EmulatedHost(cpus, seed=seed, module=data, trace=False, cpuid_1_eax=sig.cpuids[0],
                        seamldr=line, firmware=firmware, known_modules=known_modules)


def engine_identities(intel_dir, *versions: str) -> list:
    """The releases' identities as the real-firmware engine reads them, the handoff size its
    SHUTDOWN writes included (what the model learns only from running the binary)."""
    from tdxseam.formats.identity import resolve_identity
    from tdxseam.probe import firmware_probe

    probe = firmware_probe("on")
    out = []
    for v in versions:
        parts = extract(blob(intel_dir, v), what=v)
        out.append(resolve_identity(Sigstruct.from_bytes(parts.sigstruct), parts.module,
                                    name=f"tdx_module_{v}.blob", probe=probe))
    return out


def v2_image(intel_dir, version: str) -> bytes:
    return v1_to_v2(blob(intel_dir, version))
