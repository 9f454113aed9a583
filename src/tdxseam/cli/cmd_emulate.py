"""`tdxseam emulate --mount DIR`: an emulated TDX host's kernel files, mounted for real programs.

The emulated host boots, then its / is served at DIR through FUSE: DIR/sys/devices/faux/tdx_host,
DIR/sys/class/firmware/tdx_module, DIR/sys/devices/system/cpu, DIR/proc/cpuinfo, and the kernel's
log in dmesg form at DIR/var/log/dmesg (what `tdxseam doctor` and `explain` read). Any program (a
shell, Intel's reference script, distro tooling) updates the module through them as it would on a
TDX host. SIGINT or SIGTERM unmounts; an update in flight first runs to its end.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import sys
from pathlib import Path

import typer

from tdxseam.cli import app, exits
from tdxseam.cli.options import check_kernel, kernel_option

DRAIN_STEPS = 20_000_000  # far beyond any update; bounds the wait should the model livelock


def _parse_version(text: str, what: str):
    from tdxseam.formats.errors import FormatError
    from tdxseam.formats.version import ModuleVersion

    try:
        return ModuleVersion.parse(text)
    except (FormatError, ValueError) as e:
        raise exits.CliError(f"{what}: {e}", exits.USAGE) from None


def _boot_module(spec: str, option, mapping, probe):
    """A version (a test-signed synthetic module declaring it) or a file (v1 blob, v2 image, or a
    TDX-SEAM .so with its .sigstruct beside it), identified from its files before anything boots:
    (what the firmware loads, its identity or None for a synthetic one)."""
    from tdxseam.formats.releases import known_version
    from tdxseam.host import DeclaredModule

    from tdxseam.formats.files import FileError, read_file
    from tdxseam.formats.image import MODULE_FILE_MAX_SIZE

    def read(p: Path) -> bytes:
        try:
            return read_file(p, MODULE_FILE_MAX_SIZE, "a TDX module file")
        except FileError as e:
            raise exits.CliError(f"--module {e}", exits.BAD_INPUT) from None

    if not spec.strip():
        raise exits.CliError("--module: empty; give a version or a module file", exits.USAGE)
    path = Path(spec)
    if os.path.lexists(path) or "/" in spec or spec.endswith((".blob", ".bin", ".img", ".so")):
        data = read(path)
        if not data:
            raise exits.CliError(f"--module {spec}: the file is empty", exits.BAD_INPUT)
        sig = path.with_name(path.name + ".sigstruct")
        if not sig.exists() and path.suffix == ".so":
            sig = path.with_suffix(".sigstruct")
        from tdxseam.formats.identity import resolve_identity
        from tdxseam.formats.image import extract
        from tdxseam.formats.sigstruct import Sigstruct

        if data[:4] == b"\x7fELF" and sig.exists():
            boot = (read(sig), data)
            sigstruct, body = boot
        else:
            boot = data
            parts = extract(data, what=f"--module {spec}")
            sigstruct, body = parts.sigstruct, parts.module
        ident = resolve_identity(Sigstruct.from_bytes(sigstruct), body, name=path.name, option=option,
                                 mapping=mapping, probe=probe, what=f"--module {spec}")
        return boot, ident
    if option is not None:
        raise exits.CliError("--module-version goes with a --module FILE (a version already names itself)",
                             exits.USAGE)
    version = _parse_version(spec, "--module")
    rel = known_version(version)  # test data: a synthetic stand-in that looks like the release
    if rel is None:
        return DeclaredModule(version), None
    return DeclaredModule(version, features0=rel.tdx_features0, build_date=rel.date,
                          build_num=rel.build), None


def _identify(module: str, module_version: str | None, catalog: str | None):
    """(what the firmware boots, the identities the platform is told): the --module and every
    module of the catalog (--catalog, else the one the --module file sits in), from their files.
    A contradictory or unknown identity is a one-line error, exit 3."""
    from tdxseam.formats.errors import FormatError
    from tdxseam.probe import ProbeUnavailable, firmware_probe
    from tdxseam.tool.catalog import catalog_identities, catalog_root_of, load_catalog
    from tdxseam.tool.errors import ToolError

    option = _parse_version(module_version, "--module-version") if module_version is not None else None
    try:
        probe = firmware_probe()
    except ProbeUnavailable as e:
        raise exits.CliError(str(e), exits.USAGE) from None
    known, mapping = [], None
    try:
        if catalog is None and Path(module).is_file():
            catalog = catalog_root_of(Path(module))
        if catalog is not None:
            cat = load_catalog(catalog)
            mapping = cat.mapping
            known = catalog_identities(cat, probe)
        boot_module, boot_identity = _boot_module(module, option, mapping, probe)
    except (FormatError, ToolError) as e:
        raise exits.CliError(str(e), exits.BAD_INPUT) from None
    if boot_identity is not None:
        known.insert(0, boot_identity)
    return boot_module, known


@app.command()
def emulate(
    mount: Path = typer.Option(..., "--mount", metavar="DIR",
                               help="Directory to serve the emulated host's / at (FUSE)."),
    cpus: int = typer.Option(8, "--cpus", metavar="N", help="Logical CPUs of the emulated host (1-4096)."),
    module: str = typer.Option("1.5.06", "--module", metavar="VERSION|FILE",
                               help="TDX module the firmware loads at boot: a version (synthetic, "
                                    "test-signed) or a v1 blob / v2 image / .so+.sigstruct file."),
    module_version: str = typer.Option(None, "--module-version", metavar="X.Y.Z",
                                       help="Version of a --module FILE that does not state it (a renamed "
                                            "1.5 file: the binary carries no update number)."),
    catalog: str = typer.Option(None, "--catalog", metavar="DIR",
                                help="Tell the emulated platform what the catalog's modules are (by "
                                     "SEAMHASH), so an update to one of them reports its full version. "
                                     "Default: the catalog the --module FILE sits in, if any."),
    seamldr: str = typer.Option("1.5.00", "--seamldr", metavar="VERSION", help="P-SEAMLDR version."),
    tds: int = typer.Option(0, "--tds", metavar="K", help="TDs to create and run before serving."),
    seed: int = typer.Option(0, "--seed", metavar="SEED", help="Seeds the emulated machine's scheduler and memory."),
    erratum: bool = typer.Option(False, "--erratum",
                                 help="CPUs with the SEAMRET-invalidates-VMCS erratum (the kernel then "
                                      "hides the update interface)."),
    cpuid: str = typer.Option("", "--cpuid", metavar="EAX",
                              help="CPUID.1.EAX of every CPU, e.g. 0x806F8 (Sapphire Rapids)."),
    intel_key_only: bool = typer.Option(False, "--intel-key-only",
                                        help="The P-SEAMLDR trusts Intel's key only (test-signed "
                                             "images are then refused)."),
    step_delay: float = typer.Option(0.0, "--step-delay", metavar="SECONDS",
                                     help="Wall-clock time per scheduler step of background kernel "
                                          "work, so an update takes visible time (0: full speed)."),
    fault: list[str] = typer.Option([], "--fault", metavar="LEAF[@CPU][#N]=STATUS",
                                    help="Make a SEAMCALL fail after boot, e.g. "
                                         "P_SEAMLDR_INSTALL@1=EBADHASH or TDH_SYS_SHUTDOWN=TDX_SYS_BUSY "
                                         "(N: the n-th matching call, * for every one). Repeatable."),
    kernel: str = kernel_option(),
    firmware: str = typer.Option("model", "--firmware",
                                 help="model: the Python TDX module; real: Intel's binary (--module FILE) "
                                      "on the emulated CPU (needs tdxseam[real])."),
    as_json: bool = typer.Option(False, "--json", help="Print the ready and stopped lines as JSON."),
    debug: bool = typer.Option(False, "--fuse-debug", hidden=True),
) -> None:
    """Serve an emulated TDX host's /sys and /proc at DIR (FUSE).

    Start it in the background and use DIR as a TDX host's /: write 1 to
    DIR/sys/class/firmware/tdx_module/loading, the image to .../data, 0 to .../loading, poll
    .../status until "idle", then read .../error (empty: success) and
    DIR/sys/devices/faux/tdx_host/version. Modes, owners and errnos are the kernel's, for every
    user (the mount allows other users when permitted). A line on stdout says when the files are
    ready; the last line gives the final state (module version, last upload, TDs).

    Exit codes: 0 stopped by SIGINT/SIGTERM; 1 cannot mount, the host did not boot, or the model reported errors; 2 bad arguments; 3 a --module file is unreadable.
    """
    check_kernel(kernel)
    exits.check_seconds("--step-delay", step_delay, zero_ok=True, hi=60.0)
    if not 1 <= cpus <= 4096:
        raise exits.CliError(f"--cpus must be between 1 and 4096, not {cpus}", exits.USAGE)
    if not 0 <= tds <= 63:
        raise exits.CliError(f"--tds must be between 0 and 63 (one HKID each), not {tds}", exits.USAGE)
    if firmware not in ("model", "real"):
        raise exits.CliError(f"--firmware is 'model' or 'real', not {firmware!r}", exits.USAGE)
    if firmware == "real":
        from tdxseam.cli.cmd_firmware import require_engine

        require_engine()
        if tds:
            raise exits.CliError("--firmware real runs no TDs yet: use --tds 0", exits.USAGE)
    from tdxseam.seam.faults import FaultPlan, FaultSpecError, parse_fault_spec

    plan = FaultPlan()
    for spec in fault:
        try:
            rule = parse_fault_spec(spec)
        except FaultSpecError as e:
            raise exits.CliError(f"--fault {e}", exits.USAGE) from None
        if rule.cpu is not None and rule.cpu >= cpus:
            raise exits.CliError(f"--fault {spec!r}: there is no cpu{rule.cpu} on a {cpus}-CPU host",
                                 exits.USAGE)
        plan.rules.append(rule)
    sv = _parse_version(seamldr, "--seamldr")
    # the module is identified before anything is mounted or booted
    boot_module, known = _identify(module, module_version, catalog)
    from tdxseam.sysfs.fuse import is_mounted

    if is_mounted(str(mount)):
        raise exits.CliError(f"--mount {mount}: already a mount point (an emulator still running, or "
                             f"one that was killed: fusermount3 -u {mount})", exits.USAGE)
    if not mount.is_dir():
        raise exits.CliError(f"--mount {mount}: not a directory", exits.USAGE)
    cpuid_1_eax = None
    if cpuid:
        try:
            cpuid_1_eax = int(cpuid, 0)
        except ValueError:
            raise exits.CliError(f"--cpuid {cpuid!r} is not a number", exits.USAGE) from None
    from tdxseam.sysfs.fuse import FuseMount, fuse_unavailable_reason, serve_until_signal

    reason = fuse_unavailable_reason()
    if reason:
        raise exits.CliError(f"cannot mount: {reason}")
    from dataclasses import replace

    from tdxseam.host import BootError
    from tdxseam.seam.pseamldr import SeamldrBuild
    from tdxseam.sysfs import Emulation
    from tdxseam.sysfs.tree import CLASS_TDX_MODULE, TDX_HOST

    # the emulated kernel's log (printk) and the emulator's own errors go to stderr, like dmesg
    for name in ("tdxseam.kernel", "tdxseam.sysfs"):
        lg = logging.getLogger(name)
        if not any(isinstance(h, logging.StreamHandler) for h in lg.handlers):
            h = logging.StreamHandler(sys.stderr)
            h.setFormatter(logging.Formatter(
                "kernel: %(message)s" if name.endswith("kernel") else "tdxseam: %(message)s"))
            lg.addHandler(h)
            lg.setLevel(logging.WARNING)
            lg.propagate = False

    build = replace(SeamldrBuild(), major=sv.major, minor=sv.minor, update=sv.update)
    if cpus > build.max_lps:
        build = replace(build, max_lps=cpus)
    host_kw = dict(module=boot_module, seamldr=build, erratum=erratum,
                   trust_test_key=not intel_key_only, known_modules=known, kernel=kernel,
                   firmware=firmware)
    if firmware == "real":
        from tdxseam.formats.errors import FormatError
        from tdxseam.formats.image import extract
        from tdxseam.formats.sigstruct import Sigstruct

        if not isinstance(boot_module, (bytes, tuple)):
            raise exits.CliError("--firmware real needs --module FILE (an Intel release image)", exits.USAGE)
        try:
            sig_bytes = boot_module[0] if isinstance(boot_module, tuple) else \
                extract(boot_module, what=f"--module {module}").sigstruct
        except FormatError as e:
            raise exits.CliError(str(e), exits.BAD_INPUT) from None
        listed = Sigstruct.from_bytes(sig_bytes).cpuids
        if cpuid_1_eax is None and listed:
            cpuid_1_eax = listed[0]  # a CPU the binary supports
    if cpuid_1_eax is not None:
        host_kw["cpuid_1_eax"] = cpuid_1_eax

    def setup(host) -> None:  # noqa: ANN001 - on the machine thread, before the files exist
        """What QEMU/KVM would have done by now: build `tds` TDs and run each vCPU once; then
        arm the fault plan, so it hits what comes after boot (the update)."""
        from tdxseam.kernel.kvm_tdx import tdx_td_create, tdx_vcpu_run
        from tdxseam.seam.faults import install_fault_plan

        k = host.kernel
        if not tds:
            if plan.rules:
                install_fault_plan(host.fw, plan)
            return

        def build_td(i: int) -> int:
            ret, td = tdx_td_create(k, nr_vcpus=1, nr_pages=2, seed=seed * 1000 + i)
            return ret or tdx_vcpu_run(k, td)

        tasks = [host.sched.spawn(host.machine.cpus[i % cpus], build_td, i, name=f"qemu-td{i}")
                 for i in range(tds)]
        host.run()
        bad = [t.result for t in tasks if t.result]
        if bad:
            raise BootError(f"building a TD failed: errno {bad[0]}")
        if plan.rules:
            install_fault_plan(host.fw, plan)

    try:
        emu = Emulation(cpus, seed=seed, threaded=True, setup=setup if tds or plan.rules else None,
                        step_delay=step_delay, **host_kw)
    except BootError as e:
        hint = (" (--intel-key-only needs an Intel-signed --module FILE)"
                if intel_key_only and "not trusted" in str(e) else "")
        raise exits.CliError(f"the emulated host did not boot: {e}{hint}") from None
    except ValueError as e:
        raise exits.CliError(f"the emulated host did not boot: {e}", exits.BAD_INPUT) from None
    from tdxseam.seam.td import compare_tds, td_snapshot

    tree = emu.tree
    mountpoint = str(mount.resolve())
    tds_at_boot = emu.on_machine(lambda: td_snapshot(emu.host.fw))

    def state() -> dict:
        """The host's state, one JSON type per key: a value or null, and `<key>_error` beside it
        (null when the read worked)."""
        out: dict = {"mount": mountpoint, "cpus": cpus}

        def read(key: str, path: str, conv=str) -> None:  # noqa: ANN001
            try:
                text = tree.read_text(path).strip()
                out[key], out[f"{key}_error"] = conv(text), None
            except OSError as e:
                name = errno.errorcode.get(e.errno or 0, "EIO")
                out[key], out[f"{key}_error"] = None, f"{name}: {os.strerror(e.errno or errno.EIO)}"
            except ValueError:
                out[key], out[f"{key}_error"] = None, f"not a number: {text!r}"

        fw = emu.on_machine(lambda: tree.fw)
        mod = emu.on_machine(lambda: emu.host.fw.module)
        read("module_version", f"{TDX_HOST}/version")
        # what the emulated module knows about itself, and where each fact came from
        out["module_identity"] = mod.build.to_json() if mod is not None and mod.build is not None else None
        out["runtime_update"] = fw is not None
        if fw is not None:
            read("seamldr_version", f"{TDX_HOST}/seamldr_version")
            read("num_remaining_updates", f"{TDX_HOST}/num_remaining_updates", int)
            hist = emu.on_machine(lambda: list(fw.history))
            out["uploads"] = len(hist)
            if hist:
                last = hist[-1]
                from tdxseam.kernel.firmware_upload import fw_upload_error, fw_upload_progress

                out["last_upload"] = "ok" if not last.err_code else (
                    f"{fw_upload_progress(last.err_progress)}:{fw_upload_error(last.err_code)}")
        snap = emu.on_machine(lambda: td_snapshot(emu.host.fw))
        out["tds"] = len(snap)  # TDs the host can run now
        problems = compare_tds(tds_at_boot, snap)
        if problems:
            out["td_problems"] = problems
        if emu.runtime.errors:
            out["model_errors"] = list(emu.runtime.errors)
        return out

    def say(event: str, text: str, extra: dict) -> None:
        if as_json:
            print(json.dumps({"event": event, **extra}, sort_keys=True), flush=True)
        else:
            print(text, flush=True)

    def shown(s: dict, key: str) -> str:
        return str(s[key]) if s[key] is not None else f"unreadable ({s[key + '_error']})"

    def ready() -> None:
        s = state()
        parts = [f"{cpus} CPUs", f"TDX module {shown(s, 'module_version')}", f"{s['tds']} TDs"]
        if s["runtime_update"]:
            parts.append(f"P-SEAMLDR {shown(s, 'seamldr_version')}")
            parts.append(f"{shown(s, 'num_remaining_updates')} updates left")
        else:
            parts.append("no runtime update (interface hidden)")
        if s["module_identity"] and not as_json:  # the JSON line carries it as a field
            print(f"tdxseam: TDX module {s['module_identity']['summary']}", flush=True)
        say("ready", f"tdxseam: emulated TDX host ({', '.join(parts)}) mounted at {mountpoint}; "
                     f"update through {mountpoint}{CLASS_TDX_MODULE}/; SIGINT or SIGTERM unmounts", s)

    fm = FuseMount(tree, mountpoint, debug=debug)
    flight: list[bool] = []  # was an update running when the signal came?
    try:
        signum = serve_until_signal(fm, on_ready=ready, on_stop=lambda: flight.append(
            emu.on_machine(lambda: tree.fw is not None and tree.fw.busy)))
    except (OSError, TimeoutError) as e:
        emu.close(drain=False)
        raise exits.CliError(str(e)) from None
    in_flight = bool(flight and flight[0])
    # an update in flight ends first: never half a lockstep
    settled = emu.settle(max_steps=DRAIN_STEPS)
    s = state()
    if not settled:
        s["kernel_tasks_left"] = emu.on_machine(emu.runtime.describe_waits)
    emu.close(drain=False)
    how = f"after {_signame(signum)}" if signum else "from outside"
    last = f", last upload {s['last_upload']}" if "last_upload" in s else ""
    ran = " (the update in flight ran to its end first)" if in_flight else ""
    lost = f", TD problems: {'; '.join(s['td_problems'])}" if "td_problems" in s else ""
    mi = s.get("module_identity") or {}
    if mi.get("gaps"):  # an update to a binary nobody identified: say what the model lacked
        lost += (f"; the emulated module was not told its {' and '.join(mi['gaps'])}: give "
                 "emulate --catalog DIR holding the release")
    say("stopped", f"tdxseam: unmounted {mountpoint} {how}{ran}; TDX module {shown(s, 'module_version')}"
                   f"{last}; {s['tds']} TDs{lost}",
        {"signal": _signame(signum), "update_in_flight": in_flight, **s})
    if s.get("model_errors"):
        raise typer.Exit(exits.FAILED)


def _signame(signum: int | None) -> str | None:
    if signum is None:
        return None
    import signal

    try:
        return signal.Signals(signum).name
    except ValueError:
        return str(signum)
