"""Boot a TDX module binary on an emulated platform and read what it says it is.

The binary goes through the same path as on a host: the P-SEAMLDR model installs it (signature,
SEAMHASH, layout, SYS_INFO_TABLE), then TDH.SYS.INIT, TDH.SYS.LP.INIT on every LP and TDH.SYS.RD
of the identity fields run Intel's code. Nothing is looked up: every value in the result is an
answer the binary gave. Importing this module raises ImportError without unicorn and capstone.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

from tdxseam.seam.real import require

require()

from tdxseam.formats.errors import FormatError  # noqa: E402
from tdxseam.formats.leaves import TdxLeaf  # noqa: E402
from tdxseam.formats.metadata import MdField  # noqa: E402
from tdxseam.formats.sigstruct import INTEL_KEY_HASH, SIGSTRUCT_SIZE, Sigstruct  # noqa: E402
from tdxseam.formats.status import status_name  # noqa: E402
from tdxseam.platform.cpu import DEFAULT_CPUID_1_EAX, Regs, SeamcallEnd  # noqa: E402
from tdxseam.platform.machine import Machine  # noqa: E402
from tdxseam.seam.firmware import SeamFirmware  # noqa: E402
from tdxseam.seam.pseamldr import PSeamldr, SeamldrBuild  # noqa: E402
from tdxseam.seam.real.errors import ModuleStopped, RealFirmwareError  # noqa: E402
from tdxseam.seam.real.module import RealModule, real_module_factory  # noqa: E402

PROBE_FIELDS = {
    "major": MdField.MAJOR_VERSION, "minor": MdField.MINOR_VERSION,
    "update": MdField.UPDATE_VERSION, "internal": MdField.INTERNAL_VERSION,
    "build_num": MdField.BUILD_NUM, "build_date": MdField.BUILD_DATE,
    "tdx_features0": MdField.TDX_FEATURES0, "module_hv": MdField.MODULE_HV,
    "min_update_hv": MdField.MIN_UPDATE_HV, "no_downgrade": MdField.NO_DOWNGRADE,
}


@dataclass
class ProbeResult:
    ok: bool = False
    error: str | None = None
    version: str | None = None
    major: int | None = None
    minor: int | None = None
    update: int | None = None
    internal: int | None = None
    build_num: int | None = None
    build_date: int | None = None  # YYYYMMDD as a decimal number
    tdx_features0: int | None = None
    module_hv: int | None = None
    min_update_hv: int | None = None
    no_downgrade: int | None = None
    # bytes of handoff data its TDH.SYS.SHUTDOWN writes (tdxseam.probe measures it on a booted
    # host: shutting down needs the kernel's configuration); None until measured
    handoff_size: int | None = None
    instructions: int = 0
    seconds: float = 0.0
    emulation_seconds: float = 0.0  # inside the CPU emulator
    loader_seconds: float = 0.0  # the engine's loader work (copy, relocation, tables, sweep)
    lps: int = 0
    calls: list[tuple[str, int, int]] = field(default_factory=list)  # (leaf, lp, RAX)

    def to_json(self) -> dict:
        d = asdict(self)
        d["tdx_features0"] = None if self.tdx_features0 is None else f"0x{self.tdx_features0:016x}"
        d["seconds"] = round(self.seconds, 3)
        d["calls"] = [{"leaf": n, "lp": lp, "status": f"0x{rax:016x}"} for n, lp, rax in self.calls]
        return d


def probe_machine(sigstruct: bytes, module_bin: bytes, lps: int, *, seed: int = 0,
                  cleared: frozenset[str] = frozenset(), removed: frozenset[str] = frozenset()) -> tuple[Machine, SeamFirmware, PSeamldr]:
    """A one-package machine whose CPUs are a model the sigstruct lists, with the binary installed."""
    sig = Sigstruct.from_bytes(sigstruct)
    cpuid = sig.cpuids[0] if sig.cpuids else DEFAULT_CPUID_1_EAX
    machine = Machine(lps, seed=seed, cpuid_1_eax=cpuid, trace=False)
    fw = SeamFirmware(machine)
    # a P-SEAMLDR of the module's line: a 2.0 one reads the version a 2.0 sigstruct carries
    build = SeamldrBuild(major=2, minor=0) if sig.declared_version is not None else SeamldrBuild()
    ldr = PSeamldr(fw, build, trusted_key_hashes=(INTEL_KEY_HASH, sig.key_hash))
    fw.module_factory = real_module_factory(seed=seed, cleared=cleared, removed=removed)
    result = fw.boot_load(sigstruct, module_bin)
    if not result.ok:
        problems = ldr.last_install.problems if ldr.last_install else []
        raise RealFirmwareError(f"the P-SEAMLDR did not load it: {result}"
                                + (f": {problems[0]}" if problems else ""))
    return machine, fw, ldr


def probe_module(module_bin: bytes, sigstruct: bytes, lps: int = 4, *, seed: int = 0,
                 cleared: frozenset[str] = frozenset(), removed: frozenset[str] = frozenset()
                 ) -> ProbeResult:
    """Boot `module_bin` on `lps` LPs and read its identity; errors end up in `error`, not raised."""
    out = ProbeResult(lps=lps)
    t0 = time.perf_counter()
    try:
        if len(sigstruct) != SIGSTRUCT_SIZE:
            raise RealFirmwareError(f"a sigstruct is {SIGSTRUCT_SIZE} bytes, not {len(sigstruct)}")
        machine, fw, _ldr = probe_machine(sigstruct, module_bin, lps, seed=seed, cleared=cleared,
                                           removed=removed)
        mod = fw.module
        assert isinstance(mod, RealModule)

        def call(leaf: TdxLeaf, cpu: int, **kw: int) -> Regs:
            regs = Regs(rax=int(leaf), **kw)
            end = machine.cpus[cpu].seamcall(regs)
            if end is not SeamcallEnd.SEAMRET:
                raise RealFirmwareError(f"{leaf.name} on LP {cpu}: SEAMCALL ended with {end.value}")
            out.calls.append((leaf.name, cpu, regs.rax))
            if regs.rax != 0:
                raise RealFirmwareError(f"{leaf.name} on LP {cpu} returned {status_name(regs.rax)}"
                                        f" (RCX=0x{regs.rcx:x} RDX=0x{regs.rdx:x})")
            return regs

        call(TdxLeaf.TDH_SYS_INIT, 0)
        for lp in range(lps):
            call(TdxLeaf.TDH_SYS_LP_INIT, lp)
        for name, fid in PROBE_FIELDS.items():
            setattr(out, name, call(TdxLeaf.TDH_SYS_RD, 0, rdx=int(fid)).r8)
        out.version = f"{out.major}.{out.minor}.{out.update:02d}"
        out.ok = True
    except (RealFirmwareError, ModuleStopped, FormatError, ValueError) as e:
        out.error = str(e)
    finally:
        out.seconds = time.perf_counter() - t0
        try:
            eng = fw.module.engine  # type: ignore[union-attr]
            if eng is not None:
                out.instructions = eng.stats.instructions
                out.emulation_seconds = eng.stats.seconds
                out.loader_seconds = eng.stats.setup_seconds
        except (NameError, AttributeError, UnboundLocalError):
            pass
    return out
