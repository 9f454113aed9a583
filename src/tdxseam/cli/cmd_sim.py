"""`tdxseam sim`: deterministic simulation testing of the update protocol.

    sim run --seed S        one scenario generated from the seed, every invariant checked
    sim campaign --runs K   many seeds in parallel processes; failing seeds with their replay command
    sim replay SEED         the same run again (with --trace: its event trace, byte for byte)
    sim explore             bounded exhaustive schedule exploration of a small host
    sim mutations           the planted bugs --mutate can switch on

Every command imports the simulator when it runs, so `tdxseam --help` stays quick.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from tdxseam.cli import app, exits, outputs
from tdxseam.cli.options import check_kernel, kernel_option

sim_app = typer.Typer(
    name="sim",
    help="Deterministic simulation testing: seeded scenarios, faults, invariants, replay, exploration.",
    short_help="Seeded simulation of the update: run, replay, campaign.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
)
app.add_typer(sim_app, name="sim")

MAX_RUNS = 10**12  # seeds are generated as they are run, so this bounds time, not memory
MAX_JOBS = 1024
SHOWN_FAILURES = 10  # a failing campaign prints this many replay lines, then a count
_MUTATE_HELP = "Switch the host kernel to a planted bug (repeatable; see `tdxseam sim mutations`)."
_CPUS_HELP = "Host size (1-4096); default: drawn from the seed (2-8)."
_SCHED_HELP = "How the scheduler draws: random (seeded) or pct (priority change points)."


def _check(cpus: int | None, mutate: list[str], schedule: str) -> tuple[str, ...]:
    from tdxseam.kernel.kernel import MUTATIONS

    if cpus is not None and not 1 <= cpus <= 4096:
        raise exits.CliError(f"--cpus must be between 1 and 4096, not {cpus}", exits.USAGE)
    unknown = [m for m in mutate if m not in MUTATIONS]
    if unknown:
        raise exits.CliError(f"unknown mutation {unknown[0]!r}; one of: {', '.join(MUTATIONS)}", exits.USAGE)
    if schedule not in ("random", "pct"):
        raise exits.CliError(f"--schedule must be random or pct, not {schedule!r}", exits.USAGE)
    return tuple(sorted(set(mutate)))


_FIRMWARE_HELP = ("model: the Python TDX module; real: Intel's binaries on the emulated CPU (needs "
                  "tdxseam[real] and Intel's files; no TDs yet).")


def _firmware_option() -> str:
    return typer.Option("model", "--firmware", metavar="model|real", help=_FIRMWARE_HELP)


def _module_option() -> str:
    return typer.Option(None, "--module", metavar="VERSION",
                        help="With --firmware real: the Intel release the host boots (default 1.5.06).")


def _to_option() -> str:
    return typer.Option(None, "--to", metavar="VERSION",
                        help="With --firmware real: the Intel release every update installs (default 1.5.13).")


def _catalog_option() -> str:
    return typer.Option(None, "--catalog", metavar="DIR",
                        help="With --firmware real: Intel's binaries directory (default: $TDXSEAM_INTEL_BINARIES, "
                             "or beside the repository).")


def _check_firmware(firmware: str, module: str | None, to: str | None, catalog: str | None) -> tuple:
    """(module, to) as versions for a real-firmware run; usage errors for the rest. The engine's
    packages are checked here, Intel's files when the run starts (exit 3 without them)."""
    if firmware not in ("model", "real"):
        raise exits.CliError(f"--firmware is 'model' or 'real', not {firmware!r}", exits.USAGE)
    if firmware == "model":
        if module is not None or to is not None or catalog is not None:
            raise exits.CliError("--module, --to and --catalog go with --firmware real", exits.USAGE)
        return None, None
    from tdxseam.cli.cmd_firmware import require_engine
    from tdxseam.formats.errors import VersionError
    from tdxseam.formats.version import ModuleVersion

    require_engine()
    out = []
    for opt, v in (("--module", module), ("--to", to)):
        try:
            out.append(None if v is None else str(ModuleVersion.parse(v)))
        except (VersionError, ValueError) as e:
            raise exits.CliError(f"{opt}: {e}", exits.USAGE) from None
    return tuple(out)


def _run_real(fn, *args, **kw):
    """Run a simulation; a real-firmware setup problem (no catalog, a release missing, a kernel
    the binary refuses) or an engine failure at boot is one line and its exit code."""
    from tdxseam.sim.real import SimSetupError

    try:
        return fn(*args, **kw)
    except SimSetupError as e:
        raise exits.CliError(str(e), e.code) from None
    except Exception as e:
        from tdxseam.seam.real.errors import RealFirmwareError

        if isinstance(e, RealFirmwareError):
            raise exits.CliError(f"real firmware: {e}", exits.FAILED) from None
        raise


