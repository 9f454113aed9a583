"""Logical CPUs: interrupt flag, preemption count, VMX state, and the SEAMCALL instruction.

SEAMCALL is the one door between the host and SEAM mode (architecture.md). The CPU models the
instruction, not what runs behind it: it faults (#UD outside VMX operation), asks the SEAM side
installed on the machine to execute the leaf, and reports how the instruction ended. Turning those
endings into status values is the host kernel's business (`tdxseam.kernel.seamcall`).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, fields
from enum import Enum
from typing import TYPE_CHECKING, Any, Protocol

from tdxseam.formats.leaves import leaf_name
from tdxseam.formats.status import status_name
from tdxseam.platform.sched import SchedulerError, SpinWord, WaitQueue, call_site, lazy_site

if TYPE_CHECKING:
    from tdxseam.platform.machine import Machine

# CPUID.1.EAX of a Sapphire Rapids part, stepping 8 (spec-formats.md §9).
DEFAULT_CPUID_1_EAX = 0x000806F8
# MSR_IA32_VMX_BASIC bit 60: set when SEAMRET does *not* clear the current VMCS (spec-linux.md §9).
VMX_BASIC_NO_SEAMRET_INVD_VMCS = 1 << 60


@dataclass(slots=True)
class Regs:
    """General-purpose registers a SEAMCALL reads and writes (the kernel's tdx_module_args).
    Slots: every SEAMCALL makes one or two and every leaf reads them."""

    rax: int = 0
    rcx: int = 0
    rdx: int = 0
    r8: int = 0
    r9: int = 0
    r10: int = 0
    r11: int = 0
    r12: int = 0
    r13: int = 0
    r14: int = 0
    r15: int = 0

    def copy(self) -> Regs:
        return Regs(self.rax, self.rcx, self.rdx, self.r8, self.r9, self.r10, self.r11, self.r12,
                    self.r13, self.r14, self.r15)

    def nonzero(self) -> dict[str, str]:
        """The registers that hold something, as hex strings (for traces)."""
        return {f.name: f"0x{v:x}" for f in fields(self) if (v := getattr(self, f.name))}


class SeamcallEnd(Enum):
    """How a SEAMCALL instruction ended."""

    SEAMRET = "seamret"  # SEAM software ran; RAX (and maybe more) hold its answer
    VMFAILINVALID = "vmfailinvalid"  # RFLAGS.CF = 1, nothing ran, RAX unchanged
    UD = "#UD"  # invalid opcode: not in VMX operation
    GP = "#GP"  # general protection: e.g. in VMX non-root or CPL > 0


# Bound once: every SEAMCALL's ending is compared with it, and on Python 3.11 a member looked up on
# its enum class costs a Python-level hook (EnumType.__getattr__).
SEAMRET = SeamcallEnd.SEAMRET


class SeamSide(Protocol):
    """What the SEAM side installs on a machine: it executes leaves entered through the door."""

    def seamcall(self, cpu: Cpu, regs: Regs) -> SeamcallEnd: ...


IrqHandler = Callable[..., Any]


class Cpu:
    def __init__(self, machine: Machine, cpu_id: int, cpuid_1_eax: int, vmx_basic: int) -> None:
        self.machine = machine
        self.sched = machine.sched  # a machine keeps its scheduler: one lookup less per preemption point
        self.id = cpu_id
        self.x2apic_id = cpu_id
        self.cpuid_1_eax = cpuid_1_eax
        self.vmx_basic = vmx_basic
        self.online = True  # changed through Machine.set_cpu_online, which observers watch
        self.vmx_on = True  # the host did VMXON at boot (KVM or TDX init)
        self.vmx_non_root = False
        self.irq_enabled = True  # RFLAGS.IF
        self.preempt_count = 0
        self.irq_depth = 0  # > 0 while an interrupt handler runs
        self.pending_irqs: deque[tuple[IrqHandler, tuple, str]] = deque()
        self.pending_nmis: deque[tuple[IrqHandler, tuple, str]] = deque()
        self.in_nmi = False
        self.runqueue: list[Any] = []
        self.task: Any = None
        self.seamcalls = 0

    def __repr__(self) -> str:
        return f"<Cpu {self.id}>"

    @property
    def runqueue_len(self) -> int:
        return len(self.runqueue)

    @property
    def in_hardirq(self) -> bool:
        return self.irq_depth > 0

    @property
    def has_seamret_invd_vmcs(self) -> bool:
        return not (self.vmx_basic & VMX_BASIC_NO_SEAMRET_INVD_VMCS)

    # ---- preemption points -------------------------------------------------------------------

    def preempt_point(self) -> None:
        """Let other CPUs run; take pending interrupts if this CPU has them enabled."""
        self.sched.preempt()
        if self.pending_nmis:
            self.machine.irq.deliver_nmi(self)
        if self.irq_enabled and self.pending_irqs:
            self.machine.irq.deliver(self)

    def delay(self, n: int) -> None:
        """Let the other CPUs run for about as long as `n` preemption points would, in one sleep
        (`Scheduler.sleep_steps`); interrupts that came meanwhile are taken after it. Process
        context only, as any sleep."""
        if n <= 0:
            return
        if self.preempt_count or not self.irq_enabled or self.in_hardirq:
            raise SchedulerError(f"cpu{self.id}: scheduling while atomic at {call_site()}")
        self.machine.sched.sleep_steps(n)
        if self.pending_nmis:
            self.machine.irq.deliver_nmi(self)
        if self.irq_enabled and self.pending_irqs:
            self.machine.irq.deliver(self)

    def spin_until(self, q: WaitQueue, pred: Callable[[], bool], what: str, site: str | None = None) -> None:
        """Spin on shared state until `pred()` holds, taking interrupts while spinning if enabled.

        The spin is parked on `q` and costs no scheduler step until a writer notifies `q`.
        """
        while not pred():
            if self.pending_nmis:
                self.machine.irq.deliver_nmi(self)
            if self.irq_enabled and self.pending_irqs:
                # interrupts raised before the spin began: taken now, not lost behind the park
                self.machine.irq.deliver(self)
                continue
            if site is None:
                site = lazy_site()  # noted only for a spin that parks
            self.sched.park(q, what, site, pred)
            if self.pending_nmis:
                self.machine.irq.deliver_nmi(self)
            if self.irq_enabled and self.pending_irqs:
                self.machine.irq.deliver(self)

    def spin_acquire(self, word: SpinWord, what: str, site: str) -> None:
        """cmpxchg-loop on a lock word; interrupts are taken while spinning if enabled."""
        if word.owner is not None:
            self._take_interrupts()  # interrupts already pending are taken before the spin parks
        self.sched.spin_acquire(word, what, site, self._take_interrupts)

    def _take_interrupts(self) -> None:
        """A spinning CPU woke: pending NMIs, and interrupts if enabled, are taken now."""
        if self.pending_nmis:
            self.machine.irq.deliver_nmi(self)
        if self.irq_enabled and self.pending_irqs:
            self.machine.irq.deliver(self)

    def sleep_until(self, q: WaitQueue, pred: Callable[[], bool], what: str) -> None:
        """Block (give the CPU to other tasks) until `pred()` holds; illegal in atomic context."""
        if self.preempt_count or not self.irq_enabled or self.in_hardirq:
            raise SchedulerError(f"cpu{self.id}: scheduling while atomic at {call_site()}")
        site = None
        while not pred():
            if self.pending_irqs:
                self.machine.irq.deliver(self)  # IF=1 here: pending interrupts come first
                continue
            if site is None:
                site = lazy_site()  # noted only for a sleep that parks
            self.sched.park(q, what, site, pred, sleeping=True)

    # ---- the instruction -----------------------------------------------------------------------

    def seamcall(self, regs: Regs) -> SeamcallEnd:
        """Execute SEAMCALL with `regs`; entry and exit are preemption points."""
        sched = self.sched
        traced = sched.trace.enabled
        if traced:
            leaf = leaf_name(regs.rax)
            self.machine.emit("seamcall", leaf, {"leaf": leaf, "in": regs.nonzero()})
        sched.preempt()
        self.seamcalls += 1
        if not self.vmx_on:
            end = SeamcallEnd.UD
        elif self.vmx_non_root:
            end = SeamcallEnd.GP
        elif self.machine.seam is None:
            end = SeamcallEnd.VMFAILINVALID
        else:
            end = self.machine.seam.seamcall(self, regs)
        sched.preempt()
        if self.pending_nmis:
            self.machine.irq.deliver_nmi(self)
        if traced:
            st = status_name(regs.rax) if end is SeamcallEnd.SEAMRET else end.value
            self.machine.emit("seamret", f"{leaf} {st}",
                              {"leaf": leaf, "end": end.value, "status": st, "out": regs.nonzero()})
        if self.irq_enabled and self.pending_irqs:
            self.machine.irq.deliver(self)
        return end
