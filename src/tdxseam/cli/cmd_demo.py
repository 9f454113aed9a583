"""`tdxseam demo`: the main job, a runtime TDX module update on the embedded emulated host."""

from __future__ import annotations

import json
import sys

import typer

from tdxseam.cli import app, exits


@app.command()
def demo(
    cpus: int = typer.Option(8, "--cpus", metavar="N", help="Logical CPUs of the emulated host (1-4096)."),
    tds: int = typer.Option(4, "--tds", metavar="K", help="TDs to build and run before the update."),
    from_: str = typer.Option(None, "--from", metavar="VERSION", help="Module the host boots with (version). Default: 1.5.06."),
    to: str = typer.Option(None, "--to", metavar="VERSION|FILE", help="Module to install: a version, or a v1 blob / v2 image file."),
    catalog: str = typer.Option(None, "--catalog", metavar="DIR", help="A directory laid out like Intel's binaries repository."),
    seed: int = typer.Option(0, "--seed", metavar="SEED", help="Fixes the interleaving of the emulated CPUs."),
    synthetic: bool = typer.Option(False, "--synthetic",
                                   help="Use synthetic test-signed modules even when Intel's are at hand."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Update a running host's module in place; show what survived.

    With no catalog, Intel's real releases are used when they sit beside the repository
    (../shared/fixtures/intel-tdx-module-binaries, or $TDXSEAM_INTEL_BINARIES): 1.5.06 -> 1.5.13.
    Otherwise synthetic modules signed with the test key: 1.5.06 -> 1.5.08.

    Exit codes: 0 updated, TDs preserved; 1 the update failed; 2 bad arguments; 3 a module file is unreadable.
    """
    if not 1 <= cpus <= 4096:
        raise exits.CliError(f"--cpus must be between 1 and 4096, not {cpus}", exits.USAGE)
    if synthetic and catalog:
        raise exits.CliError("--synthetic and --catalog exclude each other", exits.USAGE)
    if not 0 <= tds <= 63:
        raise exits.CliError(f"--tds must be between 0 and 63 (the emulated HKIDs), not {tds}", exits.USAGE)
    from tdxseam.demo import DemoError, run_demo
    from tdxseam.formats.errors import FormatError

    show = None
    bar = None
    if not as_json and sys.stderr.isatty():
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

        from tdxseam.cli.output import raw

        # rich draws with escape sequences of its own: on the terminal itself, not through the
        # escaping stream (its text is the emulator's states, nothing from a file)
        bar = Progress(TextColumn("{task.description:<34}"), BarColumn(), MofNCompleteColumn(),
                       TextColumn("CPUs acked, status {task.fields[status]}"), transient=True,
                       console=Console(file=raw(sys.stderr)))
        job = bar.add_task("lockstep", total=cpus, status="idle")
        seen: list[str] = []

        def show(p) -> None:  # noqa: F811 - one update of the bar per slice of the run
            if not seen or seen[-1] != p.state:
                seen.append(p.state)
                bar.console.print(f"  step {p.step:>8}  lockstep {p.state:<12} {p.acked}/{p.cpus} CPUs acked",
                                  highlight=False)
            done = p.cpus if p.state == "DONE" else p.acked
            bar.update(job, description=f"update: {p.state}", completed=done, status=p.status)

        bar.start()
    try:
        r = run_demo(cpus=cpus, tds=tds, from_=from_, to=to, catalog=catalog, seed=seed,
                     synthetic=synthetic, progress=show)
    except (DemoError, FormatError) as e:
        raise exits.CliError(str(e), exits.BAD_INPUT) from None
    finally:
        if bar is not None:
            bar.stop()
    if as_json:
        keys = ["ok", "cpus", "version_before", "version_after", "tds_before", "tds_preserved",
                "remaining_updates_before", "remaining_updates_after", "error", "status"]
        out = r.to_json()
        print(json.dumps({k: out[k] for k in keys} | {"details": {k: v for k, v in out.items() if k not in keys}},
                         sort_keys=True))
    else:
        for n in r.notes:
            print(f"note: {n}")
        print(f"emulated host: {r.cpus} CPUs, seed {r.seed}")
        print(f"running module:   {r.version_before}  ({r.from_module})")
        print(f"update image:     {r.to_module}" + ("  [Intel v1 blob converted to a v2 image]" if r.converted else ""))
        print(f"TDs built and run before the update: {r.tds_before}")
        print(f"num_remaining_updates: {r.remaining_updates_before} -> {r.remaining_updates_after}")
        print(f"update: {r.steps} scheduler steps, {r.wall_seconds * 1000:.1f} ms wall")
        print(f"version: {r.version_before} -> {r.version_after if r.version_after else 'ENXIO (no module)'}")
        print(f"TDs preserved: {r.tds_preserved}/{r.tds_before}; ran again on the new module: {r.td_runs_after}")
        for p in r.td_problems:
            print(f"  {p}")
        if r.ok:
            print("result: OK")
        else:
            print(f"result: FAILED: {r.error}" + (f" (status {r.status})" if r.status else ""))
    if not r.ok:
        raise typer.Exit(exits.FAILED)
