"""The operator tool: verify, mrseam, plan, update, convert, history (docs/operator-tool.md).

Only typer and the exit codes are imported at start-up; each command imports its machinery
(`tdxseam.tool.*`, `cryptography` through the signature check) when it runs. The body of `plan`
and the helpers all commands share are in tool_plan, which main()'s fast path uses without typer.
"""

from __future__ import annotations

import sys

import typer

from tdxseam.cli import app, exits
from tdxseam.cli.tool_plan import (  # noqa: F401  (shared with the other commands here)
    _MODULE_VERSION_HELP,
    _OUTCOME_CODE,
    _dump,
    _identity_exit,
    _load_files,
    _module_version,
    _open_catalog,
    _print_plan,
    _tool_errors,
    _verify_opts,
    run_plan,
)

_CATALOG_HELP = "Directory laid out like Intel's binaries repository (mapping_file.json, joined_files/...)."
_ROOT_HELP = "Where the host's /sys and /proc are: / on a TDX host, the emulated host's mount point in tests."


# -- verify ---------------------------------------------------------------------------------------------


@app.command()
def verify(
    files: list[str] = typer.Argument(..., metavar="FILE...", help="v1 blob, v2 image, or .bin/.sigstruct pair."),
    trust_key: list[str] = typer.Option([], "--trust-key", metavar="PEM",
                                        help="Also trust this RSA-3072 public key (test keys); repeatable."),
    allow_debug: bool = typer.Option(False, "--allow-debug", help="Do not count a debug-signed module as a failure."),
    module_version: str = typer.Option(None, "--module-version", metavar="X.Y.Z", help=_MODULE_VERSION_HELP),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Also say where each identity fact came from."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list, one object per file."),
) -> None:
    """Verify module files offline, naming every failure.

    Checks format, checksum, signature, signing key, SEAMHASH, debug bit, CPUID table, SVN and
    version.

    Exit codes: 0 every file passes; 1 a file fails; 2 bad arguments; 3 a file cannot be read, or
    its identity is contradictory or unknown (--module-version supplies a renamed file's).
    """
    with _tool_errors():
        from tdxseam.tool.verify import verify_module

        opts = _verify_opts(trust_key, allow_debug, module_version)
        mfs = _load_files(files)
        if module_version is not None and len(mfs) != 1:
            raise exits.CliError("--module-version names the version of one FILE", exits.USAGE)
        results = [verify_module(mf, opts) for mf in mfs]
    if as_json:
        _dump([r.to_json() for r in results])
    else:
        for r in results:
            s = r.sig
            head = f"{'OK  ' if r.ok else 'FAIL'}  {str(r.version) if r.version else '?':8}  {r.file.display}"
            if s is not None:
                key = {"intel": "Intel key", "trusted": "trusted test key"}.get(r.signing_key or "", "untrusted key")
                cpus = " ".join(f"0x{c:x}" for c in s.cpuids) or "none"
                head += (f"  ({r.file.format}, {key}, SVN {s.major_svn}.{s.minor_svn}, "
                         f"{'debug' if s.is_debug else 'production'}, CPUs {cpus})")
            print(head)
            if verbose and r.identity is not None:
                print(f"      identity: {r.identity.describe()}")
            for p in r.problems:
                print(f"      {p.code}: {p.message}")
            for n in r.notes:
                print(f"      note: {n}")
    _identity_exit(results)
    if not all(r.ok for r in results):
        raise typer.Exit(exits.FAILED)


# -- mrseam ---------------------------------------------------------------------------------------------


