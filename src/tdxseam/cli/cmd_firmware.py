"""`tdxseam firmware`: Intel's TDX module binaries run on the emulated CPU (the `real` extra).

`probe FILE...` boots each binary (SYS.INIT, LP.INIT on every LP, SYS.RD) and prints what it
reports about itself. Files are v1 blobs, v2 images, or a module ELF with FILE.sigstruct beside it.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from tdxseam.cli import app, exits

firmware_app = typer.Typer(help="Intel's module binaries on the emulated CPU (tdxseam[real]).",
                           no_args_is_help=True, rich_markup_mode=None)
app.add_typer(firmware_app, name="firmware")

MAX_FILE = 4 << 20  # a module image is at most ~2 MiB; a sigstruct 2 KiB


def require_engine() -> None:
    """Exit 2 with one line naming the extra when unicorn/capstone are missing."""
    from tdxseam.seam.real import require
    from tdxseam.seam.real.errors import EngineUnavailable

    try:
        require()
    except EngineUnavailable as e:
        raise exits.CliError(str(e), exits.USAGE) from None


def shown(path: str) -> str:
    """A file name as printable text (names come from the command line, bytes may be anything)."""
    return path.encode("unicode_escape", "backslashreplace").decode("ascii")


def read_regular(path: Path, limit: int = MAX_FILE) -> bytes:
    """A regular file's bytes, at most `limit`, through the one reader (formats.files): never a
    device, FIFO or directory; one line, exit 3, otherwise."""
    from tdxseam.formats.files import FileError, read_file

    try:
        return read_file(path, limit, "a module image")
    except FileError as e:
        raise exits.CliError(shown(str(e)), exits.BAD_INPUT) from None


def module_parts(path: Path) -> tuple[bytes, bytes]:
    """(sigstruct, module) of FILE: an image, or an ELF with FILE.sigstruct (or .sigstruct) beside it."""
    from tdxseam.formats.errors import FormatError
    from tdxseam.formats.image import extract

    data = read_regular(path)
    if data[:4] == b"\x7fELF":
        for sig in (path.with_name(path.name + ".sigstruct"), path.with_suffix(".sigstruct")):
            if sig.exists():
                return read_regular(sig, 4096), data
        raise exits.CliError(f"{shown(str(path))}: a module ELF needs its sigstruct beside it "
                             f"({shown(path.with_suffix('.sigstruct').name)})", exits.BAD_INPUT)
    try:
        parts = extract(data, what=shown(str(path)))
    except FormatError as e:
        raise exits.CliError(str(e), exits.BAD_INPUT) from None
    return parts.sigstruct, parts.module


def _describe(r) -> str:
    if not r.ok:
        return f"error: {r.error}"
    internal = f" (internal {r.internal})" if r.internal else ""
    return (f"TDX module {r.version}{internal} build {r.build_num} ({r.build_date}), "
            f"TDX_FEATURES0 0x{r.tdx_features0:x}, MODULE_HV {r.module_hv}, MIN_UPDATE_HV "
            f"{r.min_update_hv}, NO_DOWNGRADE {r.no_downgrade}, handoff data "
            f"{'?' if r.handoff_size is None else f'{r.handoff_size:,}'} bytes; SYS.INIT, LP.INIT x{r.lps}, RD: "
            f"TDX_SUCCESS; {r.instructions:,} instructions, {r.seconds:.2f} s")


@firmware_app.command()
def probe(
    files: list[Path] = typer.Argument(..., metavar="FILE...", help="Module images (v1 blob, v2 image) or module ELFs."),
    lps: int = typer.Option(4, "--lps", min=1, max=64, metavar="N", help="Logical CPUs of the emulated platform (1-64)."),
    seed: int = typer.Option(0, "--seed", metavar="SEED", help="Seeds RDRAND/RDSEED and the loader's ASLR."),
    as_json: bool = typer.Option(False, "--json", help="Print a JSON list, one object per file."),
) -> int:
    """Boot each binary and print what it reports.

    Runs SYS.INIT, LP.INIT on every LP and SYS.RD on Intel's code under the CPU emulator, then
    boots it on a 2-CPU host and shuts it down to measure the handoff data it writes.

    Exit codes: 0 every file booted; 1 a module failed or stopped; 2 bad arguments, or the `real`
    extra is missing; 3 a file is unreadable or not a module.
    """
    require_engine()
    from tdxseam.seam.real.probe import probe_module

    results, code = [], exits.OK
    for f in files:
        try:
            sig, body = module_parts(f)
        except exits.CliError as e:
            results.append({"file": shown(str(f)), "ok": False, "error": str(e)})
            code = exits.BAD_INPUT
            continue
        r = probe_module(body, sig, lps, seed=seed)
        if r.ok:
            from tdxseam.probe import measure_handoff

            r.handoff_size = measure_handoff(sig, body)
        if not r.ok and code == exits.OK:
            code = exits.FAILED
        results.append({"file": shown(str(f)), **r.to_json(), "_text": _describe(r)})
    if as_json:
        keys = ("file", "ok", "version", "build_num", "build_date", "tdx_features0", "module_hv",
                "min_update_hv", "no_downgrade", "handoff_size", "instructions", "seconds", "error")
        print(json.dumps([{k: r.get(k) for k in keys} for r in results], indent=2))
    else:
        print(f"seed {seed}, {lps} LPs")
        for r in results:
            print(f"{r['file']}: {r.get('_text') or 'error: ' + str(r['error'])}")
    return code


@firmware_app.command()
def compare(
    from_: str = typer.Option(None, "--from", metavar="VERSION", help="Release the host boots with (default 1.5.06)."),
    to: str = typer.Option(None, "--to", metavar="VERSION", help="Release it updates to (default 1.5.13)."),
    cpus: int = typer.Option(4, "--cpus", min=2, max=64, metavar="N", help="Logical CPUs of the emulated host (2-64)."),
    catalog: str = typer.Option(None, "--catalog", metavar="DIR", help="A directory laid out like Intel's binaries repository."),
    seed: int = typer.Option(0, "--seed", metavar="SEED", help="Fixes the interleaving (the same for both runs)."),
    raise_handoff_hv: int = typer.Option(0, "--raise-handoff-hv", min=0, max=0xFFFF, metavar="N",
                                         help="Fault: add N to the handoff header's version before "
                                              "TDH.SYS.UPDATE (after the P-SEAMLDR checked it)."),
    as_json: bool = typer.Option(False, "--json", help="Print one JSON object."),
) -> int:
    """The model against Intel's binaries, SEAMCALL by SEAMCALL.

    Boots and updates twice, on the Python model and on Intel's binaries, and compares every
    TDX-module SEAMCALL's status and outputs, naming each known difference.

    Exit codes: 0 no unexplained difference; 1 an unexplained one; 2 bad arguments, or the `real`
    extra is missing; 3 a release is missing from the catalog or unreadable.
    """
    require_engine()
    from tdxseam.demo import DemoError
    from tdxseam.firmware_compare import compare_firmware
    from tdxseam.formats.errors import FormatError

    from tdxseam.seam.real.errors import RealFirmwareError

    try:
        r = compare_firmware(from_, to, cpus=cpus, seed=seed, catalog=catalog,
                             handoff_hv_raise=raise_handoff_hv)
    except (DemoError, FormatError) as e:
        raise exits.CliError(str(e), exits.BAD_INPUT) from None
    except RealFirmwareError as e:
        raise exits.CliError(f"real firmware: {e}", exits.FAILED) from None
    if as_json:
        print(json.dumps(r.to_json(), sort_keys=True))
    else:
        print(f"{r.from_version} -> {r.to_version} on {r.cpus} CPUs, seed {seed}: "
              f"{r.compared} module SEAMCALLs compared (model {r.calls_model}, binaries {r.calls_real})")
        print(f"model ends: {r.model_end}; binaries end: {r.real_end}")
        for d in r.diffs:
            print("  " + d.line())
        print("result: " + ("same, apart from the known differences (docs/real-firmware.md)" if r.ok else
                            f"{len(r.unexplained)} unexplained difference(s)"))
    return exits.OK if r.ok else exits.FAILED
