"""Simulation benchmark: scenarios per second on 8-CPU hosts, and one simulated update of 4096 CPUs.

Run with `.venv/bin/python bench/bench_sim.py [--runs N] [--jobs J]`. Every figure comes from seeded
runs (seeds printed), so step counts and digests are reproducible; wall-clock figures depend on the
machine and on what else it runs.

- where the time of a scenario goes (CPU time): setup and of it the host (loaded from a boot
  image; a real boot beside it), the run with its steps, a bare scheduler step, the reboot
  checks, the race detector;
- scenarios/s: seeds 0..N-1 generated on 8-CPU hosts, every invariant on, in this process
  (random draw, then PCT), then as a campaign over J worker processes;
- one update of a 4096-CPU host through the simulator (boot, 2 TDs, a reader of seamldr_version,
  the upload through fw_upload, all invariants), with 1024 and 256 CPUs for scale;
- exhaustive exploration of a 2-CPU update: schedules per second.
"""

from __future__ import annotations

import argparse
import os
import time

from tdxseam.sim.campaign import run_campaign
from tdxseam.sim.runner import SimRun, run_seed
from tdxseam.sim.scenario import ReaderSpec, Scenario, TdSpec, UpdateSpec, tiny
from tdxseam.sim.schedules import explore


def bench_scenarios(runs: int, schedule: str) -> None:
    run_seed(0, cpus=8)  # warm-up: synthetic modules are signed once per process
    t0 = time.perf_counter()
    steps = bad = 0
    for s in range(runs):
        r = run_seed(s, cpus=8, schedule=schedule)
        steps += r.steps
        bad += not r.ok
    dt = time.perf_counter() - t0
    print(f"  8-CPU scenarios  schedule={schedule:<6} seeds 0..{runs - 1}  {runs / dt:7.1f} scenarios/s  "
          f"{steps / dt:>9,.0f} steps/s  ({steps / runs:,.0f} steps/scenario, {dt:.1f} s, violations {bad})")


def bench_per_step(runs: int) -> None:
    """Where the time of an 8-CPU scenario goes: setup (of it, the host) vs the run, per scheduler
    step, what a bare step costs, what the reboot checks and the race detector (KCSAN-like
    accesses) add. CPU time of this process, so other load on the machine counts less (it still
    slows a shared core: compare figures taken together). The seeds run once before, so what is
    timed is what a long campaign does: its test images are already signed."""
    from dataclasses import replace

    from tdxseam.formats.version import ModuleVersion
    from tdxseam.host import DeclaredModule, EmulatedHost
    from tdxseam.seam.pseamldr import SeamldrBuild
    from tdxseam.sim.boot_image import booted_host
    from tdxseam.sim.scenario import generate

    def host_args(sc) -> dict:  # the host shape SimRun boots for a scenario
        return dict(module=DeclaredModule(ModuleVersion.parse(sc.module)), kernel=sc.kernel, sockets=sc.sockets,
                    seamldr=SeamldrBuild(seamdb_capacity=sc.seamdb_capacity, max_lps=max(1024, sc.cpus)))

    # warm-up: each seed once, so the test images its updates use are signed and each host shape
    # is imaged, as in a long campaign (timing either would blur every figure)
    for s in range(runs):
        SimRun(generate(s, cpus=8)).run()
    setup = run = 0.0
    steps = 0
    for s in range(runs):
        sc = generate(s, cpus=8)
        t0 = time.process_time()
        sim = SimRun(sc)
        t1 = time.process_time()
        r = sim.run()
        t2 = time.process_time()
        setup, run, steps = setup + t1 - t0, run + t2 - t1, steps + r.steps
    total = setup + run
    print(f"  per scenario     {total / runs * 1e3:5.2f} ms CPU = setup {setup / runs * 1e3:.2f} ms + run "
          f"{run / runs * 1e3:.2f} ms; {steps / runs:,.0f} steps, {run / steps * 1e6:.2f} us/step; "
          f"{runs / total:6.1f} scenarios/s per core")
    # setup: the host, loaded from its shape's boot image and reseeded (sim/boot_image.py), against
    # a real boot (the firmware's load of the module on every CPU, the kernel's TDX init with
    # LP.INIT on every CPU through the scheduler), which now runs once per host shape; the rest of
    # setup is prebuilt TDs and harness
    boot = load = 0.0
    for s in range(runs):
        sc = generate(s, cpus=8)
        kw = host_args(sc)
        t0 = time.process_time()
        EmulatedHost(sc.cpus, seed=sc.seed, trace=False, **kw)
        t1 = time.process_time()
        booted_host(sc.cpus, seed=sc.seed, **kw)  # as SimRun gets it
        load += time.process_time() - t1
        boot += t1 - t0
    print(f"  setup            host from its boot image {load / runs * 1e3:.2f} ms (a real boot: "
          f"{boot / runs * 1e3:.2f} ms, once per host shape); prebuilt TDs, tdx_host, monitor, tasks "
          f"{(setup - load) / runs * 1e3:.2f} ms")
    floor = _bare_step_us()
    print(f"  run              bare scheduler step (draw, greenlet switch, step hook) {floor:.2f} us: "
          f"{floor * 1e-6 * steps / run:.0%} of the run; the rest is the work between preemption points")
    t0 = time.process_time()
    for s in range(runs):
        SimRun(replace(generate(s, cpus=8), reboot=False)).run()
    no_reboot = time.process_time() - t0
    print(f"  reboot checks    {(total - no_reboot) / runs * 1e3:.2f} ms per scenario on average "
          f"(a fresh host from its boot image and one update, in a quarter of the seeds)")
    t0 = time.process_time()
    for s in range(runs):
        sim = SimRun(generate(s, cpus=8))
        sim.k.kcsan.enabled = False
        sim.run()
    off = time.process_time() - t0
    print(f"  race detector    off: {runs / off:6.1f} scenarios/s per core "
          f"(on: {runs / total:.1f}; ratio {off / total:.2f})")


