"""The kernel's file ABI of a TDX module update, served from an emulated host.

- `tree.SysfsTree`: the files (tdx_host attributes, the tdx_module fw_upload directory, the CPU
  lists, /proc/cpuinfo) with the kernel's modes, texts and errnos, for any caller's credentials;
- `runtime.MachineRuntime`: the one thread that owns the emulated host, runs each file operation
  on it and advances background kernel work (an update) between operations;
- `fuse`: the same tree mounted at a directory through libfuse3, for real programs.

`Emulation` puts the first two together; `tdxseam emulate --mount DIR` adds the third.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tdxseam.host import EmulatedHost
    from tdxseam.sysfs.runtime import MachineRuntime
    from tdxseam.sysfs.tree import SysfsTree


class Emulation:
    """An emulated host and its file tree, driven inline (tests) or from a machine thread (FUSE).

    `host_kw` goes to `EmulatedHost` (module, seamldr, erratum, cpuid_1_eax, trust_test_key, ...).
    """

    def __init__(self, cpus: int = 8, *, seed: int = 0, threaded: bool = False,
                 slice_steps: int | None = None, step_delay: float = 0.0, trace: bool = False,
                 setup: Any = None, **host_kw: Any) -> None:
        from tdxseam.host import EmulatedHost
        from tdxseam.sysfs.runtime import DEFAULT_SLICE_STEPS, MachineRuntime
        from tdxseam.sysfs.tree import SysfsTree

        def factory() -> EmulatedHost:
            host = EmulatedHost(cpus, seed=seed, trace=trace, **host_kw)
            if setup is not None:
                setup(host)  # on the machine thread, before any file exists (e.g. create TDs)
            return host

        self.runtime: MachineRuntime = MachineRuntime(
            factory, threaded=threaded, slice_steps=slice_steps or DEFAULT_SLICE_STEPS,
            step_delay=step_delay)
        try:
            self.tree: SysfsTree = self.runtime.call(SysfsTree, self.runtime)
        except BaseException:
            self.runtime.close(drain=False)
            raise

    @property
    def host(self) -> EmulatedHost:
        return self.runtime.host

    def on_machine(self, fn: Any, *args: Any) -> Any:
        """Run `fn(*args)` on the machine thread, e.g. to inspect the host between requests."""
        return self.runtime.call(fn, *args)

    def settle(self, max_steps: int | None = None) -> bool:
        """Let background kernel work (an update in flight) run to its end; True if no kernel
        task is left (see `MachineRuntime.settle`)."""
        return self.runtime.call(self.runtime.settle, max_steps)

    def close(self, *, drain: bool = True) -> None:
        self.runtime.close(drain=drain)

    def __enter__(self) -> Emulation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


__all__ = ["Emulation"]
