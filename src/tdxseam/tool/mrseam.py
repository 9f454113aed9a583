"""The attestation values a TD quote carries after a module update, computed from the file.

MRSEAM = the sigstruct's SEAMHASH (= SHA-384 of the module pages, which `verify` checks),
MRSIGNERSEAM = 48 zero bytes for Intel-signed modules, TEE_TCB_SVN = [minor SVN, major SVN, 0...]
(spec-formats §3). Bytes 2..15 of TEE_TCB_SVN are set by the platform, not the module, so they
are reported as zero; allow-lists that match on the full 16 bytes must take them from a quote.
"""

from __future__ import annotations

from typing import Any

from tdxseam.formats.measure import expected_measurement
from tdxseam.tool.verify import VerifyResult


def measurement_json(res: VerifyResult) -> dict[str, Any]:
    """{file, version, mrseam, mrsignerseam, tee_tcb_svn, seamsvn, ok, problems, identity} (hex, lowercase)."""
    out: dict[str, Any] = {
        "file": res.file.display,
        "version": str(res.version) if res.version else None,
        "mrseam": None,
        "mrsignerseam": None,
        "tee_tcb_svn": None,
        "seamsvn": None,
        # MRSEAM does not depend on the version: a file whose version nothing states still has one
        "ok": all(p.code == "identity.unknown" for p in res.problems),
        "problems": [p.to_json() for p in res.problems],
        "identity": res.identity.to_json() if res.identity else None,  # where each fact came from
    }
    if res.sig is not None:
        m = expected_measurement(res.sig)
        out.update(
            mrseam=m.mrseam.hex(),
            mrsignerseam=m.mrsignerseam.hex(),
            tee_tcb_svn=m.tee_tcb_svn.hex(),
            seamsvn=f"{res.sig.major_svn}.{res.sig.minor_svn}",
        )
    return out