def _bare_step_us(cpus: int = 8, points: int = 2000) -> float:
    """CPU time of one scheduler step with nothing between preemption points."""
    from tdxseam.platform.machine import Machine

    m = Machine(cpus, seed=1, trace=False)

    def spin() -> None:
        cpu = m.current_cpu()
        for _ in range(points):
            cpu.preempt_point()

    for c in m.cpus:
        m.sched.spawn(c, spin)
    m.sched.on_step = lambda sched: None  # as cheap as a monitor with no update in flight
    t0 = time.process_time()
    m.sched.run()
    return (time.process_time() - t0) / m.sched.steps * 1e6


def bench_campaign(runs: int, jobs: int) -> None:
    res = run_campaign(runs, jobs=jobs, cpus=8)
    print(f"  8-CPU campaign   jobs={jobs}  seeds 0..{runs - 1}  {res.runs / res.seconds:7.1f} scenarios/s  "
          f"({res.seconds:.1f} s incl. worker start-up, violations {res.violations})")


def bench_big_update(cpus: int) -> None:
    sc = Scenario(seed=1, cpus=cpus, tds=[TdSpec(cpu=1, prebuilt=True, pages=2, runs=1),
                                          TdSpec(cpu=cpus - 1, prebuilt=True)],
                  readers=[ReaderSpec(cpu=cpus // 2, attr="seamldr_version", reads=2, gap=10)],
                  updates=[UpdateSpec("1.5.08", retries=0)])
    t0 = time.perf_counter()
    sim = SimRun(sc)
    t1 = time.perf_counter()
    r = sim.run()
    t2 = time.perf_counter()
    assert r.ok and r.updates[0]["outcome"] == "none", r.report_lines()
    print(f"  update of {cpus:>4} CPUs  seed=1  boot+TDs {t1 - t0:5.2f} s  update run {t2 - t1:5.2f} s  "
          f"steps={r.steps:>7}  {r.steps / (t2 - t1):>9,.0f} steps/s  version {r.updates[0]['version_after']}  "
          f"schedule={r.schedule_digest}")


def bench_explore() -> None:
    ex = explore(tiny(cpus=2, reader=True), preemptions=1, max_schedules=400)
    print(f"  exhaustive       2 CPUs, 1 preemption: {ex.schedules} schedules "
          f"({'complete' if ex.exhausted else 'capped'}) in {ex.seconds:.1f} s, "
          f"{ex.schedules / ex.seconds:.0f} schedules/s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=300, help="seeds per scenarios/s figure")
    ap.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="processes for the campaign figure")
    args = ap.parse_args()
    print("tdxseam simulation benchmark")
    bench_per_step(args.runs)
    bench_scenarios(args.runs, "random")
    bench_scenarios(args.runs, "pct")
    bench_campaign(max(args.runs, 4 * args.jobs), args.jobs)
    for n in (256, 1024, 4096):
        bench_big_update(n)
    bench_explore()


if __name__ == "__main__":
    main()
