"""`tdxseam plan` read without typer (cli/fastpath.py): the same options as the typer command, the
same output and exit code, and a start-up that loads neither typer nor cryptography nor logging."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from _tool_host import make_root
from fuzz_targets import run_cli
from tdxseam.cli import exits
from tdxseam.cli.fastpath import PLAN_ENVVARS, PLAN_FLAGS, PLAN_VALUES, plan_args


def test_fast_path_knows_exactly_plans_options():
    """The fast path's table and the typer command's parameters, held together."""
    import typer.main

    from tdxseam.cli import _get_app

    cmd = typer.main.get_command(_get_app()).commands["plan"]
    declared = {}
    for p in cmd.params:
        for opt in p.opts + p.secondary_opts:
            declared[opt] = (p.name, p.is_flag, p.multiple, p.envvar)
    mine = {o: (n, True, False, None) for o, n in PLAN_FLAGS.items()}
    mine.update({o: (n, False, n == "trust_key", PLAN_ENVVARS.get(n)) for o, n in PLAN_VALUES.items()})
    assert mine == declared


@pytest.mark.parametrize("args", [
    ["plan"], ["plan", "--json"], ["plan", "-v", "--catalog", "C"], ["plan", "--catalog=C", "--sysfs-root=R"],
    ["plan", "--trust-key", "a", "--trust-key=b", "--allow-debug", "--ignore-strict-compat"],
])
def test_plain_command_lines_take_the_fast_path(args):
    kw = plan_args(args, environ={})
    assert kw is not None
    assert kw["sysfs_root"] == ("R" if "--sysfs-root=R" in args else "/")
    assert kw["trust_key"] == (["a", "b"] if "--trust-key" in args else [])


@pytest.mark.parametrize("args", [
    [], ["verify"], ["plan", "--help"], ["plan", "-h"], ["plan", "--json", "--json"], ["plan", "--catalog"],
    ["plan", "--catalog", "a", "--catalog", "b"], ["plan", "--catalog", "--json"], ["plan", "--json=1"],
    ["plan", "--"], ["plan", "extra"], ["plan", "--cat", "x"], ["plan", "-vv"], ["plan", "--catalog="],
    ["--version", "plan"],
])
def test_anything_else_goes_to_typer(args):
    assert plan_args(args, environ={}) is None


def test_environment_as_click_reads_it():
    env = {"TDXSEAM_CATALOG": "C", "TDXSEAM_SYSFS_ROOT": ""}  # click ignores an empty variable
    kw = plan_args(["plan"], environ=env)
    assert kw["catalog"] == "C" and kw["sysfs_root"] == "/"
    assert plan_args(["plan", "--catalog", "D"], environ=env)["catalog"] == "D"


def _cases(intel_dir, tmp_path):
    root = make_root(tmp_path / "root")
    low = make_root(tmp_path / "low", remaining=0)
    cat = str(intel_dir)
    return [
        ["plan", "--json", "--catalog", cat, "--sysfs-root", str(root)],
        ["plan", "--catalog", cat, "--sysfs-root", str(root), "-v"],
        ["plan", "--catalog=" + cat, "--sysfs-root=" + str(low), "--json"],
        ["plan", "--catalog", cat, "--sysfs-root", str(low), "--allow-debug", "--ignore-strict-compat"],
        ["plan", "--json", "--catalog", cat, "--sysfs-root", str(tmp_path / "nothing")],
        ["plan", "--json", "--catalog", str(tmp_path / "nocat"), "--sysfs-root", str(root)],
        ["plan", "--sysfs-root", str(root)],  # no catalog: usage error
        ["plan", "--catalog", cat, "--trust-key", str(tmp_path / "missing.pem"), "--sysfs-root", str(root)],
    ]


def test_fast_and_typer_answer_alike(intel_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("TDXSEAM_CATALOG", raising=False)
    monkeypatch.delenv("TDXSEAM_SYSFS_ROOT", raising=False)
    codes = set()
    for args in _cases(intel_dir, tmp_path):
        assert plan_args(args) is not None, args
        fast, slow = run_cli(args), run_cli(args, slow=True)
        assert fast == slow, args
        codes.add(fast[0])
    assert {exits.OK, exits.BLOCKED, exits.USAGE} <= codes and exits.INTERNAL not in codes


def test_plan_starts_without_typer_cryptography_or_logging(intel_dir, tmp_path):
    """What makes `plan` quick (bench/bench_tool.py): none of these is loaded on its way."""
    root = make_root(tmp_path / "root")
    code = ("import sys\nfrom tdxseam.cli import main\n"
            f"try:\n    main(['plan', '--json', '--catalog', {str(intel_dir)!r}, '--sysfs-root', {str(root)!r}])\n"
            "except SystemExit as e:\n    rc = e.code\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in "
            "('typer', 'click', 'rich', 'cryptography', 'logging', 'pydantic'))\n"
            "print(rc, heavy, file=sys.stderr)\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert json.loads(r.stdout)["selected"]["version"] == "1.5.13"
    assert r.stderr.strip() == "0 []", r.stderr
