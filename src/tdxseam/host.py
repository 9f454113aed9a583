"""An emulated TDX host, assembled: machine, SEAM firmware, and a booted kernel.

This is the one place that knows all three layers; it plays the part of the platform firmware
(which loads the P-SEAMLDR and the first TDX module before the OS) and of the boot sequence.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tdxseam.formats.version import ModuleVersion
from tdxseam.kernel.kernel import Kernel
from tdxseam.kernel.locks import local_irq_restore, local_irq_save
from tdxseam.kernel.tdx import tdx_cpu_enable, tdx_module_config, tdx_read_sysinfo
from tdxseam.platform.machine import Machine
from tdxseam.platform.sched import Deadlock
from tdxseam.seam.firmware import SeamFirmware
from tdxseam.seam.module import TdxModule
from tdxseam.seam.pseamldr import PSeamldr, SeamldrBuild


class BootError(RuntimeError):
    """The emulated host did not come up (a model bug or an impossible configuration)."""


@dataclass(frozen=True)
class DeclaredModule:
    """A module the firmware loads at boot, known only by what it declares."""

    version: ModuleVersion
    features0: int = 0x2E1F0FBF  # 1.5.06's TDX_FEATURES0: TD-preserving (bit 1) set
    build_date: int = 0x20240407
    build_num: int = 744
    module_hv: int = 0
    min_update_hv: int = 0
    no_downgrade: int = 0
    num_handoff_pages: int = 13


class EmulatedHost:
    def __init__(self, cpus: int = 8, *, seed: int = 0, module: Any = None,
                 seamldr: SeamldrBuild | None = None, mutations: frozenset[str] = frozenset(),
                 trace: bool = True, erratum: bool = False, max_steps: int | None = None,
                 cpuid_1_eax: int | None = None) -> None:
        kw = {} if cpuid_1_eax is None else {"cpuid_1_eax": cpuid_1_eax}
        self.machine = Machine(cpus, seed=seed, trace=trace, max_steps=max_steps,
                               seamret_invd_vmcs_erratum=erratum, **kw)
        self.fw = SeamFirmware(self.machine)
        self.pseamldr = PSeamldr(self.fw, seamldr)
        self.kernel = Kernel(self.machine, mutations=mutations)
        self._firmware_load(module or DeclaredModule(ModuleVersion(1, 5, 6)))
        self._boot()

    @property
    def sched(self):
        return self.machine.sched

    def _firmware_load(self, module: Any) -> None:
        """What the BIOS does before the OS: load the first module and mark SEAM ready."""
        TdxModule(self.fw, module)
        self.fw.seamextend.seam_ready = 1

    def _boot(self) -> None:
        def cpu_up() -> int:
            flags = local_irq_save(self.kernel)
            try:
                return tdx_cpu_enable(self.kernel)
            finally:
                local_irq_restore(self.kernel, flags)

        for cpu, ret in enumerate(self.run_each(cpu_up)):
            if ret:
                raise BootError(f"TDX init failed on cpu{cpu}: errno {ret}")

        def configure() -> int:
            return tdx_module_config(self.kernel) or tdx_read_sysinfo(self.kernel)

        ret = self.run_on(0, configure)
        if ret:
            raise BootError(f"TDX module configuration failed: errno {ret}")
        self.fw.stats.__init__()  # boot traffic is not part of what callers measure

    # ---- running host code ----------------------------------------------------------------------

    def run(self) -> Deadlock | None:
        """Run everything spawned so far; model errors inside tasks are raised here."""
        dl = self.sched.run()
        if self.sched.errors:
            task, err = self.sched.errors[0]
            self.sched.errors.clear()
            raise err
        return dl

    def run_on(self, cpu: int, fn: Callable[..., Any], *args: Any) -> Any:
        t = self.sched.spawn(self.machine.cpus[cpu], fn, *args)
        dl = self.run()
        if dl is not None:
            raise BootError(dl.describe())
        return t.result

    def run_each(self, fn: Callable[..., Any], *args: Any) -> list[Any]:
        tasks = [self.sched.spawn(c, fn, *args) for c in self.machine.online_cpus()]
        dl = self.run()
        if dl is not None:
            raise BootError(dl.describe())
        return [t.result for t in tasks]
