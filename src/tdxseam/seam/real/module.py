"""A TDX module instance that is Intel's binary: the object SEAMLDR.INSTALL leaves behind the door.

`RealModule` takes the Python model's place (`SeamFirmware.module`) when the host runs real
firmware: each SEAMCALL's registers go to the engine and come back as the binary's SEAMRET left
them. The engine is built at the first SEAMCALL, after the P-SEAMLDR model has finished writing
SYS_INFO_TABLE. After TDH.SYS.SHUTDOWN and TDH.SYS.UPDATE the handoff area is copied back to the
machine's memory, where the P-SEAMLDR keeps it across the next install; before TDH.SYS.UPDATE it
is copied in again (what the machine's memory holds then is what the new module reads).

A module that stops inside a SEAMCALL (ud2, hlt, an exception) raises `ModuleStopped`: on hardware
that SEAMCALL never returns, so nothing is handed back to the caller; the module stays stopped.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from tdxseam.formats.leaves import TdxLeaf, leaf_name
from tdxseam.formats.metadata import MdField
from tdxseam.formats.sigstruct import Sigstruct
from tdxseam.platform.cpu import Cpu, Regs
from tdxseam.platform.cpumodel import CpuModel
from tdxseam.seam.layout import SeamLayout
from tdxseam.seam.td import TdRegistry
from tdxseam.seam.real import elf
from tdxseam.seam.real.engine import DEFAULT_BUDGET, REG_NAMES, SeamEngine
from tdxseam.seam.real.errors import ModuleStopped

if TYPE_CHECKING:
    from tdxseam.seam.firmware import SeamFirmware

_WRITES_HANDOFF = (TdxLeaf.TDH_SYS_SHUTDOWN, TdxLeaf.TDH_SYS_UPDATE)
_VERSION_FIELDS = (MdField.MAJOR_VERSION, MdField.MINOR_VERSION, MdField.UPDATE_VERSION)


def release_label(sig: Sigstruct) -> str:
    """What to call a binary before it has said its version: its sigstruct's, or its SEAMHASH."""
    d = sig.declared_version
    return str(d.version) if d is not None else f"SEAMHASH {sig.seamhash[:6].hex()}"


class RealModule:
    """Intel's binary behind the SEAMCALL door (see the module docstring)."""

    real = True

    def __init__(self, fw: SeamFirmware, sig: Sigstruct, image: bytes, layout: SeamLayout, *,
                 seed: int = 0, cleared: frozenset[str] = frozenset(),
                 removed: frozenset[str] = frozenset(), budget: int = DEFAULT_BUDGET) -> None:
        self.fw, self.sig, self.layout = fw, sig, layout
        self.seed, self.cleared, self.removed, self.budget = seed, cleared, removed, budget
        self.engine: SeamEngine | None = None
        self.stopped: ModuleStopped | None = None
        self.reported: dict[int, int] = {}  # SYS.RD answers seen at the door: what the binary says
        self.calls: list[tuple[int, int, int]] = []  # (leaf, cpu, RAX out)
        self.build = None  # the model's ModuleBuild: a real module is what it says at SYS.RD
        self.tds = TdRegistry()  # the model's TD view: a real module's TDs live in its own memory
        self.ready = False  # as far as the door saw: KEY.CONFIG or UPDATE done, no SHUTDOWN since

    def __repr__(self) -> str:
        return f"<RealModule {self.release}>"

    @property
    def release(self) -> str:
        r = self.reported
        if all(f in r for f in _VERSION_FIELDS):
            return f"{r[MdField.MAJOR_VERSION]}.{r[MdField.MINOR_VERSION]}.{r[MdField.UPDATE_VERSION]:02d}"
        return release_label(self.sig)

    @property
    def machine(self):
        return self.fw.machine

    def _engine(self) -> SeamEngine:
        if self.engine is None:
            fw = self.fw
            cpu = CpuModel.of(fw.machine, fw.seamrr_base, fw.seamrr_size, self.cleared,
                              self.removed)
            self.engine = SeamEngine(mem=fw.machine.mem, layout=self.layout, sig=self.sig, cpu=cpu,
                                     release=self.release, seed=self.seed, seamops=self._seamops,
                                     budget=self.budget, leaf_name=leaf_name)
        return self.engine

    def _seamops(self, leaf: int) -> dict[str, int]:
        """SEAMOPS as the CPU answers it: capabilities, and SEAMDB_GETREF from the firmware's SEAMDB."""
        fw = self.fw
        if leaf == 0:
            return {"rax": fw.seamops_capabilities}
        if leaf == 4:
            res, index, nonce = fw.seamdb.getref()
            return {"rax": int(res), "r10": index, "r11": nonce, "r12": 0, "r13": 0, "r14": 0,
                    "r15": fw.seamdb.capacity}
        return {"rax": 1}  # INPUT_ERROR: a leaf this CPU does not have

    def dispatch(self, cpu: Cpu, regs: Regs) -> None:
        if self.stopped is not None:
            raise self.stopped
        leaf = regs.rax & 0xFFFF
        field = regs.rdx
        self.machine.emit("module-call", leaf_name(regs.rax))
        eng = self._engine()
        eng.release = self.release
        if leaf == TdxLeaf.TDH_SYS_UPDATE:  # the handoff area as the machine's memory holds it now
            eng.copy_in(self.layout.handoff_pa, self.layout.handoff_size)
        try:
            res = eng.seamcall(cpu.id, {n: getattr(regs, n) for n in REG_NAMES})
        except ModuleStopped as e:
            self.stopped = e
            self.machine.emit("module-stopped", str(e))
            raise
        finally:
            if leaf in _WRITES_HANDOFF:
                eng.copy_out(self.layout.handoff_pa, self.layout.handoff_size)
        for n in REG_NAMES:
            setattr(regs, n, res.regs[n])
        self.calls.append((leaf, cpu.id, regs.rax))
        if regs.rax == 0:
            if leaf == TdxLeaf.TDH_SYS_RD:
                self.reported[field] = regs.r8
            elif leaf in (TdxLeaf.TDH_SYS_KEY_CONFIG, TdxLeaf.TDH_SYS_UPDATE):
                self.ready = True
            elif leaf == TdxLeaf.TDH_SYS_SHUTDOWN:
                self.ready = False


def real_module_factory(*, seed: int = 0, cleared: frozenset[str] = frozenset(),
                        removed: frozenset[str] = frozenset(), budget: int = DEFAULT_BUDGET):
    """A `SeamFirmware.module_factory` that runs the loaded binary itself."""
    def make(fw: SeamFirmware, sig: Sigstruct, image: bytes, layout: SeamLayout) -> RealModule:
        return RealModule(fw, sig, image, layout, seed=seed, cleared=cleared, removed=removed,
                          budget=budget)

    def relocatable(image: bytes) -> bool:
        """What the P-SEAMLDR's ELF relocation step needs: an ELF64 with .text and RELATIVE relocations."""
        try:
            elf.section(image, ".text")
            elf.relative_relocations(image)
        except elf.ElfError:
            return False
        return True

    make.relocatable = relocatable  # type: ignore[attr-defined]
    return make