def _print_result(r, as_json: bool, *, trace: bool, extra: dict | None = None) -> None:
    if as_json:
        out = r.to_json() | (extra or {})
        if trace and r.trace is not None:
            out["trace"] = r.trace.text().splitlines()
        print(json.dumps(out, sort_keys=True))
        return
    for line in r.report_lines():
        print(line)
    for k, v in (extra or {}).items():
        print(f"{k}: {v}")
    if trace and r.trace is not None:
        print("-- trace --")
        sys.stdout.write(r.trace.text())


def _load_scenario(path: Path):
    """A scenario file through the one reader: a regular file, bounded."""
    from tdxseam.formats.files import FileError, read_file
    from tdxseam.sim.scenario import SCENARIO_MAX_SIZE, Scenario

    try:
        return Scenario.loads(read_file(path, SCENARIO_MAX_SIZE, "a scenario file"))
    except FileError as e:
        raise exits.CliError(str(e), exits.BAD_INPUT) from None
    except (ValueError, TypeError, KeyError) as e:
        raise exits.CliError(f"{path}: not a scenario: {e}", exits.BAD_INPUT) from None


@sim_app.command("run")
def sim_run(
    seed: int = typer.Option(0, "--seed", metavar="SEED", help="The seed: it fixes the scenario and the interleaving."),
    cpus: int = typer.Option(None, "--cpus", metavar="N", help=_CPUS_HELP),
    mutate: list[str] = typer.Option([], "--mutate", metavar="NAME", help=_MUTATE_HELP),
    schedule: str = typer.Option("random", "--schedule", metavar="random|pct", help=_SCHED_HELP),
    scenario: Path = typer.Option(None, "--scenario", metavar="FILE",
                                  help="Run this scenario (JSON, e.g. from `sim replay --shrink-out`) instead of generating one."),
    trace: bool = typer.Option(False, "--trace", help="Print the event trace after the report."),
    kernel: str = kernel_option(),
    firmware: str = _firmware_option(),
    module: str = _module_option(),
    to: str = _to_option(),
    catalog: str = _catalog_option(),
    trace_out: Path = outputs.TRACE_OUT,
    timeline_out: Path = outputs.TIMELINE_OUT,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """One seeded scenario, every invariant checked.

    Generate the scenario of --seed, run it with every invariant checked, report. A --scenario
    file carries its own kernel profile and firmware; --kernel, --firmware, --module and --to
    apply to generated scenarios. --firmware real: the TDX module is Intel's binary (the
    P-SEAMLDR stays the model), booted as --module and updated to --to; no TDs yet, and the
    report names the invariants that do not apply.

    Exit codes: 0 no violation; 1 a violation, or the module stopped inside a SEAMCALL; 2 bad
    arguments (or the real-firmware packages missing); 3 the --scenario file is unreadable or not
    a scenario, or Intel's files are not found.
    """
    muts = _check(cpus, mutate, schedule)
    check_kernel(kernel)
    module, to = _check_firmware(firmware, module, to, catalog)
    outputs.wanted(trace_out, timeline_out)
    from tdxseam.sim.runner import replay_command, run_scenario
    from tdxseam.sim.scenario import Scenario, generate

    if scenario is not None:
        sc = _load_scenario(scenario)
        if sc.firmware == "real":
            from tdxseam.cli.cmd_firmware import require_engine

            require_engine()
        again = f"tdxseam sim run --scenario {scenario}" + "".join(f" --mutate {m}" for m in muts) + (
            f" --schedule {schedule}" if schedule != "random" else "")
    else:
        sc = generate(seed, cpus=cpus, kernel=kernel, firmware=firmware, module=module, to=to)
        again = replay_command(seed, cpus=cpus, mutations=muts, schedule=schedule, kernel=kernel,
                               firmware=firmware, module=module, to=to)
    r = _run_real(run_scenario, sc, mutations=muts, schedule=schedule, trace=True, catalog=catalog)
    _print_result(r, as_json, trace=trace, extra={"replay": again})
    _write_outputs(r, again, trace_out, timeline_out)
    if not r.ok:
        raise typer.Exit(exits.FAILED)


@sim_app.command("replay")
def sim_replay(
    seed: int = typer.Argument(..., metavar="SEED", help="The seed to run again."),
    cpus: int = typer.Option(None, "--cpus", metavar="N", help="The --cpus the seed ran with, if any."),
    mutate: list[str] = typer.Option([], "--mutate", metavar="NAME", help=_MUTATE_HELP),
    schedule: str = typer.Option("random", "--schedule", metavar="random|pct", help=_SCHED_HELP),
    trace: bool = typer.Option(False, "--trace", help="Print the event trace (identical on every replay)."),
    do_shrink: bool = typer.Option(False, "--shrink", help="Shrink a failing scenario to a smaller one that still fails."),
    shrink_out: Path = typer.Option(None, "--shrink-out", metavar="FILE",
                                    help="With --shrink: write the smaller scenario here (run it with `sim run --scenario`)."),
    kernel: str = kernel_option(),
    firmware: str = _firmware_option(),
    module: str = _module_option(),
    to: str = _to_option(),
    catalog: str = _catalog_option(),
    trace_out: Path = outputs.TRACE_OUT,
    timeline_out: Path = outputs.TIMELINE_OUT,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Run a seed again, byte for byte; shrink a failure.

    Run a seed again: the same scenario, interleaving, verdict and trace, byte for byte (give the
    --cpus, --kernel, --firmware, --module and --to the seed ran with: `sim run` prints the line).

    Exit codes: 0 no violation; 1 a violation, the module stopped inside a SEAMCALL, or --shrink
    of a seed that passes; 2 bad arguments (or the real-firmware packages missing); 3 Intel's
    files are not found.
    """
    muts = _check(cpus, mutate, schedule)
    check_kernel(kernel)
    module, to = _check_firmware(firmware, module, to, catalog)
    outputs.wanted(trace_out, timeline_out)
    from tdxseam.sim.replay import replay, shrink

    r = _run_real(replay, seed, cpus=cpus, mutations=muts, schedule=schedule, trace=True, kernel=kernel,
                  firmware=firmware, module=module, to=to, catalog=catalog)
    extra = {}
    if do_shrink:
        if not r.violations:
            raise exits.CliError(f"seed {seed} does not fail: nothing to shrink", exits.FAILED)
        s = _run_real(shrink, r.scenario, mutations=muts, schedule=schedule, catalog=catalog)
        extra["shrunk"] = s.to_json() if as_json else (
            f"{s.original.size()} -> {s.scenario.size()} ({s.runs} runs), still fails with {s.kind}: "
            + s.scenario.dumps())
        if shrink_out is not None:
            from tdxseam.formats.files import FileError, OutputRefused, write_file

            try:
                write_file(shrink_out, (json.dumps(s.scenario.to_json(), indent=2, sort_keys=True) + "\n").encode(),
                           replace=True)
            except OutputRefused as e:
                raise exits.CliError(f"--shrink-out {e}", exits.USAGE) from None
            except FileError as e:
                raise exits.CliError(f"--shrink-out {e}", exits.BAD_INPUT) from None
            extra["shrunk_run"] = f"tdxseam sim run --scenario {shrink_out}" + "".join(
                f" --mutate {m}" for m in muts)
    _print_result(r, as_json, trace=trace, extra=extra)
    from tdxseam.sim.runner import replay_command

    _write_outputs(r, replay_command(seed, cpus=cpus, mutations=muts, schedule=schedule, kernel=kernel,
                                     firmware=firmware, module=module, to=to), trace_out, timeline_out)
    if not r.ok:
        raise typer.Exit(exits.FAILED)


def _write_outputs(r, command: str, trace_out: Path | None, timeline_out: Path | None) -> None:
    verdict = f"{len(r.violations)} violation(s), first {r.violations[0].kind}" if r.violations else "no violation"
    if r.stopped_in_seam is not None:
        verdict = "the TDX module stopped inside a SEAMCALL" + (f", {verdict}" if r.violations else "")
    muts = f", --mutate {','.join(r.mutations)}" if r.mutations else ""
    outputs.write(r.trace, cpus=r.cpus, title=f"sim seed {r.seed}: {r.cpus} CPUs{muts}, {verdict}",
                  trace_out=trace_out, timeline_out=timeline_out,
                  meta={"command": command, "seed": r.seed, "violations": [v.to_json() for v in r.violations]})


@sim_app.command("campaign")
def sim_campaign(
    runs: int = typer.Option(1000, "--runs", metavar="K", help="How many seeds."),
    jobs: int = typer.Option(None, "--jobs", metavar="J", help="Worker processes (default: every CPU)."),
    seed: int = typer.Option(0, "--seed", metavar="SEED", help="First seed; seeds are SEED .. SEED+RUNS-1."),
    cpus: int = typer.Option(None, "--cpus", metavar="N", help=_CPUS_HELP),
    mutate: list[str] = typer.Option([], "--mutate", metavar="NAME", help=_MUTATE_HELP),
    schedule: str = typer.Option("random", "--schedule", metavar="random|pct", help=_SCHED_HELP),
    stop_at_first: bool = typer.Option(False, "--stop-at-first", help="Stop once the lowest failing seed is known."),
    ray: bool = typer.Option(False, "--ray", help="Run on Ray: a cluster (--ray-address) or a local instance of --jobs CPUs (needs tdxseam[ray])."),
    ray_address: str = typer.Option(None, "--ray-address", metavar="HOST:PORT",
                                    help="With --ray: the cluster's address, e.g. HEAD:6379 (default: start a local instance)."),
    kernel: str = kernel_option(),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (runs, violations, failing_seeds, seconds, ...)."),
) -> None:
    """Many seeds in parallel; failing seeds with replay lines.

    Run many seeds in parallel; print the summary, the coverage table and the first failing seeds
    with their replay command.

    Exit codes: 0 no violation and every `sometimes` outcome reached; 1 a violation, or a long
    generated campaign that never reached one; 2 bad arguments (an unreachable --ray-address
    too).
    """
    muts = _check(cpus, mutate, schedule)
    check_kernel(kernel)
    exits.check_range("--runs", runs, 0, MAX_RUNS)
    if jobs is not None:
        exits.check_range("--jobs", jobs, 1, MAX_JOBS)
    from tdxseam.sim.campaign import CampaignError, RayUnreachable, ray_available, run_campaign
    from tdxseam.sim.progress import format_status

    if ray_address is not None and not ray:
        raise exits.CliError("--ray-address needs --ray", exits.USAGE)
    if ray and not ray_available():
        raise exits.CliError("--ray needs the ray package: pip install 'tdxseam[ray]'", exits.USAGE)
    from tdxseam.cli.progress import Progress

    bar = Progress("campaign", "runs")  # a terminal only: silent in pipes and logs

    def show(st) -> None:  # noqa: ANN001
        bar.show(lambda now: format_status(st), final=st.done >= st.total)

    try:
        res = run_campaign(runs, jobs=jobs, seed=seed, cpus=cpus, mutations=muts, schedule=schedule,
                           stop_at_first=stop_at_first, backend="ray" if ray else "process",
                           ray_address=ray_address, kernel=kernel, progress=show if bar.enabled else None)
    except RayUnreachable as e:
        raise exits.CliError(str(e), exits.USAGE) from None
    except CampaignError as e:  # a batch kept losing its worker
        raise exits.CliError(str(e), exits.FAILED) from None
    finally:
        bar.close()
    if as_json:
        print(json.dumps(res.to_json(), sort_keys=True))
    else:
        what = f" with {', '.join(muts)}" if muts else ""
        where = f"Ray, {res.jobs} CPU(s)" if ray else f"{res.jobs} job(s)"
        print(f"campaign{what}: seeds {seed}..{seed + res.runs - 1}, {res.runs} runs, {where}, "
              f"schedule {schedule}, kernel {kernel}")
        if res.retried:
            print(f"retried: {res.retried} batch(es) whose worker died; every seed ran and is counted once")
        print(f"violations: {res.violations} in {len(res.failing)} failing seed(s)")
        if res.kinds:
            print("  by kind: " + ", ".join(f"{k} {n}" for k, n in sorted(res.kinds.items())))
        if res.seeds_to_catch is not None and muts:
            print(f"first caught after {res.seeds_to_catch} seed(s)")
        for f in res.failing[:SHOWN_FAILURES]:
            print(f"  {f.replay}  # [{f.kind}] {f.message}")
        if len(res.failing) > SHOWN_FAILURES:
            print(f"  ... and {len(res.failing) - SHOWN_FAILURES} more failing seed(s) "
                  f"({len(res.failing)} in all; --json lists them)")
        for line in res.coverage_lines():
            print(line)
        rate = res.runs / res.seconds if res.seconds else 0.0
        print(f"{res.seconds:.1f} s, {rate:.1f} runs/s, {res.steps} scheduler steps, seeds digest {res.seeds_digest}")
    if res.violations or res.missing_sometimes:
        raise typer.Exit(exits.FAILED)


@sim_app.command("explore")
def sim_explore(
    cpus: int = typer.Option(2, "--cpus", metavar="N", help="Host size; exhaustive exploration is for 2 or 3 CPUs."),
    seed: int = typer.Option(0, "--seed", metavar="SEED", help="Seeds the host (boot) and the run's random parts."),
    preemptions: int = typer.Option(1, "--preemptions", metavar="N", help="At most this many switches away from a CPU that could go on."),
    depth: int = typer.Option(400, "--depth", metavar="N", help="Choice points considered per run (later ones take the default)."),
    max_schedules: int = typer.Option(2000, "--max-schedules", metavar="N", help="Stop after this many runs."),
    reader: bool = typer.Option(True, "--reader/--no-reader", help="A sysfs reader of seamldr_version races the update."),
    fault: str = typer.Option(None, "--fault", metavar="SPEC", help="A fault rule, e.g. P_SEAMLDR_INSTALL@1=EBADSIG."),
    mutate: list[str] = typer.Option([], "--mutate", metavar="NAME", help=_MUTATE_HELP),
    choices: str = typer.Option(None, "--choices", metavar="POINT:RANK...",
                                help="Run just this schedule (as printed for a failing one) and print its trace."),
    scenario: Path = typer.Option(None, "--scenario", metavar="FILE",
                                  help="Explore this scenario (JSON, e.g. from `sim replay --shrink-out`) "
                                       "instead of the small built-in one."),
    kernel: str = kernel_option(),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Every schedule of a small update, within bounds.

    Run one small update scenario under every schedule within the bounds; report how many.

    Exit codes: 0 no violation; 1 a violation; 2 bad arguments.
    """
    muts = _check(cpus, mutate, "random")
    check_kernel(kernel)
    if not 1 <= cpus <= 8:
        raise exits.CliError("explore is for small hosts: --cpus 1..8", exits.USAGE)
    exits.check_range("--preemptions", preemptions, 0, 64)
    exits.check_range("--depth", depth, 0, 1_000_000)
    exits.check_range("--max-schedules", max_schedules, 1, 100_000_000)
    from tdxseam.seam.faults import FaultSpecError, parse_fault_spec
    from tdxseam.sim.scenario import tiny
    from tdxseam.sim.schedules import explore, parse_compact, run_schedule

    if fault is not None:
        try:
            parse_fault_spec(fault)
        except FaultSpecError as e:
            raise exits.CliError(str(e), exits.USAGE) from None
    if scenario is not None:
        sc = _load_scenario(scenario)
        cpus, seed = sc.cpus, sc.seed
        if sc.firmware == "real":  # Intel's binaries, found as `sim run` finds them
            from tdxseam.cli.cmd_firmware import require_engine

            require_engine()
    else:
        sc = tiny(seed, cpus=cpus, reader=reader, fault=fault, kernel=kernel)
    if choices is not None:
        try:
            ranks = parse_compact(choices)
        except ValueError as e:
            raise exits.CliError(f"--choices: {e}", exits.USAGE) from None
        r = _run_real(run_schedule, sc, ranks, mutations=muts, depth=depth, trace=True)
        _print_result(r, as_json, trace=True)
        if r.violations:
            raise typer.Exit(exits.FAILED)
        return
    from tdxseam.cli.progress import Progress

    bar = Progress("explore", "schedules (at most)")
    try:
        ex = _run_real(explore, sc, mutations=muts, preemptions=preemptions, depth=depth,
                       max_schedules=max_schedules, progress=bar if bar.enabled else None)
    finally:
        bar.close()
    if as_json:
        print(json.dumps(ex.to_json() | {"seed": seed, "cpus": cpus, "preemptions": preemptions, "depth": depth,
                                         "mutations": list(muts)}, sort_keys=True))
    else:
        bound = "covered completely" if ex.exhausted else f"cut off at --max-schedules {max_schedules}"
        print(f"seed {seed}: {cpus} CPUs, at most {preemptions} preemption(s), {depth} choice points: "
              f"{ex.schedules} distinct schedules ({ex.distinct_interleavings} distinct CPU interleavings), "
              f"bounded space {bound}")
        print(f"violations: {len(ex.failing)} schedule(s)")
        from tdxseam.sim.schedules import compact

        for prefix, vs in ex.failing[:5]:
            print(f"  --choices '{compact(prefix)}': {vs[0]}")
        print(f"{ex.seconds:.1f} s")
    if ex.failing:
        raise typer.Exit(exits.FAILED)


@sim_app.command("mutations")
def sim_mutations(as_json: bool = typer.Option(False, "--json", help="Print one JSON object.")) -> None:
    """The planted bugs --mutate can switch on.

    The planted bugs `--mutate NAME` switches on, each one a broken variant of the host code.

    Exit codes: 0 always.
    """
    from tdxseam.kernel.kernel import MUTATIONS

    if as_json:
        print(json.dumps(MUTATIONS, sort_keys=True))
        return
    width = max(len(n) for n in MUTATIONS)
    for name, what in MUTATIONS.items():
        print(f"{name:<{width}}  {what}")
