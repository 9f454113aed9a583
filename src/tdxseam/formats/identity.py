"""Which module is this? Version, build and features from whatever the files can tell.

Sources, most authoritative first:
1. a 2.0-style sigstruct's declared version (reserved3), signed by the vendor;
2. the table of known Intel releases, keyed by SEAMHASH (1.5 sigstructs carry no version);
3. the identity header of a synthetic test module.
Handoff fields (module_hv, min_update_hv, no_downgrade, num_handoff_pages) always come from the
sigstruct, because that is what the P-SEAMLDR copies into SYS_INFO_TABLE.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum

from tdxseam.formats.releases import known_release
from tdxseam.formats.sigstruct import Sigstruct
from tdxseam.formats.synthetic import SyntheticHeader
from tdxseam.formats.version import ModuleVersion


class IdentitySource(Enum):
    SIGSTRUCT = "sigstruct"  # 2.0 reserved3 version fields
    KNOWN_RELEASE = "known-release"  # releases.KNOWN_RELEASES by SEAMHASH
    SYNTHETIC = "synthetic"  # the test module's identity header


@dataclass(frozen=True)
class ModuleIdentity:
    version: ModuleVersion
    source: IdentitySource
    build: int | None
    tdx_features0: int | None  # None when no source knows it
    seamsvn: int
    seamhash: bytes
    module_hv: int
    min_update_hv: int
    no_downgrade: int
    num_handoff_pages: int


def module_identity(sig: Sigstruct, module: bytes | None = None) -> ModuleIdentity | None:
    """Identify a module from its sigstruct (and module bytes, for synthetic modules).

    Keyed by the sigstruct's SEAMHASH, i.e. the MRSEAM an install would record; whether the
    module bytes match it is `measure.check_seamhash`'s job. None if nothing identifies it.
    """
    declared = sig.declared_version
    known = known_release(sig.seamhash)
    synth = SyntheticHeader.find(module) if module is not None else None

    if declared is not None:
        version, source, build = declared.version, IdentitySource.SIGSTRUCT, declared.build
    elif known is not None:
        version, source, build = known.version, IdentitySource.KNOWN_RELEASE, known.build
    elif synth is not None:
        version, source, build = synth.version, IdentitySource.SYNTHETIC, synth.build_num
    else:
        return None

    if known is not None:
        features: int | None = known.tdx_features0
    elif synth is not None:
        features = synth.tdx_features0
    else:
        features = None
    return ModuleIdentity(
        version=version, source=source, build=build, tdx_features0=features,
        seamsvn=sig.seamsvn, seamhash=sig.seamhash, module_hv=sig.module_hv,
        min_update_hv=sig.min_update_hv, no_downgrade=sig.no_downgrade,
        num_handoff_pages=sig.num_handoff_pages,
    )
