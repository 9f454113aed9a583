"""The emulated machine: CPUs, memory, interrupts and the scheduler that runs them."""

from __future__ import annotations

from tdxseam.platform.cpu import DEFAULT_CPUID_1_EAX, VMX_BASIC_NO_SEAMRET_INVD_VMCS, Cpu, SeamSide
from tdxseam.platform.irq import IrqController
from tdxseam.platform.memory import PhysMem
from tdxseam.platform.sched import Scheduler

MAX_CPUS = 4096
# Private KeyIDs (HKIDs) the platform gives TDX: 1..63 here, a model value (the real number comes
# from IA32_MKTME_KEYID_PARTITIONING).
NUM_PRIVATE_HKIDS = 63


class Machine:
    def __init__(self, ncpus: int, *, seed: int = 0, cpuid_1_eax: int = DEFAULT_CPUID_1_EAX,
                 seamret_invd_vmcs_erratum: bool = False, trace: bool = True,
                 max_steps: int | None = None, sockets: int = 1) -> None:
        if not 1 <= ncpus <= MAX_CPUS:
            raise ValueError(f"a machine has 1 to {MAX_CPUS} logical CPUs, not {ncpus}")
        self.seed = seed
        self.sched = Scheduler(seed, trace=trace, max_steps=max_steps)
        vmx_basic = 0 if seamret_invd_vmcs_erratum else VMX_BASIC_NO_SEAMRET_INVD_VMCS
        self.cpus = [Cpu(self, i, cpuid_1_eax, vmx_basic) for i in range(ncpus)]
        if not 1 <= sockets <= ncpus:
            raise ValueError(f"a machine of {ncpus} CPUs has 1 to {ncpus} sockets, not {sockets}")
        self.sockets = sockets
        self.mem = PhysMem(seed=seed)
        self.irq = IrqController(self)
        self.seam: SeamSide | None = None
        self.num_private_hkids = NUM_PRIVATE_HKIDS
        self.debug_unlocked = False  # IA32_SGX_DEBUG_MODE: may debug-signed modules load?

    def reseed(self, seed: int) -> None:
        """The machine's RNGs (the scheduler's draw, the page allocator's shuffle) from `seed` on."""
        self.seed = seed
        self.sched.reseed(seed)
        self.mem.reseed(seed)

    @property
    def ncpus(self) -> int:
        return len(self.cpus)

    def package_of(self, cpu_id: int) -> int:
        """topology_physical_package_id(): CPUs are split evenly, in order, over the sockets."""
        return cpu_id * self.sockets // self.ncpus

    def set_cpu_online(self, cpu: Cpu, online: bool) -> None:
        """Mark `cpu` on- or offline (the kernel's set_cpu_online()): the one place that does, so
        an observer (the simulator's checks) may replace it to learn of every change."""
        cpu.online = online

    def online_cpus(self) -> list[Cpu]:
        return [c for c in self.cpus if c.online]

    def current_cpu(self) -> Cpu:
        t = self.sched.current
        if t is None:
            raise RuntimeError("no simulated CPU is running")
        return t.cpu

    def emit(self, kind: str, detail: str = "", args: dict | None = None) -> None:
        """Record a trace event for the CPU now running (or the machine, as cpu -1)."""
        sched = self.sched
        if not sched.trace.enabled:
            return  # an untraced run: nothing is recorded
        t = sched.current
        sched.trace.emit(sched.steps, t.cpu.id if t else -1, kind, detail, args)

    @property
    def tracing(self) -> bool:
        """Is the run traced? Checked before building an event's text or args."""
        return self.sched.trace.enabled
