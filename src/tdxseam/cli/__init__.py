"""The `tdxseam` command line. Commands import their machinery lazily, so start-up stays quick.

Help is plain text (no rich): loading rich costs ~100 ms at every `--help`. Every error, usage
errors included, is one line `tdxseam: error: ...` on stderr with a documented exit code; with
`--json` the same error is also the run's one JSON document on stdout. Every string printed is
escaped (output.py). The typer application (`app`) is built on first use: `plan` runs without
typer (fastpath.py).
"""

from __future__ import annotations

import os
import sys

from tdxseam.cli import exits, output

APP_HELP = ("Reference model of the TDX P-SEAMLDR call path and runtime TDX module updates.\n\n"
            "Exit codes (each command lists its own): 0 success; 1 a failure found; 2 bad arguments; "
            "3 an unreadable or malformed input file; 4 deadlock; 10-18 operator tool outcomes; "
            "70 internal error (TDXSEAM_DEBUG=1 shows the traceback); 130 interrupted.")


def _version(value: bool) -> None:
    if value:
        import typer

        from tdxseam import __version__

        print(f"tdxseam {__version__}")
        raise typer.Exit(exits.OK)


def _make_app():
    import typer

    app = typer.Typer(
        name="tdxseam",
        help=APP_HELP,
        no_args_is_help=True,
        add_completion=False,
        pretty_exceptions_enable=False,
        rich_markup_mode=None,
    )

    @app.callback()
    def _root(version: bool = typer.Option(False, "--version", is_eager=True, callback=_version,
                                           help="Print the version and exit.")) -> None:
        """Options of `tdxseam` itself (the help text is the app's)."""

    globals()["app"] = app  # before the commands import it

    from tdxseam.cli import cmd_core  # noqa: F401  (registers commands on `app`)
    from tdxseam.cli import cmd_demo  # noqa: F401
    from tdxseam.cli import cmd_emulate  # noqa: F401
    from tdxseam.cli import cmd_tool  # noqa: F401
    from tdxseam.cli import cmd_sim  # noqa: F401
    from tdxseam.cli import cmd_diag  # noqa: F401
    from tdxseam.cli import cmd_firmware  # noqa: F401

    return app


def _get_app():
    return globals().get("app") or _make_app()


def __getattr__(name: str):
    if name == "app":  # `from tdxseam.cli import app`
        return _make_app()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _NotRaised(Exception):
    """Stands for typer's and click's exceptions on the fast path, which loads neither."""


class _NoClick:
    NoArgsIsHelpError = UsageError = ClickException = _NotRaised


_json_mode = False


def _error(message: str, code: int) -> None:
    """The one error line on stderr; with --json also the one JSON document on stdout."""
    if _json_mode:
        output.json_error(message, code)
    print(f"tdxseam: error: {message}", file=sys.stderr)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    """The `tdxseam` command: `argv` (tests, in this process) or the process's own arguments."""
    global _json_mode
    args = list(sys.argv[1:] if argv is None else argv)
    _json_mode = output.wants_json(args)
    saved = output.install()  # every string printed from here on is escaped
    try:
        _main(args)
    finally:
        try:
            sys.stdout.flush()
        except (OSError, ValueError):  # a reader that left: nothing more to say to it
            pass
        sys.stdout, sys.stderr = saved
        if argv is None:
            # The process ends here. Its last garbage collections would walk every object still
            # alive (a plan holds the whole catalog): ~4 ms of a plan's exit. Frozen objects are
            # skipped; the interpreter still shuts down as usual (atexit, flushing).
            import gc

            gc.freeze()


def _main(argv: list[str]) -> None:
    from tdxseam.cli.fastpath import fast_command

    fast = fast_command(argv)
    if fast is None:
        import typer
        from typer._click import exceptions as click_exc

        abort = typer.Abort
    else:
        click_exc, abort = _NoClick, _NotRaised
    try:
        if fast is not None:
            rv = fast()
        else:
            rv = _get_app()(args=argv, prog_name="tdxseam", standalone_mode=False)
    except exits.CliError as e:
        _error(str(e), e.code)
    except click_exc.NoArgsIsHelpError as e:
        e.show()
        sys.exit(exits.USAGE)
    except click_exc.UsageError as e:
        cmd = e.ctx.command_path if e.ctx is not None else "tdxseam"
        msg = " ".join(e.format_message().split())
        _error(f"{msg} (see '{cmd} --help')", exits.USAGE)
    except click_exc.ClickException as e:
        _error(" ".join(e.format_message().split()), e.exit_code or exits.FAILED)
    except (KeyboardInterrupt, abort):
        print("tdxseam: interrupted", file=sys.stderr)
        sys.exit(exits.INTERRUPTED)
    except BrokenPipeError:
        # `tdxseam plan --json | head`: the reader left; not an error of ours
        try:
            sys.stdout = open(os.devnull, "w")
        finally:
            sys.exit(exits.OK)
    except Exception as e:  # a bug: still one line, unless asked for the traceback
        if os.environ.get("TDXSEAM_DEBUG"):
            raise
        first = str(e).splitlines()[0] if str(e) else ""
        _error(f"internal error: {type(e).__name__}: {first} (set TDXSEAM_DEBUG=1 for a traceback)",
               exits.INTERNAL)
    sys.exit(rv if isinstance(rv, int) else exits.OK)