@app.command()
def mrseam(
    files: list[str] = typer.Argument(..., metavar="FILE..."),
    trust_key: list[str] = typer.Option([], "--trust-key", metavar="PEM", help="Also trust this public key."),
    module_version: str = typer.Option(None, "--module-version", metavar="X.Y.Z", help=_MODULE_VERSION_HELP),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list, one object per file."),
) -> None:
    """Attestation values after installing each file.

    MRSEAM, MRSIGNERSEAM and TEE_TCB_SVN a TD quote carries once the module runs. Values come from the file itself; a file that fails verification is still shown, marked,
    and makes the exit code 1 (a host would refuse to load it).

    Exit codes: 0 every file verifies; 1 a file fails verification; 2 bad arguments; 3 a file is unreadable.
    """
    with _tool_errors():
        from tdxseam.tool.mrseam import measurement_json
        from tdxseam.tool.verify import verify_module

        opts = _verify_opts(trust_key, True, module_version)
        mfs = _load_files(files)
        if module_version is not None and len(mfs) != 1:
            raise exits.CliError("--module-version names the version of one FILE", exits.USAGE)
        results = [verify_module(mf, opts) for mf in mfs]
        rows = [measurement_json(r) for r in results]
    if as_json:
        _dump(rows)
    else:
        for r in rows:
            print(f"{r['file']}  {r['version'] or '?'}" + ("" if r["ok"] else "  (FAILS VERIFICATION)"))
            if r["identity"] is not None:
                print(f"  identity      {r['identity']['summary']}")
            if r["mrseam"] is not None:
                print(f"  MRSEAM        {r['mrseam']}")
                print(f"  MRSIGNERSEAM  {r['mrsignerseam']}")
                print(f"  TEE_TCB_SVN   {r['tee_tcb_svn']}  (SVN {r['seamsvn']}; bytes 2-15 set by the platform)")
            for p in r["problems"]:
                print(f"  problem: {p['code']}: {p['message']}")
    _identity_exit(results, unknown_ok=True)  # the measurement stands without the version
    bad = [r["file"] for r in rows if not r["ok"]]
    if bad:
        print(f"tdxseam: error: {len(bad)} file(s) fail verification: {', '.join(bad)}", file=sys.stderr)
        raise typer.Exit(exits.FAILED)


# -- plan -----------------------------------------------------------------------------------------------

