"""The same boot and update twice: on the Python model and on Intel's binaries, call by call.

Both runs use one kernel, one seed and one P-SEAMLDR model; only what answers the TDX-module
SEAMCALLs differs. Every module SEAMCALL is recorded at the door and the two records are compared
in order: the leaf and inputs must match (else the kernel went another way, and the comparison
stops there), then RAX and the leaf's output registers. A register a leaf does not define as an
output is compared too but reported apart: the model leaves it as it came in, the binary may not.
Each difference is either fixed in the model or explained in docs/real-firmware.md (`KNOWN`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from tdxseam.demo import DEFAULT_REAL, DemoError, choose_module, find_intel_catalog, host_for
from tdxseam.probe import firmware_probe
from tdxseam.formats.leaves import TdxLeaf, leaf_name
from tdxseam.formats.metadata import MdField
from tdxseam.kernel.seamldr import seamldr_install_module
from tdxseam.seam.stopped import ModuleStopped

REGS = ("rax", "rcx", "rdx", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")
# Output registers each leaf defines (besides RAX), per the module's ABI.
OUTPUTS = {
    TdxLeaf.TDH_SYS_RD: ("rdx", "r8"),  # next field id, value
    TdxLeaf.TDH_SYS_TDMR_INIT: ("rdx",),  # next address to initialise
}
# Differences understood and kept (docs/real-firmware.md says why): (leaf, register, field id or None)
KNOWN = {
    (TdxLeaf.TDH_SYS_TDMR_INIT, "rdx", None): "the model keeps no PAMT: one TDMR.INIT call "
                                              "finishes, it reports no next address",
    (TdxLeaf.TDH_SYS_RD, "rdx", None): "the model's metadata table is a subset: its next field "
                                       "id is the next one it has",
}


@dataclass
class CallDiff:
    index: int
    cpu: int
    leaf: str
    field: str | None
    register: str
    model: int
    real: int
    kind: str  # "status", "output", "other-register", "diverged"
    known: str | None = None

    def line(self) -> str:
        what = f"{self.leaf}" + (f" {self.field}" if self.field else "")
        note = f"  [known: {self.known}]" if self.known else ""
        return (f"#{self.index} cpu{self.cpu} {what}: {self.register.upper()} model 0x{self.model:x} "
                f"real 0x{self.real:x} ({self.kind}){note}")


@dataclass
class CompareResult:
    from_version: str
    to_version: str
    cpus: int
    calls_model: int = 0
    calls_real: int = 0
    compared: int = 0
    diffs: list[CallDiff] = field(default_factory=list)
    model_end: str = "ok"
    real_end: str = "ok"

    @property
    def unexplained(self) -> list[CallDiff]:
        return [d for d in self.diffs if d.known is None and d.kind != "other-register"]

    @property
    def ok(self) -> bool:
        return not self.unexplained and self.model_end == self.real_end

    def to_json(self) -> dict:
        d = asdict(self)
        d["ok"] = self.ok
        d["unexplained"] = len(self.unexplained)
        for x in d["diffs"]:
            x["model"], x["real"] = f"0x{x['model']:x}", f"0x{x['real']:x}"
        return d


def _field_name(leaf: int, regs) -> str | None:
    if leaf != TdxLeaf.TDH_SYS_RD:
        return None
    try:
        return MdField(regs.rdx).name
    except ValueError:
        return f"0x{regs.rdx:x}"


def _run(src, dst, cpus: int, seed: int, firmware: str, handoff_hv_raise: int) -> tuple[list, str]:
    host = host_for(src, cpus, seed=seed, firmware=firmware, other=dst, record_seamcalls=True)
    host.fw.handoff_hv_raise = handoff_hv_raise
    end = "ok"
    try:
        ret = host.run_on(0, seamldr_install_module, host.kernel, dst.image)
        if ret:
            end = f"update failed: errno {ret}"
    except ModuleStopped as e:
        end = f"stopped in SEAM: {e.release} in {e.leaf}"
    return list(host.fw.call_log), end


def compare_firmware(from_: str | None = None, to: str | None = None, *, cpus: int = 4, seed: int = 0,
                     catalog: str | None = None, handoff_hv_raise: int = 0) -> CompareResult:
    cat = find_intel_catalog(catalog)
    if cat is None:
        raise DemoError("firmware compare needs Intel's binaries: give --catalog DIR")
    # the model is told what the binaries say of themselves (TDX_FEATURES0, the handoff size their
    # SHUTDOWN writes): the comparison is of behaviour, not of what the files leave unsaid
    probe = firmware_probe("on")
    src = choose_module(from_ or DEFAULT_REAL[0], cat, probe=probe)
    dst = choose_module(to or DEFAULT_REAL[1], cat, probe=probe)
    model, model_end = _run(src, dst, cpus, seed, "model", handoff_hv_raise)
    real, real_end = _run(src, dst, cpus, seed, "real", handoff_hv_raise)
    res = CompareResult(str(from_ or DEFAULT_REAL[0]), str(to or DEFAULT_REAL[1]), cpus,
                        len(model), len(real), model_end=model_end, real_end=real_end)
    for i, ((cpu_m, in_m, _e_m, out_m), (cpu_r, in_r, _e_r, out_r)) in enumerate(zip(model, real)):
        leaf = in_m.rax & 0xFFFF
        if (cpu_m, in_m) != (cpu_r, in_r):
            res.diffs.append(CallDiff(i, cpu_m, leaf_name(in_m.rax), None, "rax", in_m.rax, in_r.rax,
                                      "diverged", None))
            break
        res.compared += 1
        fname = _field_name(leaf, in_m)
        for reg in REGS:
            a, b = getattr(out_m, reg), getattr(out_r, reg)
            if a == b:
                continue
            if reg == "rax":
                kind = "status"
            elif reg in OUTPUTS.get(leaf, ()) and out_m.rax == 0:
                kind = "output"
            else:
                kind = "other-register"
            known = KNOWN.get((leaf, reg, fname)) or KNOWN.get((leaf, reg, None))
            res.diffs.append(CallDiff(i, cpu_m, leaf_name(in_m.rax), fname, reg, a, b, kind, known))
    return res
