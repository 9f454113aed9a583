"""The body of `tdxseam plan`, free of typer and click, and the helpers the operator tool's
commands share. The typer command (cmd_tool) and main()'s start-up fast path (fastpath) both call
`run_plan`, so a plan pays neither for loading typer nor for parsing with click.
"""

from __future__ import annotations

import json
import sys

from tdxseam.cli import exits

TYPE_CHECKING = False  # typing and contextlib cost start-up; annotations are strings (PEP 563)
if TYPE_CHECKING:
    from typing import Any


class _tool_errors:  # noqa: N801  (used as `with _tool_errors():`)
    """ToolError and FormatError become one-line CliErrors with their documented codes."""

    def __enter__(self) -> None:
        pass

    def __exit__(self, kind, exc, tb) -> None:  # noqa: ANN001
        from tdxseam.formats.errors import FormatError
        from tdxseam.tool.errors import Kind, ToolError

        if isinstance(exc, ToolError):
            code = {Kind.BAD_INPUT: exits.BAD_INPUT, Kind.HOST: exits.HOST_UNREADABLE, Kind.USAGE: exits.USAGE}[exc.kind]
            raise exits.CliError(str(exc), code) from None
        if isinstance(exc, FormatError):
            raise exits.CliError(str(exc), exits.BAD_INPUT) from None


def _dump(obj: Any) -> None:
    print(json.dumps(obj, indent=2, sort_keys=False))


_MODULE_VERSION_HELP = ("Version of a module FILE that does not state it (a renamed 1.5 file: its binary "
                        "carries no update number).")


def _verify_opts(trust_key: list[str], allow_debug: bool, module_version: str | None = None,
                 probe_default: str = "auto"):
    from tdxseam.probe import ProbeUnavailable, firmware_probe
    from tdxseam.tool.verify import TrustedKeys, VerifyOptions

    keys = TrustedKeys.from_pem_files(trust_key)
    try:
        # the module's own answers, when the real-firmware engine is there ($TDXSEAM_PROBE)
        probe = firmware_probe(default=probe_default)
    except ProbeUnavailable as e:
        raise exits.CliError(str(e), exits.USAGE) from None
    return VerifyOptions(tuple(keys.hashes), allow_debug, _module_version(module_version), probe=probe)


def _module_version(text: str | None):
    if text is None:
        return None
    from tdxseam.formats.errors import VersionError
    from tdxseam.formats.version import ModuleVersion

    try:
        return ModuleVersion.parse(text)
    except VersionError as e:
        raise exits.CliError(f"--module-version: {e}", exits.USAGE) from None


def _identity_exit(results, *, unknown_ok: bool = False) -> None:
    """Facts about a module that disagree, or a version nothing states: one line, exit 3."""
    for r in results:
        bad = r.identity_problem
        if bad is not None and not (unknown_ok and bad.code == "identity.unknown"):
            raise exits.CliError(bad.message, exits.BAD_INPUT)


def _load_files(files: list[str]):
    from tdxseam.tool.catalog import load_module_files

    return load_module_files(files)


_OUTCOME_CODE = {"update": exits.OK, "up_to_date": exits.UP_TO_DATE, "refused": exits.REFUSED,
                 "blocked": exits.BLOCKED}


def _print_plan(plan, verbose: bool) -> None:
    h = plan.host
    cpu = str(h.cpu) if h.cpu else f"unknown ({h.cpuinfo_error})"
    nru = h.remaining_updates if h.remaining_updates is not None else h.num_remaining_updates.error
    ldr = h.seamldr_version.value or h.seamldr_version.error
    print(f"Host {h.root}: TDX module {h.module_version.value}, P-SEAMLDR {ldr}, "
          f"{nru} update(s) left, CPU {cpu}")
    if h.layout is not None:
        print(f"Upload interface: /{h.upload_dir} ({h.layout.value}; takes {h.image_format} images)")
    for c in plan.host_checks:
        if c.ok is False or verbose:
            print(f"  {'ok ' if c.ok else 'NO ' if c.ok is False else '?  '} {c.name}: {c.reason}")
    if plan.catalog is not None:
        print(f"Catalog {plan.catalog.path}: {len(plan.catalog.releases)} release(s)")
        for w in plan.catalog.warnings:
            print(f"  drift: {w}")
    print()
    print(f"  {'VERSION':8}  {'VERDICT':10}  REASONS")
    for c in plan.candidates:
        mark = "*" if c.verdict in ("selected", "blocked") else " "
        reasons = [f"{x.name}: {x.reason}" for x in c.failed]
        first = reasons[0] if reasons else ("" if not c.release or not c.release.notes else c.release.notes[0])
        print(f"{mark} {str(c.version) if c.version else '?':8}  {c.verdict:10}  {first}")
        for r in reasons[1:]:
            print(f"  {'':8}  {'':10}  {r}")
        if verbose:
            if c.verified is not None and c.verified.identity is not None:
                print(f"  {'':8}  {'':10}  identity: {c.verified.identity.describe()}")
            for x in c.checks:
                if x.ok is not False:
                    print(f"  {'':8}  {'':10}  {'ok' if x.ok else '? '} {x.name} [{x.rule}]: {x.reason}")
    print()
    print(plan.message[0].upper() + plan.message[1:] + ".")
    sel = plan.selected or (plan.best if plan.outcome == "blocked" else None)
    if sel is not None and sel.verified is not None and sel.verified.sig is not None:
        print(f"  file {sel.file.display}")
        print(f"  MRSEAM after the update: {sel.verified.sig.seamhash.hex()}")
    for n in plan.notes:
        print(f"Note: {n}")
    print(plan.intel_comparison)


def _open_catalog(catalog: str | None, required: bool):
    from tdxseam.tool.catalog import load_catalog

    if catalog is None:
        if required:
            raise exits.CliError("no catalog: pass --catalog DIR or set TDXSEAM_CATALOG", exits.USAGE)
        return None
    return load_catalog(catalog)


def _in_background(fn, *args):  # noqa: ANN001, ANN202
    """Start `fn(*args)` on a second thread; the returned callable waits and gives its result (or
    raises what it raised). `_thread`, not `threading`: the latter costs plan 3 ms of imports."""
    import _thread

    done = _thread.allocate_lock()
    done.acquire()
    out: list = []

    def work() -> None:
        try:
            out.append((True, fn(*args)))
        except BaseException as exc:  # noqa: BLE001 - handed to the caller, raised there
            out.append((False, exc))
        finally:
            done.release()

    _thread.start_new_thread(work, ())

    def result():  # noqa: ANN202
        done.acquire()
        ok, value = out[0]
        if not ok:
            raise value
        return value

    return result


def run_plan(catalog: str | None, sysfs_root: str, trust_key: list[str], allow_debug: bool,
             ignore_strict_compat: bool, verbose: bool, as_json: bool) -> int:
    """`tdxseam plan`: print the plan and return its exit code (0, 10, 11 or 12)."""
    with _tool_errors():
        from tdxseam.tool.hostinfo import read_host
        from tdxseam.tool.plan import PlanOptions, make_plan

        host = _in_background(read_host, sysfs_root)  # FUSE waits overlap the catalog's checks
        cat = _open_catalog(catalog, True)
        opts = PlanOptions(_verify_opts(trust_key, allow_debug, probe_default="off"), ignore_strict_compat)
        p = make_plan(host(), cat, opts=opts)
    if as_json:
        _dump(p.to_json())
    else:
        _print_plan(p, verbose)
    return _OUTCOME_CODE[p.outcome]
