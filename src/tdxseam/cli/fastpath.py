"""Start-up fast path: `tdxseam plan ...` read without typer and click.

Loading typer and letting click parse cost several times what the plan itself costs (every
signature and SEAMHASH checked), and `plan` is what operators and fleet automation run most
(bench/bench_tool.py). This reader takes only command lines it reads exactly as click does:
`plan` and then plan's own options, each at most once (`--trust-key` may repeat), values given as
`--opt VALUE` or `--opt=VALUE`. Anything else (help, an unknown or repeated option, a flag given a
value, a value that looks like an option, `--`) returns None, and the typer command line takes it,
errors included. Both run the same body, `tool_plan.run_plan`.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence

# plan's options as cmd_tool declares them (tests/test_cli_fastpath.py holds the two together)
PLAN_VALUES = {"--catalog": "catalog", "--sysfs-root": "sysfs_root", "--trust-key": "trust_key"}
PLAN_FLAGS = {"--allow-debug": "allow_debug", "--ignore-strict-compat": "ignore_strict_compat",
              "--verbose": "verbose", "-v": "verbose", "--json": "as_json"}
PLAN_ENVVARS = {"catalog": "TDXSEAM_CATALOG", "sysfs_root": "TDXSEAM_SYSFS_ROOT"}
PLAN_DEFAULTS = {"catalog": None, "sysfs_root": "/", "trust_key": [], "allow_debug": False,
                 "ignore_strict_compat": False, "verbose": False, "as_json": False}


def plan_args(args: Sequence[str], environ: Mapping[str, str] = os.environ) -> dict | None:
    """run_plan's keyword arguments for `args`, or None if the typer command line must read them."""
    if not args or args[0] != "plan":
        return None
    given: dict = {}
    trust: list[str] = []
    i = 1
    while i < len(args):
        name, eq, value = args[i].partition("=") if args[i].startswith("--") else (args[i], "", "")
        i += 1
        if name in PLAN_FLAGS and not eq:
            key = PLAN_FLAGS[name]
            if key in given:
                return None
            given[key] = True
        elif name in PLAN_VALUES:
            if not eq:
                if i >= len(args):
                    return None
                value = args[i]
                i += 1
            if not value or value.startswith("-"):
                return None
            key = PLAN_VALUES[name]
            if key == "trust_key":
                trust.append(value)
            elif key in given:
                return None
            else:
                given[key] = value
        else:
            return None
    out = {**PLAN_DEFAULTS, **given, "trust_key": trust}
    for key, var in PLAN_ENVVARS.items():
        if key not in given and environ.get(var):  # click ignores an empty variable too
            out[key] = environ[var]
    return out


def fast_command(args: Sequence[str]) -> Callable[[], int] | None:
    """The command to run for `args` without typer, or None."""
    kw = plan_args(args)
    if kw is None:
        return None

    def run() -> int:
        from tdxseam.cli.tool_plan import run_plan

        return run_plan(**kw)

    return run
