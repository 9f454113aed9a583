"""Wall time of one emulated runtime update for 8, 64, 512 and 4096 CPUs.

Boots a host per size (not timed), then times seamldr_install_module: the image checks, the
stop_machine lockstep, SEAMLDR.INSTALL on every CPU under seamldr_lock, LP.INIT everywhere and
TDH.SYS.UPDATE. Prints time per CPU and the growth ratio between sizes (linear growth = ratio of
CPU counts). Synthetic test-signed modules, so no Intel files are needed. Seed printed.
"""

from __future__ import annotations

import time

from tdxseam.formats.testsign import make_image
from tdxseam.formats.version import ModuleVersion
from tdxseam.host import DeclaredModule, EmulatedHost
from tdxseam.kernel.seamldr import seamldr_install_module
from tdxseam.kernel.tdx import tdx_get_sysinfo

SIZES = (8, 64, 512, 4096)
SEED = 1


def one(cpus: int, image: bytes) -> tuple[float, int]:
    host = EmulatedHost(cpus, seed=SEED, trace=False, module=DeclaredModule(ModuleVersion(1, 5, 6)))
    k = host.kernel
    steps0 = host.sched.steps
    t0 = time.perf_counter()
    ret = host.run_on(0, seamldr_install_module, k, image)
    dt = time.perf_counter() - t0
    assert ret == 0, f"update failed on {cpus} CPUs: {ret}"
    assert str(tdx_get_sysinfo(k).version) == "1.5.08"
    return dt, host.sched.steps - steps0


def main() -> None:
    image = make_image("1.5.08")
    print(f"bench_update: one runtime update (1.5.06 -> 1.5.08, synthetic), seed {SEED}")
    print(f"{'CPUs':>6} {'wall s':>8} {'ms/CPU':>8} {'steps':>9} {'steps/CPU':>9} {'growth':>8} {'CPU ratio':>9}")
    prev = None
    for n in SIZES:
        dt, steps = min(one(n, image) for _ in range(2 if n < 4096 else 1))
        growth = f"{dt / prev[1]:.1f}x" if prev else "-"
        ratio = f"{n / prev[0]:.0f}x" if prev else "-"
        print(f"{n:>6} {dt:>8.3f} {dt / n * 1000:>8.3f} {steps:>9} {steps / n:>9.1f} {growth:>8} {ratio:>9}")
        prev = (n, dt)
    print("target: 4096 CPUs under 3 s wall on one core; growth no worse than linear")
    print("(the work, in steps per CPU, is flat; wall per CPU also carries the cache cost of more live CPUs)")


if __name__ == "__main__":
    main()
