"""`tdxseam info` and `tdxseam stress`: the emulated host and its P-SEAMLDR call path."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from tdxseam.cli import app, exits, outputs
from tdxseam.cli.options import check_kernel, kernel_option


MAX_CALLS = 1_000_000  # per CPU; 8 CPUs x 10**6 calls is minutes of emulation already


def _check_cpus(cpus: int) -> None:
    if not 1 <= cpus <= 4096:
        raise exits.CliError(f"--cpus must be between 1 and 4096, not {cpus}", exits.USAGE)


@app.command()
def info(
    cpus: int = typer.Option(8, "--cpus", metavar="N", help="Logical CPUs of the emulated host (1-4096)."),
    firmware: str = typer.Option("model", "--firmware",
                                 help="model: the Python TDX module; real: Intel's binary on the emulated CPU."),
    module: str = typer.Option(None, "--module", metavar="VERSION", help="With --firmware real: the release to boot (default 1.5.06)."),
    catalog: str = typer.Option(None, "--catalog", metavar="DIR", help="With --firmware real: Intel's binaries directory."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Boot the emulated host; print what the kernel reads.

    Boot the emulated host and print what the kernel reads from the P-SEAMLDR and the module.

    Exit codes: 0 done; 1 the P-SEAMLDR call failed; 2 bad arguments.
    """
    _check_cpus(cpus)
    from tdxseam.host import EmulatedHost
    from tdxseam.kernel.seamldr import seamldr_get_info
    from tdxseam.kernel.tdx import tdx_get_sysinfo

    if firmware == "real":
        from tdxseam.cli.cmd_firmware import require_engine
        from tdxseam.demo import DemoError, real_host
        from tdxseam.formats.errors import FormatError

        require_engine()
        from tdxseam.seam.real.errors import RealFirmwareError

        try:
            host = real_host(cpus, module, catalog)
        except (DemoError, FormatError) as e:
            raise exits.CliError(str(e), exits.BAD_INPUT) from None
        except RealFirmwareError as e:
            raise exits.CliError(f"real firmware: {e}", exits.FAILED) from None
    elif firmware == "model":
        if module or catalog:
            raise exits.CliError("--module and --catalog go with --firmware real", exits.USAGE)
        host = EmulatedHost(cpus, trace=False)
    else:
        raise exits.CliError(f"--firmware is 'model' or 'real', not {firmware!r}", exits.USAGE)
    ret, sinfo = host.run_on(0, seamldr_get_info, host.kernel)
    if ret:
        raise exits.CliError(f"SEAMLDR.INFO failed: errno {ret}")
    sysinfo = tdx_get_sysinfo(host.kernel)
    build = host.fw.module.build if host.fw.module is not None else None
    out = {
        "seamldr_version": sinfo.version_str,
        "num_remaining_updates": sinfo.num_remaining_updates,
        "module_version": str(sysinfo.version) if sysinfo else None,
        "tdx_features0": f"0x{sysinfo.tdx_features0:x}" if sysinfo else None,
        # where the emulated module's idea of itself came from
        "module_identity": build.to_json() if build is not None else None,
        "cpus": host.machine.ncpus,
    }
    if as_json:
        print(json.dumps(out, sort_keys=True))
        return
    print(f"P-SEAMLDR version:      {out['seamldr_version']}")
    print(f"num_remaining_updates:  {out['num_remaining_updates']}")
    print(f"TDX module version:     {out['module_version']}")
    print(f"  identity:             {out['module_identity']['summary'] if build is not None else None}")
    print(f"TDX_FEATURES0:          {out['tdx_features0']}")
    print(f"CPUs:                   {out['cpus']}")


@app.command()
def stress(
    cpus: int = typer.Option(8, "--cpus", metavar="N", help="Logical CPUs (1-4096)."),
    calls: int = typer.Option(100, "--calls", metavar="M", help="P-SEAMLDR calls per CPU."),
    irq_calls: bool = typer.Option(False, "--irq-calls", help="Make some calls from interrupt handlers."),
    seed: int = typer.Option(0, "--seed", metavar="SEED", help="Fixes the interleaving; same seed, same output."),
    unserialized: bool = typer.Option(False, "--unserialized", help="Call the P-SEAMLDR without seamldr_lock."),
    no_irqsave: bool = typer.Option(False, "--no-irqsave", help="Take seamldr_lock with interrupts left on."),
    trace: bool = typer.Option(False, "--trace", help="Print the event trace after the summary."),
    kernel: str = kernel_option(),
    trace_out: Path = outputs.TRACE_OUT,
    timeline_out: Path = outputs.TIMELINE_OUT,
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Hammer seamldr_call from every CPU; count what breaks.

    Every CPU calls SEAMLDR.INFO through seamldr_call; count failures, overlap and lock reports.

    Exit codes: 0 done; 2 bad arguments; 4 the run ended in a deadlock.
    """
    _check_cpus(cpus)
    check_kernel(kernel)
    exits.check_range("--calls", calls, 0, MAX_CALLS)
    traced = outputs.wanted(trace_out, timeline_out)
    from tdxseam.cli.progress import Progress
    from tdxseam.sim.stress import run_stress

    bar = Progress("stress", "calls")
    try:
        res, host = run_stress(cpus, calls, seed=seed, irq_calls=irq_calls, unserialized=unserialized,
                               no_irqsave=no_irqsave, trace=trace or traced, kernel=kernel,
                               progress=bar if bar.enabled else None)
    finally:
        bar.close()
    how = "".join(f", {w}" for w, on in (("irq calls", irq_calls), ("unserialized", unserialized),
                                          ("no irqsave", no_irqsave)) if on)
    outputs.write(host.sched.trace, cpus=cpus, title=f"stress seed {seed}: {cpus} CPUs x {calls} SEAMLDR.INFO{how}"
                                                    + (", DEADLOCK" if res.deadlock else ""),
                  trace_out=trace_out, timeline_out=timeline_out, meta={"seed": seed})
    if as_json:
        print(json.dumps(res.to_json(), sort_keys=True))
    else:
        print(f"seed {res.seed}: kernel {res.kernel}, {res.cpus} CPUs, {res.calls} P-SEAMLDR calls "
              f"({res.irq_calls} from interrupt handlers), {res.steps} scheduler steps")
        print(f"failed: {res.failed}   max inside the P-SEAMLDR at once: {res.max_inside}   "
              f"turned away (VMfailInvalid): {res.refused}")
        print(f"schedule digest: {res.schedule_digest}")
        print(f"lock reports: {len(res.lock_reports)}")
        for r in res.lock_reports:
            print(f"  [{r['kind']}] {r['message']}")
        if res.deadlock:
            print(res.deadlock_report)
        else:
            print("deadlock: none")
    if trace:
        print(host.sched.trace.text(), end="")
    if res.deadlock:
        raise typer.Exit(exits.DEADLOCK)
