"""`tdxseam demo`: the main job, a runtime TDX module update on the embedded emulated host."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from tdxseam.cli import app, exits, outputs
from tdxseam.cli.options import check_kernel, kernel_option


@app.command()
def demo(
    cpus: int = typer.Option(8, "--cpus", metavar="N", help="Logical CPUs of the emulated host (1-4096)."),
    tds: int = typer.Option(None, "--tds", metavar="K", help="TDs to build and run before the update (default 4; 0 with --firmware real)."),
    from_: str = typer.Option(None, "--from", metavar="VERSION", help="Module the host boots with (version). Default: 1.5.06."),
    to: str = typer.Option(None, "--to", metavar="VERSION|FILE", help="Module to install: a version, or a v1 blob / v2 image file."),
    module_version: str = typer.Option(None, "--module-version", metavar="X.Y.Z",
                                       help="Version of the --to FILE when it does not state it (a renamed "
                                            "1.5 file: its binary carries no update number)."),
    catalog: str = typer.Option(None, "--catalog", metavar="DIR", help="A directory laid out like Intel's binaries repository."),
    seed: int = typer.Option(0, "--seed", metavar="SEED", help="Fixes the interleaving of the emulated CPUs."),
    synthetic: bool = typer.Option(False, "--synthetic",
                                   help="Use synthetic test-signed modules even when Intel's are at hand."),
    kernel: str = kernel_option(),
    firmware: str = typer.Option("model", "--firmware",
                                 help="model: the Python TDX module; real: Intel's binary on the emulated CPU."),
    fault: str = typer.Option(None, "--fault", metavar="SPEC",
                              help="Inject a fault into the update: LEAF[@CPU][#N]=STATUS, e.g. P_SEAMLDR_INSTALL@5=EBADHASH."),
    trace_out: Path = outputs.TRACE_OUT,
    timeline_out: Path = outputs.TIMELINE_OUT,
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
    check_kernel(kernel)
    if synthetic and catalog:
        raise exits.CliError("--synthetic and --catalog exclude each other", exits.USAGE)
    if tds is None:
        tds = 0 if firmware == "real" else 4
    if not 0 <= tds <= 63:
        raise exits.CliError(f"--tds must be between 0 and 63 (the emulated HKIDs), not {tds}", exits.USAGE)
    if firmware not in ("model", "real"):
        raise exits.CliError(f"--firmware is 'model' or 'real', not {firmware!r}", exits.USAGE)
    if firmware == "real":
        from tdxseam.cli.cmd_firmware import require_engine
        require_engine()
    traced = outputs.wanted(trace_out, timeline_out)
    from tdxseam.demo import DemoError, run_demo
    from tdxseam.formats.errors import FormatError, VersionError
    from tdxseam.formats.version import ModuleVersion
    from tdxseam.probe import ProbeUnavailable, firmware_probe

    option = None
    if module_version is not None:
        try:
            option = ModuleVersion.parse(module_version)
        except VersionError as e:
            raise exits.CliError(f"--module-version: {e}", exits.USAGE) from None
    try:
        probe = firmware_probe()
    except ProbeUnavailable as e:
        raise exits.CliError(str(e), exits.USAGE) from None

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
                     synthetic=synthetic, module_version=option, probe=probe, progress=show,
                     kernel=kernel, firmware=firmware, fault=fault, trace=traced)
    except (DemoError, FormatError) as e:
        raise exits.CliError(str(e), exits.USAGE if str(e).startswith("--fault") else exits.BAD_INPUT) from None
    except Exception as e:
        _real_firmware_error(e)
        raise
    finally:
        if bar is not None:
            bar.stop()
    verdict = "OK" if r.ok else "FAILED"
    outputs.write(r.trace, cpus=r.cpus, title=f"demo update {r.version_before} -> {r.to_module}: {r.cpus} CPUs, "
                                               f"seed {r.seed}" + (f", fault {fault}" if fault else "") + f", {verdict}",
                  trace_out=trace_out, timeline_out=timeline_out, meta={"seed": r.seed, "fault": fault})
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
        print(f"  identity:       {r.from_identity['summary']}")
        print(f"update image:     {r.to_module}" + ("  [Intel v1 blob converted to a v2 image]" if r.converted else ""))
        print(f"  identity:       {r.to_identity['summary']}")
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


def _real_firmware_error(e: Exception) -> None:
    """A real-firmware run that could not go on (a platform value the model lacks, a runaway
    module) is the command's failure, said in one line, not a bug of tdxseam."""
    from tdxseam.seam.real.errors import RealFirmwareError

    if isinstance(e, RealFirmwareError):
        raise exits.CliError(f"real firmware: {e}", exits.FAILED) from None
