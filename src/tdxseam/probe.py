"""The most authoritative identity source: the module's own TDH.SYS.RD answers.

When the real-firmware engine (`tdxseam.seam.real`, needs unicorn and capstone) is installed, it
can run a module binary and ask it what it is. `formats.identity` cannot import it (formats
imports nothing of ours) and the operator tool imports none of the emulator, so this module, at
the top like `host.py`, hands them the engine as a plain callable: `firmware_probe()` gives
`probe(sigstruct, module) -> facts` (the engine's result: version, major, minor, update,
build_num, build_date, tdx_features0, ok, error), or None when the engine is not there.

`$TDXSEAM_PROBE` chooses: `auto` (use it when importable), `off` (never), `on` (it must be there:
`ProbeUnavailable` otherwise, naming what to install). Unset, a command's own default holds:
`auto` where one or two files are identified (demo, emulate, info, verify, mrseam), `off` where a
whole catalog is (plan, update, doctor: booting every release costs ~0.15 s each, and their files
name themselves).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable

from tdxseam.formats.record import record

TYPE_CHECKING = False  # typing costs start-up; annotations are strings (PEP 563)
if TYPE_CHECKING:
    from typing import Any

PROBE_ENV = "TDXSEAM_PROBE"
Probe = Callable[[bytes, bytes], object]  # the facts (FirmwareFacts) or a ProbeFailure


class ProbeUnavailable(RuntimeError):
    """$TDXSEAM_PROBE=on but the real-firmware engine cannot be imported."""


@record(frozen=True)
class ProbeFailure:
    """The engine was there but could not run this binary: not a source, a note."""

    error: str
    ok: bool = False


def firmware_probe(mode: str | None = None, *, lps: int = 4, default: str = "auto") -> Probe | None:
    mode = (mode or os.environ.get(PROBE_ENV) or default).strip().lower()
    if mode in ("off", "0", "no"):
        return None
    try:
        from tdxseam.seam.real.probe import probe_module  # type: ignore[import-not-found]
    except ImportError as exc:
        if mode in ("on", "1", "yes"):
            raise ProbeUnavailable(f"{PROBE_ENV}=on but the real-firmware engine is not available ({exc}); "
                                   "install the unicorn and capstone packages") from None
        return None
    return make_probe(probe_module, lps=lps)


def measure_handoff(sigstruct: bytes, module: bytes, *, cpus: int = 2) -> int | None:
    """Bytes of handoff data the binary's own TDH.SYS.SHUTDOWN writes: boot it on a small emulated
    host with the real-firmware engine (the kernel configures it as at boot), shut it down as an
    update would, read the handoff header. No file states this size, and a newer module refuses a
    shorter handoff (2.0.04 stops in TDH.SYS.UPDATE on 2.0.02's), so the model learns it here.
    None when the binary cannot be shut down on this platform."""
    from tdxseam.formats.sigstruct import Sigstruct
    from tdxseam.host import EmulatedHost
    from tdxseam.kernel.tdx import tdx_module_shutdown
    from tdxseam.seam.layout import HandoffHeader
    from tdxseam.seam.pseamldr import SeamldrBuild

    sig = Sigstruct.from_bytes(sigstruct)
    line = SeamldrBuild(major=2, minor=0) if sig.declared_version is not None else SeamldrBuild()
    host = EmulatedHost(cpus, module=(sigstruct, module), seamldr=line, trace=False, firmware="real",
                        cpuid_1_eax=sig.cpuids[0] if sig.cpuids else None)
    if host.run_on(0, tdx_module_shutdown, host.kernel) != 0:
        return None
    hdr = HandoffHeader.from_bytes(host.machine.mem.read(host.fw.module.layout.handoff_pa, 8))
    return hdr.size if hdr.valid else None


def make_probe(probe_module: Callable[..., Any], *, lps: int = 4, measure: bool = True) -> Probe:
    """A cached `probe(sigstruct, module)` around an engine's `probe_module(module, sigstruct, lps)`,
    with the handoff size the binary writes (`measure_handoff`) when `measure`.

    An engine that raises becomes a `ProbeFailure` (noted, never a source): identity then falls
    back to what the files say.
    """
    cache: dict[bytes, Any] = {}

    def probe(sigstruct: bytes, module: bytes) -> Any:
        key = hashlib.sha384(bytes(sigstruct) + bytes(module)).digest()
        if key not in cache:
            try:
                facts = probe_module(bytes(module), bytes(sigstruct), lps=lps)
                if getattr(facts, "ok", False) and measure:
                    try:
                        facts.handoff_size = measure_handoff(bytes(sigstruct), bytes(module))
                    except Exception:  # noqa: BLE001 - unmeasured: the model's layout stands
                        facts.handoff_size = None
                cache[key] = facts
            except ImportError:
                raise
            except Exception as exc:  # noqa: BLE001 - any engine failure is a note, not a crash
                cache[key] = ProbeFailure(f"{type(exc).__name__}: {exc}")
        return cache[key]

    return probe
