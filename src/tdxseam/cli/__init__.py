"""The `tdxseam` command line. Commands import their machinery lazily, so start-up stays quick."""

from __future__ import annotations

import sys

import typer

from tdxseam.cli import exits

app = typer.Typer(
    name="tdxseam",
    help="Reference model of the TDX P-SEAMLDR call path and runtime TDX module updates.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

from tdxseam.cli import cmd_core  # noqa: E402,F401  (registers commands on `app`)


def main() -> None:
    try:
        app()
    except exits.CliError as e:
        print(f"tdxseam: error: {e}", file=sys.stderr)
        sys.exit(e.code)
    except KeyboardInterrupt:
        print("tdxseam: interrupted", file=sys.stderr)
        sys.exit(exits.INTERRUPTED)
