"""An emulated TDX host, assembled: machine, SEAM firmware, and a booted kernel.

This is the one place that knows all three layers; it plays the part of the platform firmware
(which loads the P-SEAMLDR and the first TDX module before the OS) and of the boot sequence.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any

from tdxseam.formats.identity import ModuleIdentity, resolve_identity
from tdxseam.formats.image import extract
from tdxseam.formats.sigstruct import Sigstruct
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

    def __init__(self, message: str, dmesg: str = "", errno: int = -1) -> None:
        super().__init__(message)
        self.dmesg = dmesg
        self.errno = errno


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
                 known_modules: Iterable[ModuleIdentity] = (),
                 boot_faults: Any = None, kernel: str | Any = None, sockets: int = 1,
                 firmware: str = "model", record_seamcalls: bool = False) -> None:
        # what a platform reset rebuilds from (reboot())
        self._platform = dict(cpus=cpus, seed=seed, module=module, seamldr=seamldr, mutations=mutations,
                              trace=trace, erratum=erratum, max_steps=max_steps, cpuid_1_eax=cpuid_1_eax,
                              trust_test_key=trust_test_key, known_modules=tuple(known_modules),
                              kernel=kernel, sockets=sockets, firmware=firmware,
                              record_seamcalls=record_seamcalls)
        self.tdx_error = 0  # after kexec: the new kernel's TDX init error (0: TDX usable)
        # what a platform reset boots (None: a host built again from `_platform`); the simulator's
        # hosts load a boot image of their shape instead (sim/boot_image.py)
        self.fresh_boot: Callable[[], EmulatedHost] | None = None
        kw = {} if cpuid_1_eax is None else {"cpuid_1_eax": cpuid_1_eax}
        self.machine = Machine(cpus, seed=seed, trace=trace, max_steps=max_steps,
                               seamret_invd_vmcs_erratum=erratum, sockets=sockets, **kw)
        self.fw = SeamFirmware(self.machine)
        if seamldr is None and cpus > MAX_NUM_OF_LPS:
            # The 1.5 P-SEAMLDR's LP bitmaps hold 1024 LPs; a bigger emulated platform gets a
            # loader sized for it rather than one that could never load a module.
            seamldr = replace(SeamldrBuild(), max_lps=cpus)
        # A "test" host (the default) trusts the deterministic test key besides Intel's.
        trusted = (INTEL_KEY_HASH, signing_key().key_hash) if trust_test_key else (INTEL_KEY_HASH,)
        self.pseamldr = PSeamldr(self.fw, seamldr, trusted_key_hashes=trusted)
        self.kernel = Kernel(self.machine, mutations=mutations, profile=kernel)
        for ident in self._platform["known_modules"]:  # what the binaries are, as resolved from their files
            self.fw.known_modules[bytes(ident.seamhash)] = ident
        self.firmware = firmware
        if firmware == "real":
            # The TDX module is Intel's binary on the emulated CPU (the P-SEAMLDR stays the model).
            from tdxseam.seam.real import require
            require()
            from tdxseam.seam.real.module import real_module_factory
            if self.machine.sockets != 1:
                raise BootError("the real-firmware platform model describes one package")
            self.fw.module_factory = real_module_factory(seed=seed)
        elif firmware != "model":
            raise ValueError(f"firmware is 'model' or 'real', not {firmware!r}")
        if record_seamcalls:
            self.fw.call_log = []
        self._firmware_load(module or DeclaredModule(ModuleVersion(1, 5, 6)))
        if boot_faults is not None:
            # a fault plan (seam.faults.FaultPlan) armed before the OS boots: the kernel's boot
            # SEAMCALLs meet it, and BootError carries what the kernel printed
            self.fw.fault_hook = boot_faults
        self._boot()

    @property
    def sched(self):
        return self.machine.sched

    def reseed(self, seed: int) -> None:
        """Give every RNG the host draws from the seed `seed` (a host loaded from a boot image,
        `sim/boot_image.py`): the scheduler's draw, the page allocator's shuffle and the
        P-SEAMLDR's RDRAND go on as if seeded so; what the boot already did stays. A reboot
        boots with it too."""
        if self.firmware != "model":
            raise ValueError("only a model host is reseeded (Intel's module keeps its boot seed)")
        self._platform["seed"] = seed
        self.machine.reseed(seed)
        self.pseamldr.reseed()

    def _firmware_load(self, module: Any) -> None:
        """What the BIOS does before the OS: SEAMLDR.INSTALL (LOAD) of the first module on every LP.

        `module` is a `DeclaredModule` (booted as a test-signed synthetic module declaring the same
        version, features and handoff values: the default is 1.5.06-like), a module image (Intel's
        v1 blob or a Linux v2 image), its path (then identified from its name and bytes too, and
        the platform told; IdentityError when they disagree), or a (sigstruct, module) pair. Everything goes
        through the P-SEAMLDR, so SEAMEXTEND, SEAMDB and SYS_INFO_TABLE are what an install makes.
        """
        if isinstance(module, (str, os.PathLike)):
            path = Path(module)
            parts = extract(path.read_bytes(), what=str(path))
            sigstruct, body = parts.sigstruct, parts.module
            ident = resolve_identity(Sigstruct.from_bytes(sigstruct), body, name=path.name, what=str(path))
            self.fw.known_modules.setdefault(bytes(ident.seamhash), ident)
        elif isinstance(module, DeclaredModule):
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
                raise BootError(f"TDX init failed on cpu{cpu}: errno {ret}", self.kernel.dmesg_text(), ret)

        from tdxseam.platform.sched import WaitQueue

        wq = WaitQueue(self.sched, "boot")

        def on(cpu: int, fn: Callable[[], int]) -> int:
            """Run fn on `cpu` (KEY.CONFIG on each package) and wait for its result."""
            box: list[int] = []

            def body() -> None:
                box.append(fn())
                wq.notify_all()

            self.sched.spawn(self.machine.cpus[cpu], body)
            self.kernel.this_cpu().sleep_until(wq, lambda: bool(box), "boot: KEY.CONFIG")
            return box[0]

        ret = self.run_on(0, tdx_enable, self.kernel, on)
        if ret:
            raise BootError(f"TDX module configuration failed: errno {ret}", self.kernel.dmesg_text(), ret)
        self.fw.stats.__init__()  # boot traffic is not part of what callers measure

    # ---- crash, reboot, kexec --------------------------------------------------------------------

    def crash(self) -> None:
        """The kernel dies where it stands: every task is abandoned mid-flight."""
        self.sched._kill_all()
        self.machine.emit("crash", "kernel panic")

    def reboot(self) -> EmulatedHost:
        """A platform reset: SEAMRR is cleared, so nothing of SEAM survives (not the module a
        runtime update installed, not the SEAMDB: `num_remaining_updates` is back to its boot
        value); the BIOS loads its boot module again and a fresh kernel boots. Returns the new host."""
        self.crash()
        if self.fresh_boot is not None:
            return self.fresh_boot()
        return EmulatedHost(**self._platform)

    def kexec(self) -> int:
        """Boot a new kernel without a platform reset: SEAM keeps its state (the running module,
        initialised or lost, the SEAMDB and its remaining updates); the new kernel finds a module
        it did not initialise. Returns the new kernel's TDX init errno (0: TDX usable)."""
        self.crash()
        p = self._platform
        self.kernel = Kernel(self.machine, mutations=p["mutations"], profile=p["kernel"])
        try:
            self._boot()
            self.tdx_error = 0
        except BootError as e:
            self.tdx_error = e.errno or -1
        self.machine.emit("kexec", f"TDX init {self.tdx_error}")
        return self.tdx_error

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
