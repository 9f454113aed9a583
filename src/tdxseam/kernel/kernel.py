"""One booted host kernel: per-CPU data, the kernel log, and the switches that plant bugs.

Kernel files take this object as their first argument (`k`), standing for "this kernel's
globals": upstream keeps them in file-scope statics; a Python process may hold many hosts.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from tdxseam import get_logger
from tdxseam.kernel.locks import Lockdep, RawSpinlock
from tdxseam.kernel.profile import KernelProfile, get_profile
from tdxseam.platform.cpu import Cpu
from tdxseam.platform.machine import Machine

log = get_logger("tdxseam.kernel")

# Planted bugs: each name switches host code to a broken variant, to prove the checks bite.
MUTATIONS = {
    "no-lock": "seamldr_call calls the P-SEAMLDR without taking seamldr_lock",
    "no-irqsave": "seamldr_call takes seamldr_lock without disabling interrupts",
    "no-abort": "a failed lockstep state does not stop the other CPUs",
    "ack-before-work": "CPUs ack a lockstep state before doing its work",
    "skip-lp-init": "one CPU skips TDH.SYS.LP.INIT after the install",
    "no-hotplug-lock": "the update runs without holding the CPU-hotplug lock",
    "update-during-td-build": "the update ignores TD builds in flight (no kernel gate, no compat flag)",
    "leak-params": "a failed update does not free its seamldr_params pages",
    "keep-build-gate": "an update that fails after taking the TD-build gate never releases it",
    "cached-remaining": "num_remaining_updates is read once and cached",
    "racy-ack": "ack_state updates the ack counters without update_ctrl.lock",
}


@dataclass
class PerCpu:
    stack_pa: int  # a page of this CPU's kernel stack, for on-stack SEAMCALL buffers
    cache_state_incoherent: bool = False
    tdx_lp_initialized: bool = False


@dataclass
class KernelLogLine:
    step: int
    cpu: int
    text: str


class Kernel:
    def __init__(self, machine: Machine, *, mutations: frozenset[str] | set[str] = frozenset(),
                 profile: str | KernelProfile | None = None) -> None:
        self.profile = get_profile(profile)
        unknown = set(mutations) - set(MUTATIONS)
        if unknown:
            raise ValueError(f"unknown mutation(s): {', '.join(sorted(unknown))}")
        self.machine = machine
        self.mutations = frozenset(mutations)
        self.lockdep = Lockdep(self)
        from tdxseam.kernel.kcsan import Kcsan

        self.kcsan = Kcsan()
        self.percpu = [PerCpu(stack_pa=machine.mem.alloc_page()) for _ in machine.cpus]
        self.dmesg: list[KernelLogLine] = []
        self.warnings = 0
        self.seamcall_failures: list[tuple[int, int]] = []  # (leaf, status), most recent last
        # called after every change of a module update's lockstep control (kernel/seamldr.py): an
        # observer (the simulator's checks) looks again only then, not at every scheduler step
        self.update_watch: Callable[[], None] | None = None
        self.seamldr_lock = RawSpinlock(self, "seamldr_lock")
        from tdxseam.kernel.stop_machine import CpuHotplugLock

        self.cpu_hotplug_lock = CpuHotplugLock(self)

    # ---- the running CPU ------------------------------------------------------------------------

    def this_cpu(self) -> Cpu:
        t = self.machine.sched.current
        if t is None:
            raise RuntimeError("no simulated CPU is running")
        return t.cpu

    def smp_processor_id(self) -> int:
        return self.machine.current_cpu().id

    def this_percpu(self) -> PerCpu:
        return self.percpu[self.machine.current_cpu().id]

    # ---- printk ---------------------------------------------------------------------------------

    def printk(self, level: int, text: str) -> None:
        t = self.machine.sched.current
        cpu = t.cpu.id if t is not None else -1
        self.dmesg.append(KernelLogLine(self.machine.sched.steps, cpu, text))
        self.machine.emit("printk", text)
        log.log(level, text)

    def pr_err(self, pr_fmt: str, text: str) -> None:
        self.printk(logging.ERROR, pr_fmt + text)

    def pr_info(self, pr_fmt: str, text: str) -> None:
        self.printk(logging.INFO, pr_fmt + text)

    def warn(self, text: str) -> None:
        """WARN(): a kernel bug or a "cannot happen" path; counted, logged with a marker."""
        self.warnings += 1
        self.printk(logging.WARNING, f"WARNING: {text}")

    def dmesg_text(self) -> str:
        return "".join(f"{line.text}\n" for line in self.dmesg)

    def dmesg_dump(self) -> str:
        """The log as `dmesg` prints it: "[seconds.micro] text", one scheduler step a microsecond."""
        return "".join(f"[{line.step // 1_000_000:5d}.{line.step % 1_000_000:06d}] {line.text}\n"
                       for line in self.dmesg)
