"""Real firmware: what running Intel's binaries costs, and where the time goes.

1. `probe` of every release in the catalog (4 LPs): wall time, instructions, and the split between
   the P-SEAMLDR model's INSTALL (signature, SEAMHASH), the engine's loader work (copy, relocation,
   page tables, instruction sweep) and emulation. Target: under 1 s per release.
2. An 8-CPU runtime update on the binaries (1.5.06 -> 1.5.13, 2.0.04 -> 2.0.05), timed like
   bench_update (boot not timed), per leaf, beside the same update on the Python model.
3. TDH.SYS.TDMR.INIT to completion for one 1 GiB TDMR: the spike's slow path (~40 s per GiB with a
   hook on every instruction), now hooked only at the special instructions.
4. `sim run --firmware real`: seconds per generated seed (1.5.06 -> 1.5.13, every invariant that
   applies on), median and spread, beside the same seeds' model scenarios.
Needs the `real` extra and Intel's binaries (../shared/fixtures or $TDXSEAM_INTEL_BINARIES). Seed 0.
"""

from __future__ import annotations

import sys
import time

from tdxseam.demo import choose_module, find_intel_catalog, host_for
from tdxseam.formats.image import extract
from tdxseam.formats.leaves import TdxLeaf
from tdxseam.kernel.seamldr import seamldr_install_module
from tdxseam.kernel.tdx import tdx_of
from tdxseam.platform.cpu import Regs
from tdxseam.seam.real.probe import probe_module

SEED = 0
NAMES = {int(v): k.removeprefix("TDH_") for k, v in TdxLeaf.__members__.items()}


def bench_probe(cat) -> None:
    print("== probe, 4 LPs (SYS.INIT, LP.INIT x4, 10 x SYS.RD)")
    print(f"{'release':>8} {'wall s':>7} {'instr':>8} {'emul s':>7} {'loader s':>8} {'install+rest s':>14} {'Minstr/s':>8}")
    for blob in sorted((cat / "joined_files").glob("*/*.blob")):
        parts = extract(blob.read_bytes(), what=blob.name)
        r = probe_module(parts.module, parts.sigstruct, 4, seed=SEED)
        emul, loader = r.emulation_seconds, r.loader_seconds
        rest = r.seconds - emul - loader
        print(f"{r.version or '?':>8} {r.seconds:7.3f} {r.instructions:8,} {emul:7.3f} "
              f"{loader:8.3f} {rest:14.3f} {r.instructions / max(emul, 1e-9) / 1e6:8.1f}")


def bench_update(cat, pair: tuple[str, str], cpus: int = 8) -> None:
    src, dst = choose_module(pair[0], cat), choose_module(pair[1], cat)
    out = {}
    for fw in ("model", "real"):
        host = host_for(src, cpus, seed=SEED, firmware=fw, other=dst)
        old = host.fw.module
        t0 = time.perf_counter()
        ret = host.run_on(0, seamldr_install_module, host.kernel, dst.image)
        out[fw] = time.perf_counter() - t0
        assert ret == 0, f"{fw}: update failed: {ret}"
        assert str(tdx_of(host.kernel).sysinfo.version) == pair[1]
        if fw == "real":
            new = host.fw.module
            a, b = old.engine.stats, new.engine.stats
    print(f"== update {pair[0]} -> {pair[1]} on {cpus} CPUs: binaries {out['real']:.3f} s, "
          f"model {out['model']:.3f} s (ratio {out['real'] / out['model']:.1f})")
    shutdown = a.by_leaf.get(TdxLeaf.TDH_SYS_SHUTDOWN, [0, 0, 0.0])[2]
    spent = b.setup_seconds + b.seconds + b.sync_seconds + shutdown + a.sync_seconds
    print(f"   old binary SHUTDOWN {shutdown:.3f} s; new binary: loader {b.setup_seconds:.3f} s, "
          f"emulation {b.seconds:.3f} s; host memory sync {a.sync_seconds + b.sync_seconds:.3f} s; rest "
          f"(kernel, P-SEAMLDR model incl. signature and SEAMHASH, scheduler) {out['real'] - spent:.3f} s")
    for name, st in (("old", a), ("new", b)):
        for leaf, (n, ins, sec) in sorted(st.by_leaf.items()):
            if leaf in (TdxLeaf.TDH_SYS_SHUTDOWN, TdxLeaf.TDH_SYS_UPDATE, TdxLeaf.TDH_SYS_INIT,
                        TdxLeaf.TDH_SYS_LP_INIT):
                print(f"   {name} {NAMES.get(leaf, leaf):>14}: {n:2} call(s) {ins:8,} instructions {sec * 1000:7.1f} ms")


def bench_tdmr_init(cat) -> None:
    host = host_for(choose_module("1.5.06", cat), 4, seed=SEED, firmware="real")
    mod, cpu = host.fw.module, host.machine.cpus[0]
    tdmr = tdx_of(host.kernel).tdmrs[0]
    calls, t0, ins0 = 0, time.perf_counter(), mod.engine.stats.instructions
    nxt = 0
    while nxt < tdmr.base + tdmr.size and calls < 1000:
        regs = Regs(rax=TdxLeaf.TDH_SYS_TDMR_INIT, rcx=tdmr.base)
        mod.dispatch(cpu, regs)
        calls += 1
        if regs.rax != 0:
            break
        nxt = regs.rdx
    dt = time.perf_counter() - t0
    ins = mod.engine.stats.instructions - ins0
    print(f"== TDH.SYS.TDMR.INIT to completion, one {tdmr.size >> 30} GiB TDMR (1.5.06): {calls} calls, "
          f"{ins:,} instructions, {dt:.2f} s ({ins / dt / 1e6:.1f} M instructions/s; last RAX 0x{regs.rax:x})")


def bench_sim(cat, seeds: int = 40) -> None:
    import statistics

    from tdxseam.sim.runner import run_seed
    from tdxseam.sim.scenario import generate

    times: dict[str, list[float]] = {"real": [], "model": []}
    for seed in range(seeds):  # interleaved, so both see the same load
        for fw in ("real", "model"):
            t0 = time.perf_counter()
            r = run_seed(seed, firmware=fw, catalog=cat if fw == "real" else None)
            times[fw].append(time.perf_counter() - t0)
            assert r.ok, f"seed {seed} on {fw}: {r.violations[:1]} {r.stopped_in_seam}"
    real, model = times["real"], times["model"]
    uploads = sum(len(generate(s, firmware="real").updates) for s in range(seeds))
    print(f"== sim run --firmware real, seeds 0..{seeds - 1} ({uploads} updates): median "
          f"{statistics.median(real):.3f} s per seed (min {min(real):.3f}, max {max(real):.3f}); "
          f"model {statistics.median(model) * 1000:.1f} ms (median ratio "
          f"{statistics.median(a / b for a, b in zip(real, model)):.0f})")


def main() -> int:
    cat = find_intel_catalog()
    if cat is None:
        print("bench_firmware: Intel's binaries not found; nothing to measure")
        return 0
    print(f"bench_firmware: seed {SEED}")
    bench_probe(cat)
    for pair in (("1.5.06", "1.5.13"), ("2.0.04", "2.0.05")):
        bench_update(cat, pair)
    bench_tdmr_init(cat)
    bench_sim(cat)
    return 0


if __name__ == "__main__":
    sys.exit(main())