@app.command()
def plan(
    catalog: str = typer.Option(None, "--catalog", envvar="TDXSEAM_CATALOG", metavar="DIR", help=_CATALOG_HELP),
    sysfs_root: str = typer.Option("/", "--sysfs-root", envvar="TDXSEAM_SYSFS_ROOT", metavar="ROOT", help=_ROOT_HELP),
    trust_key: list[str] = typer.Option([], "--trust-key", metavar="PEM", help="Also trust this public key."),
    allow_debug: bool = typer.Option(False, "--allow-debug", help="Accept debug-signed modules."),
    ignore_strict_compat: bool = typer.Option(False, "--ignore-strict-compat",
                                              help="Do not refuse on strict_compat_versions."),
    verbose: bool = typer.Option(False, "--verbose", "-v", help="Show passing checks too."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Judge every release for this host, with reasons.

    Reads the host, applies every rule to every release in the catalog and marks the one
    `update` would install.

    Exit codes: 0 a release would be installed; 2 bad arguments; 3 the catalog or a file is unreadable;
    10 up to date; 11 newer releases all refused; 12 the host cannot take an update now; 17 not a
    TDX host, or its files cannot be read.
    """
    code = run_plan(catalog, sysfs_root, trust_key, allow_debug, ignore_strict_compat, verbose, as_json)
    if code:
        raise typer.Exit(code)


# -- update ---------------------------------------------------------------------------------------------

_UPDATE_CODE = {
    "updated": exits.OK, "dry_run": exits.OK, "up_to_date": exits.UP_TO_DATE, "refused": exits.REFUSED,
    "blocked": exits.BLOCKED, "declined": exits.DECLINED, "upload_failed": exits.UPLOAD_FAILED,
    "module_lost": exits.MODULE_LOST, "timeout": exits.TIMEOUT, "version_mismatch": exits.VERSION_MISMATCH,
}


class _ProgressPrinter:
    """Progress on stderr: one rewritten line on a terminal, one line per change otherwise."""

    def __init__(self) -> None:
        self.tty = sys.stderr.isatty()
        self.last: tuple[str, int | str | None] | None = None

    def __call__(self, p) -> None:
        if p.phase == "writing":
            pct = 100 * p.written // max(p.total, 1)
            key = ("writing", pct // (1 if self.tty else 25))
            text = f"writing image: {p.written}/{p.total} bytes ({pct}%)"
        else:
            key = ("kernel", p.status)
            text = f"kernel: {p.status} ({p.elapsed:.1f} s)"
        if key == self.last and not self.tty:
            return
        self.last = key
        if self.tty:
            from tdxseam.cli.output import escape, raw

            print(f"\r\033[K{escape(text)}", end="", file=raw(sys.stderr), flush=True)
            if p.phase == "done":
                print(file=raw(sys.stderr))
        else:
            print(text, file=sys.stderr)


def _confirm(plan, image: bytes) -> bool:
    sel = plan.selected
    print(f"Install TDX module {sel.version} over {plan.host.version} on {plan.host.root} "
          f"({len(image)}-byte {plan.host.image_format} image; TDs pause during the update)? [y/N] ",
          end="", file=sys.stderr, flush=True)
    answer = sys.stdin.readline()
    return answer.strip().lower() in ("y", "yes")


@app.command()
def update(
    target: str = typer.Argument(None, metavar="VERSION|FILE",
                                 help="A version in the catalog or a module file; default: what plan selects."),
    catalog: str = typer.Option(None, "--catalog", envvar="TDXSEAM_CATALOG", metavar="DIR", help=_CATALOG_HELP),
    sysfs_root: str = typer.Option("/", "--sysfs-root", envvar="TDXSEAM_SYSFS_ROOT", metavar="ROOT", help=_ROOT_HELP),
    dry_run: bool = typer.Option(False, "--dry-run", help="Plan and build the image, write nothing."),
    allow_debug: bool = typer.Option(False, "--allow-debug", help="Accept debug-signed modules."),
    ignore_strict_compat: bool = typer.Option(False, "--ignore-strict-compat",
                                              help="Do not refuse on strict_compat_versions."),
    trust_key: list[str] = typer.Option([], "--trust-key", metavar="PEM", help="Also trust this public key."),
    module_version: str = typer.Option(None, "--module-version", metavar="X.Y.Z", help=_MODULE_VERSION_HELP),
    yes: bool = typer.Option(False, "--yes", "-y", help="Do not ask for confirmation."),
    timeout: float = typer.Option(30.0, "--timeout", metavar="SECONDS", help="How long to wait for status idle."),
    history_file: str = typer.Option(None, "--history", metavar="PATH",
                                     help="History log (default $TDXSEAM_HISTORY or /var/lib/tdxseam/history.jsonl)."),
    lock_file: str = typer.Option(None, "--lock", metavar="PATH",
                                  help="Update lock, so two runs never interleave (default $TDXSEAM_LOCK or "
                                       "/run/tdxseam/update.lock)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object (needs --yes or --dry-run)."),
) -> None:
    """Install a TDX module update through sysfs.

    Installs the release plan selects (or the one named), converted to the image the host's
    kernel takes, under an exclusive lock; `data` is read back before the kernel is told to go.

    Exit codes: 0 updated (or dry run); 2 bad arguments; 3 the catalog or a file is unreadable; 10 up to
    date; 11 refused; 12 blocked (also: another update holds the lock); 13 upload failed (also: `data`
    read back differs, cancelled); 14 module lost; 15 timeout; 16 version mismatch; 17 host unreadable;
    18 declined.
    """
    exits.check_seconds("--timeout", timeout)
    interactive = not dry_run and not yes
    if interactive and (as_json or not sys.stdin.isatty()):
        raise exits.CliError("confirm with --yes (or use --dry-run): "
                             + ("--json cannot ask" if as_json else "stdin is not a terminal"), exits.USAGE)
    with _tool_errors():
        from tdxseam.tool.history import history_path
        from tdxseam.tool.hostinfo import SysfsRoot
        from tdxseam.tool.lock import lock_path
        from tdxseam.tool.plan import PlanOptions
        from tdxseam.tool.update import UpdateOptions, run_update

        cat = _open_catalog(catalog, target is None)
        popts = PlanOptions(_verify_opts(trust_key, allow_debug, probe_default="off"), ignore_strict_compat,
                            _module_version(module_version))
        uopts = UpdateOptions(dry_run=dry_run, timeout=timeout, confirm=_confirm if interactive else None,
                              progress=None if as_json else _ProgressPrinter(),
                              history=history_path(history_file), lock=lock_path(lock_file))
        res = run_update(SysfsRoot(sysfs_root), cat, target, popts, uopts)
    code = _UPDATE_CODE[res.outcome.value]
    if as_json:
        _dump(res.to_json())
    else:
        if res.plan is not None and res.outcome.value in ("refused", "blocked", "dry_run"):
            _print_plan(res.plan, False)
            print()
        if res.outcome.value == "dry_run":
            print(f"Image: {res.image_format}, {res.image_size} bytes, SHA-384 {res.image_sha384}")
        print(("" if code == 0 else "tdxseam: ") + res.message, file=sys.stdout if code == 0 else sys.stderr)
        if res.outcome.value == "updated":
            print(f"MRSEAM now {res.mrseam}; {res.remaining_after} update(s) left before a reboot")
    if res.history_error:
        print(f"tdxseam: warning: {res.history_error}", file=sys.stderr)
    if code:
        raise typer.Exit(code)


# -- convert --------------------------------------------------------------------------------------------


@app.command()
def convert(
    src: str = typer.Argument(..., metavar="IN", help="v1 blob, v2 image, or .bin/.sigstruct pair."),
    dst: str = typer.Argument(..., metavar="OUT"),
    fmt: str = typer.Option("v2", "--format", metavar="v2|v1", help="Output container (default v2, for Linux 7.2+)."),
    force: bool = typer.Option(False, "--force", help="Replace OUT if it exists."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> None:
    """Write a module as a v2 (0x200) update image.

    The v2 image is what the merged kernel (Linux 7.2+) takes; --format v1 writes Intel's blob.

    Exit codes: 0 written; 2 bad arguments, or OUT exists (without --force) or is not a regular file; 3 IN is unreadable or not a module, or OUT cannot be written.
    """
    with _tool_errors():
        from tdxseam.tool.convert import convert_file

        res = convert_file(src, dst, fmt=fmt, force=force)
    if as_json:
        _dump(res.to_json())
    else:
        print(f"{res.output}: {res.output_format} image, {res.size} bytes, SHA-384 {res.sha384} "
              f"(from {res.source_format} {res.source})")


# -- history --------------------------------------------------------------------------------------------


@app.command()
def history(
    history_file: str = typer.Option(None, "--history", metavar="PATH",
                                     help="History log (default $TDXSEAM_HISTORY or /var/lib/tdxseam/history.jsonl)."),
    last: int = typer.Option(0, "--last", metavar="N", help="Only the last N records (0: all)."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list of records."),
) -> None:
    """Show the update history.

    Exit codes: 0 shown; 2 bad arguments; 3 the log is unreadable.
    """
    if last < 0:
        raise exits.CliError("--last must not be negative", exits.USAGE)
    with _tool_errors():
        from tdxseam.tool.history import history_path, read

        h = read(history_path(history_file))
    recs = h.records[-last:] if last else h.records
    if as_json:
        _dump(recs)
    elif not recs:
        print(f"{h.path}: no updates recorded")
    else:
        for r in recs:
            print(f"{r.get('time', '?')}  {r.get('outcome', '?'):16}  {r.get('from_version')} -> "
                  f"{r.get('to_version')}  root {r.get('root')}  {r.get('message', '')}")
    if h.bad_lines:
        print(f"tdxseam: warning: {h.path}: skipped {len(h.bad_lines)} malformed line(s) "
              f"({', '.join(map(str, h.bad_lines[:5]))})", file=sys.stderr)
