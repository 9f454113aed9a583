"""`--trace-out FILE` and `--timeline-out FILE.svg`: a traced run written for people to look at.

Shared by `demo`, `stress`, `sim run` and `sim replay`. The timeline needs matplotlib (extra
`tdxseam[plot]`); its absence is found before the run, not after.
"""

from __future__ import annotations

from pathlib import Path

import typer

from tdxseam.cli import exits

TRACE_OUT = typer.Option(None, "--trace-out", metavar="FILE",
                         help="Write the run as Chrome trace-event JSON (Perfetto, chrome://tracing); ts = scheduler steps.")
TIMELINE_OUT = typer.Option(None, "--timeline-out", metavar="FILE.svg",
                            help="Draw the run as a timeline: CPUs by steps, lockstep states coloured, "
                                 "failures marked (SVG, or PNG by suffix; needs tdxseam[plot]).")


def wanted(trace_out: Path | None, timeline_out: Path | None) -> bool:
    """Is a traced run needed? Refuses --timeline-out without matplotlib, before anything runs."""
    if timeline_out is not None:
        from tdxseam.sim.timeline import plot_available

        if not plot_available():
            raise exits.CliError("--timeline-out needs matplotlib: pip install 'tdxseam[plot]'", exits.USAGE)
    return trace_out is not None or timeline_out is not None


def write(trace, *, cpus: int, title: str, trace_out: Path | None, timeline_out: Path | None,
          meta: dict | None = None) -> None:
    """Write what was asked for; an unwritable path is one error line (exit 3)."""
    if trace is None:
        return
    path = None
    try:
        if trace_out is not None:
            from tdxseam.sim.chrome_trace import write_chrome_trace

            path = trace_out
            write_chrome_trace(trace_out, trace, cpus=cpus, title=title, meta=meta)
        if timeline_out is not None:
            from tdxseam.sim.timeline import draw_timeline

            path = timeline_out
            draw_timeline(timeline_out, trace, cpus=cpus, title=title, meta=meta)
    except OSError as e:
        raise exits.CliError(f"{path}: cannot write: {e.strerror or e}", exits.BAD_INPUT) from None
