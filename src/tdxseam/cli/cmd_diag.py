"""`tdxseam explain` and `tdxseam doctor`: read what the kernel printed, and check a host
(docs/explain-doctor.md)."""

from __future__ import annotations

import json
import sys

import typer

from tdxseam.cli import app, exits

def _read_stdin() -> str:
    from tdxseam.tool.explain import MAX_INPUT

    data = sys.stdin.buffer.read(MAX_INPUT)
    return data.decode("utf-8", "replace")


@app.command()
def explain(
    text: list[str] = typer.Argument(None, metavar="CODE|LINE|-",
                                     help="Status codes, leaf numbers or names, field ids (status=V, leaf=V, "
                                          "field=V to say which), or kernel log lines; - or nothing: "
                                          "read a kernel log from stdin."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Name TDX codes and explain kernel log lines.

    Explains TDX status codes, SEAMCALL leaves, metadata field ids and kernel log lines. For each `SEAMCALL (0x...) failed: 0x...` line (with the register lines after it) and each
    other TDX or P-SEAMLDR line it knows: the leaf and which firmware answers it, the status with
    its class and details, the errno the kernel made of it, what it means at that point of boot or
    update, usual causes and what to do.

    Exit codes: 0 everything was recognised; 1 some code is in no published table, or the text
    holds no TDX line; 2 bad arguments.
    """
    from tdxseam.tool.explain import explain_args, explain_log, summary

    if not text or text == ["-"]:
        items = explain_log(_read_stdin())
    else:
        items = explain_args(text)
    s = summary(items)
    if as_json:
        print(json.dumps({**s, "ok": bool(items) and not s["unknown"],
                          "explained": [i.to_json() for i in items]}, indent=2))
    else:
        if not items:
            print("no TDX status, leaf, field id or kernel line recognised")
        print("\n\n".join(i.render() for i in items))
    if not items or s["unknown"]:
        raise typer.Exit(exits.FAILED)


@app.command()
def doctor(
    sysfs_root: str = typer.Option("/", "--sysfs-root", envvar="TDXSEAM_SYSFS_ROOT", metavar="ROOT",
                                   help="Where the host's /sys, /proc, /dev/cpu and /var/log are (/ on a TDX "
                                        "host, an emulated host's mount point in tests)."),
    dmesg: str = typer.Option(None, "--dmesg", metavar="FILE|-",
                              help="The kernel log (dmesg output); - for stdin. Default: ROOT/var/log/dmesg."),
    catalog: str = typer.Option(None, "--catalog", envvar="TDXSEAM_CATALOG", metavar="DIR",
                                help="Intel's binaries repository layout, to see whether a newer release applies."),
    trust_key: list[str] = typer.Option([], "--trust-key", metavar="PEM",
                                        help="Also trust this public key when judging releases (test keys)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Check a TDX host: a verdict and a fix per check.

    One line per check with its verdict (ok, warn, fail, unknown) and the fix. Checks the tdx_host files, the tdx_module upload, module and P-SEAMLDR versions, remaining
    updates, the newest applicable release (with --catalog), TDX CPU flags, online CPUs, every TDX
    line of the kernel log, and, where /dev/cpu/0/msr is readable, SEAMRR and the KeyID split.

    Exit codes: 0 nothing fails; 1 a check fails; 2 bad arguments; 3 the catalog or the --dmesg
    file is unreadable.
    """
    import os

    from tdxseam.cli.cmd_tool import _tool_errors, _verify_opts
    from tdxseam.tool.doctor import MAX_DMESG, NotRegular, SafeRoot, read_regular, run_doctor

    if not os.path.isdir(sysfs_root):
        raise exits.CliError(f"--sysfs-root {sysfs_root}: not a directory", exits.USAGE)
    log_text = log_source = None
    if dmesg == "-":
        log_text, log_source = _read_stdin(), "stdin"
    elif dmesg is not None:
        try:
            log_text = read_regular(dmesg, MAX_DMESG).decode("utf-8", "replace")
        except NotRegular:
            raise exits.CliError(f"--dmesg {dmesg}: not a regular file", exits.BAD_INPUT) from None
        except OSError as e:
            raise exits.CliError(f"--dmesg {dmesg}: {e.strerror or e}", exits.BAD_INPUT) from None
        log_source = dmesg
    with _tool_errors():
        cat = None
        if catalog is not None:
            from tdxseam.tool.catalog import load_catalog

            cat = load_catalog(catalog)
        from tdxseam.tool.plan import PlanOptions

        opts = PlanOptions(_verify_opts(trust_key, False, probe_default="off"))
        report = run_doctor(SafeRoot(sysfs_root), log_text=log_text, log_source=log_source, catalog=cat,
                            opts=opts)
    print_report(report, as_json)
    if not report.ok:
        raise typer.Exit(exits.FAILED)


def print_report(report, as_json: bool) -> None:
    from tdxseam.tool.explain import escape

    if as_json:
        print(json.dumps(report.to_json(), indent=2))
        return
    for c in report.checks:
        fix = f"  -> {c.fix}" if c.fix and c.verdict != "ok" else ""
        print(f"{c.verdict.upper():<8}{c.name:<18}{c.summary}{fix}")
        if c.name == "kernel_log":
            for i in report.log_items:
                what = (f"{i.leaf['name']} -> {i.status['name']} ({i.errno['name'] if i.errno else ''})"
                        if i.kind == "seamcall_failure" else i.meaning)
                first = (i.text or "").split("\n")[0]
                print(f"{'':8}{'':18}line {i.line}: {first}")
                print(f"{'':8}{'':18}  {what}")
                if i.kind == "seamcall_failure" and i.consequence:
                    print(f"{'':8}{'':18}  {i.consequence}")
    n = report.counts()
    print(f"{'OK' if report.ok else 'FAIL'}: {n['ok']} ok, {n['warn']} warn, {n['fail']} fail, "
          f"{n['unknown']} unknown ({escape(report.root)})")
