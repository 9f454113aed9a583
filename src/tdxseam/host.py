"""An emulated TDX host, assembled: machine, SEAM firmware, and a booted kernel.

This is the one place that knows all three layers; it plays the part of the platform firmware
(which loads the P-SEAMLDR and the first TDX module before the OS) and of the boot sequence.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

from tdxseam.formats.image import extract
from tdxseam.formats.sigstruct import INTEL_KEY_HASH
from tdxseam.formats.testsign import DEFAULT_CPUIDS, make_module, signing_key
from tdxseam.formats.version import ModuleVersion
from tdxseam.kernel.kernel import Kernel
from tdxseam.kernel.locks import local_irq_restore, local_irq_save
from tdxseam.kernel.tdx import tdx_cpu_enable, tdx_enable, tdx_init
from tdxseam.platform.machine import Machine
from tdxseam.platform.sched import Deadlock
from tdxseam.seam.firmware import SeamFirmware
from tdxseam.seam.pseamldr import MAX_NUM_OF_LPS, PSeamldr, SeamldrBuild


class BootError(RuntimeError):
    """The emulated host did not come up (a model bug, an impossible configuration, or a fault
    planted at boot); `dmesg` is what the kernel printed until then."""

    def __init__(self, message: str, dmesg: str = "") -> None:
        super().__init__(message)
        self.dmesg = dmesg


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


@lru_cache(maxsize=32)
def synthesize(declared: DeclaredModule, cpuids: tuple[int, ...]) -> tuple[bytes, bytes]:
    """A test-signed synthetic module that declares exactly `declared`: (sigstruct, module).

    Its CPUID table names every CPU of spec-formats §9 plus `cpuids`, so it loads on the host.
    """
    d = declared
    date = int(f"{d.build_date:x}") if f"{d.build_date:x}".isdigit() else d.build_date
    table = tuple(dict.fromkeys(DEFAULT_CPUIDS + cpuids))
    return make_module(d.version, features0=d.features0, build=d.build_num, date=date,
                       module_hv=d.module_hv, min_update_hv=d.min_update_hv,
                       no_downgrade=d.no_downgrade, num_handoff_pages=d.num_handoff_pages,
                       cpuids=table)


class EmulatedHost:
    def __init__(self, cpus: int = 8, *, seed: int = 0, module: Any = None,
                 seamldr: SeamldrBuild | None = None, mutations: frozenset[str] = frozenset(),
                 trace: bool = True, erratum: bool = False, max_steps: int | None = None,
                 cpuid_1_eax: int | None = None, trust_test_key: bool = True,
                 boot_faults: Any = None) -> None:
        kw = {} if cpuid_1_eax is None else {"cpuid_1_eax": cpuid_1_eax}
        self.machine = Machine(cpus, seed=seed, trace=trace, max_steps=max_steps,
                               seamret_invd_vmcs_erratum=erratum, **kw)
        self.fw = SeamFirmware(self.machine)
        if seamldr is None and cpus > MAX_NUM_OF_LPS:
            # The 1.5 P-SEAMLDR's LP bitmaps hold 1024 LPs; a bigger emulated platform gets a
            # loader sized for it rather than one that could never load a module.
            seamldr = replace(SeamldrBuild(), max_lps=cpus)
        # A "test" host (the default) trusts the deterministic test key besides Intel's.
        trusted = (INTEL_KEY_HASH, signing_key().key_hash) if trust_test_key else (INTEL_KEY_HASH,)
        self.pseamldr = PSeamldr(self.fw, seamldr, trusted_key_hashes=trusted)
        self.kernel = Kernel(self.machine, mutations=mutations)
        self._firmware_load(module or DeclaredModule(ModuleVersion(1, 5, 6)))
        if boot_faults is not None:
            # a fault plan (seam.faults.FaultPlan) armed before the OS boots: the kernel's boot
            # SEAMCALLs meet it, and BootError carries what the kernel printed
            self.fw.fault_hook = boot_faults
        self._boot()

    @property
    def sched(self):
        return self.machine.sched

    def _firmware_load(self, module: Any) -> None:
        """What the BIOS does before the OS: SEAMLDR.INSTALL (LOAD) of the first module on every LP.

        `module` is a `DeclaredModule` (booted as a test-signed synthetic module declaring the same
        version, features and handoff values: the default is 1.5.06-like), a module image (Intel's
        v1 blob or a Linux v2 image), or a (sigstruct, module) pair of bytes. Everything goes
        through the P-SEAMLDR, so SEAMEXTEND, SEAMDB and SYS_INFO_TABLE are what an install makes.
        """
        if isinstance(module, DeclaredModule):
            cpuids = tuple(sorted({c.cpuid_1_eax for c in self.machine.cpus}))
            sigstruct, body = synthesize(module, cpuids)
        elif isinstance(module, (bytes, bytearray, memoryview)):
            parts = extract(bytes(module), what="boot module image")
            sigstruct, body = parts.sigstruct, parts.module
        elif isinstance(module, tuple) and len(module) == 2:
            sigstruct, body = bytes(module[0]), bytes(module[1])
        else:
            raise TypeError(f"cannot boot a {type(module).__name__}: give a DeclaredModule, an "
                            "image, or (sigstruct, module) bytes")
        result = self.fw.boot_load(sigstruct, body)
        if not result.ok:
            problems = self.pseamldr.last_install.problems if self.pseamldr.last_install else []
            detail = f": {problems[0]}" if problems else ""
            raise BootError(f"firmware could not load the TDX module: {result}{detail}")

    def _boot(self) -> None:
        def cpu_up() -> int:
            flags = local_irq_save(self.kernel)
            try:
                return tdx_cpu_enable(self.kernel)
            finally:
                local_irq_restore(self.kernel, flags)

        self.run_on(0, tdx_init, self.kernel)
        for cpu, ret in enumerate(self.run_each(cpu_up)):
            if ret:
                raise BootError(f"TDX init failed on cpu{cpu}: errno {ret}", self.kernel.dmesg_text())

        ret = self.run_on(0, tdx_enable, self.kernel)
        if ret:
            raise BootError(f"TDX module configuration failed: errno {ret}", self.kernel.dmesg_text())
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
