"""What a module install puts in the measurement registers (spec-formats §3, spec-firmware §14).

The P-SEAMLDR records MRSEAM = the sigstruct's SEAMHASH (just checked against the module pages),
MRSIGNERSEAM = 48 zero bytes for Intel-signed modules (not the key hash), SEAMATTRIBUTES = 0 and
TEE_TCB_SVN[0..1] = (minor SVN, major SVN). Attestation maintainers need these before an update.
"""

from __future__ import annotations

import hashlib

from tdxseam.formats.page import PAGE_SIZE
from tdxseam.formats.record import record
from tdxseam.formats.sigstruct import SEAMHASH_STEP, Problem, Sigstruct
from tdxseam.formats.status import SeamldrStatus

MRSIGNERSEAM_INTEL = bytes(48)
SEAM_ATTRIBUTES = 0
TEE_TCB_SVN_SIZE = 16


def seamhash(module: bytes) -> bytes:
    """SHA-384 of the module as num_module_pages x 4096 bytes: what SEAMHASH must equal."""
    h = hashlib.sha384(module)
    rem = len(module) % PAGE_SIZE
    if rem:
        h.update(bytes(PAGE_SIZE - rem))
    return h.digest()


def tee_tcb_svn(seamsvn: int) -> bytes:
    """TEE_TCB_SVN as set by the install: [minor, major], then zeros.

    Byte 2 (last_patch_se_svn) and the rest are platform-dependent in real quotes; a module
    file cannot predict them, so they are left zero here.
    """
    return bytes([seamsvn & 0xFF, (seamsvn >> 8) & 0xFF]) + bytes(TEE_TCB_SVN_SIZE - 2)


@record(frozen=True)
class Measurement:
    """The TD-quote fields a successful install of this sigstruct yields."""

    mrseam: bytes
    mrsignerseam: bytes
    seam_attributes: int
    tee_tcb_svn: bytes


def expected_measurement(sig: Sigstruct) -> Measurement:
    return Measurement(sig.seamhash, MRSIGNERSEAM_INTEL, SEAM_ATTRIBUTES, tee_tcb_svn(sig.seamsvn))


def check_seamhash(sig: Sigstruct, module: bytes) -> Problem | None:
    """INSTALL step 9: the module pages as supplied must hash to SEAMHASH, else EBADHASH."""
    got = seamhash(module)
    if got == sig.seamhash:
        return None
    return Problem(
        "seamhash", SEAMHASH_STEP,
        f"SHA-384 of the module is {got.hex()[:16]}…, sigstruct says {sig.seamhash.hex()[:16]}…",
        SeamldrStatus.EBADHASH,
    )
