"""Interrupt delivery: a handler raised for a CPU runs on that CPU when its interrupts are on.

Like hardware, delivery clears the interrupt flag for the handler and restores it on return, so a
handler is never itself interrupted; interrupts raised while the flag is clear wait, pending.
NMIs ignore the interrupt flag: one raised for a CPU runs at its next preemption point or spin,
even inside a spinlock with interrupts off (never nested in another NMI). NMI handlers must take
no lock; the CPU they interrupt may hold any.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tdxseam.platform.cpu import Cpu
    from tdxseam.platform.machine import Machine


class IrqController:
    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        self.raised = 0
        self.delivered = 0

    def raise_irq(self, cpu: Cpu, handler: Callable[..., Any], *args: Any, name: str = "irq") -> None:
        """Make `handler(*args)` pending on `cpu` (a device interrupt or an IPI)."""
        self.raised += 1
        cpu.pending_irqs.append((handler, args, name))
        sched = self.machine.sched
        sched.trace.emit(sched.steps, cpu.id, "irq-raise", name)
        if not cpu.irq_enabled:
            return  # stays pending until the CPU enables interrupts
        t = cpu.task
        if t is None or t.done:
            # an idle CPU halts with interrupts on: the interrupt wakes it
            sched.spawn(cpu, self.deliver, cpu, name=f"irq-entry-cpu{cpu.id}", priority=100)
        elif t.waiting_on is not None:
            sched.unpark(t)  # a spinning CPU with interrupts on takes the interrupt

    def deliver(self, cpu: Cpu) -> None:
        """Run every pending handler now; called only where `cpu` has interrupts enabled."""
        sched = self.machine.sched
        while cpu.irq_enabled and cpu.pending_irqs:
            handler, args, name = cpu.pending_irqs.popleft()
            self.delivered += 1
            sched.trace.emit(sched.steps, cpu.id, "irq-enter", name)
            cpu.irq_enabled = False
            cpu.irq_depth += 1
            try:
                handler(*args)
            finally:
                cpu.irq_depth -= 1
                cpu.irq_enabled = True
            sched.trace.emit(sched.steps, cpu.id, "irq-exit", name)

    def raise_nmi(self, cpu: Cpu, handler: Callable[..., Any], *args: Any, name: str = "nmi") -> None:
        """Make `handler(*args)` a pending NMI on `cpu`; taken whatever its interrupt flag."""
        self.raised += 1
        cpu.pending_nmis.append((handler, args, name))
        sched = self.machine.sched
        sched.trace.emit(sched.steps, cpu.id, "nmi-raise", name)
        t = cpu.task
        if t is None or t.done:
            sched.spawn(cpu, self.deliver_nmi, cpu, name=f"nmi-entry-cpu{cpu.id}", priority=100)
        elif t.waiting_on is not None and not getattr(t.waiting_on, "sleeping", False):
            sched.unpark(t)  # a spinning CPU takes the NMI, then spins on

    def deliver_nmi(self, cpu: Cpu) -> None:
        if cpu.in_nmi:
            return
        sched = self.machine.sched
        cpu.in_nmi = True
        try:
            while cpu.pending_nmis:
                handler, args, name = cpu.pending_nmis.popleft()
                self.delivered += 1
                sched.trace.emit(sched.steps, cpu.id, "nmi-enter", name)
                handler(*args)
                sched.trace.emit(sched.steps, cpu.id, "nmi-exit", name)
        finally:
            cpu.in_nmi = False
