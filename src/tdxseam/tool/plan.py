"""Which release to install, and why every other one is not (spec-formats §10.2 and stricter).

Every rule is a separate named check giving pass/fail and one sentence. `rule` says whose rule
it is: "intel" for the rules of Intel's `version_select_and_load.py` (spec-formats §10.2), "strict"
for what tdxseam adds (signature and SEAMHASH, SVN, strict_compat_versions, image format, not
reinstalling the running module, upload interface ready).

Selection differs from Intel's tool on purpose: Intel takes the newest TD-preserving-capable
release and only then checks CPU and P-SEAMLDR, stopping with "incompatible module" if it fails;
tdxseam takes the newest release that passes *every* check. `intel_view` reproduces Intel's
choice so the plan can say where and why the two differ.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from tdxseam.formats.record import field, record, replace
from tdxseam.formats.releases import RELEASES_BY_VERSION
from tdxseam.formats.sigstruct import CPUID_STEPPING_MASK
from tdxseam.formats.version import ModuleVersion
from tdxseam.tool.catalog import Catalog, CatalogRelease, ModuleFile
from tdxseam.tool.errors import Kind, ToolError
from tdxseam.tool.hostinfo import HostInfo
from tdxseam.tool.verify import VerifyOptions, VerifyResult, verify_module

TYPE_CHECKING = False  # typing costs start-up; annotations are strings (PEP 563)
if TYPE_CHECKING:
    from typing import Any

INTEL = "intel"
STRICT = "strict"


@record(frozen=True)
class Check:
    """One rule applied to one release (or to the host): ok is True, False, or None (not
    applicable / cannot tell; does not refuse)."""

    name: str
    ok: bool | None
    reason: str
    rule: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "ok": self.ok, "rule": self.rule, "reason": self.reason}


@record(frozen=True)
class PlanOptions:
    verify: VerifyOptions = VerifyOptions()
    ignore_strict_compat: bool = False
    module_version: ModuleVersion | None = None  # --module-version of a FILE target

    @property
    def allow_debug(self) -> bool:
        return self.verify.allow_debug


@record
class Candidate:
    version: ModuleVersion | None
    release: CatalogRelease | None  # None for a FILE given outside the catalog
    file: ModuleFile | None
    verified: VerifyResult | None
    checks: list[Check]
    verdict: str = "refused"  # selected | blocked | acceptable | refused

    @property
    def failed(self) -> list[Check]:
        return [c for c in self.checks if c.ok is False]

    @property
    def acceptable(self) -> bool:
        return not self.failed

    @property
    def mapping(self):
        return self.release.mapping if self.release else None

    def to_json(self) -> dict[str, Any]:
        sig = self.verified.sig if self.verified else None
        return {
            "version": str(self.version) if self.version else None,
            "file": self.file.display if self.file else None,
            "format": self.file.format if self.file else None,
            "verdict": self.verdict,
            "reasons": [c.reason for c in self.failed],
            "checks": [c.to_json() for c in self.checks],
            "mrseam": sig.seamhash.hex() if sig else None,
            "seamsvn": f"{sig.major_svn}.{sig.minor_svn}" if sig else None,
            "identity": self.verified.identity.to_json() if self.verified and self.verified.identity else None,
        }


@record
class IntelView:
    """What Intel's version_select_and_load.py would do on this host with this catalog."""

    selected: ModuleVersion | None
    outcome: str  # the script's own message
    skipped: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"selected_version": str(self.selected) if self.selected else None, "outcome": self.outcome,
                "skipped": self.skipped}


@record
class Plan:
    host: HostInfo
    catalog: Catalog | None
    host_checks: list[Check]
    candidates: list[Candidate]  # newest first
    best: Candidate | None  # newest acceptable release (or the requested one if acceptable)
    selected: Candidate | None  # what update would install now (None if refused or blocked)
    target: Candidate | None  # the release asked for, if any
    outcome: str  # "update" | "up_to_date" | "refused" | "blocked"
    message: str
    intel: IntelView
    intel_comparison: str
    notes: list[str] = field(default_factory=list)

    @property
    def blockers(self) -> list[Check]:
        return [c for c in self.host_checks if c.ok is False]

    def to_json(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "message": self.message,
            "selected": _cand_ref(self.selected),
            "best": _cand_ref(self.best),
            "target": _cand_ref(self.target),
            "host": self.host.to_json(),
            "host_checks": [c.to_json() for c in self.host_checks],
            "catalog": self.catalog.to_json() if self.catalog else None,
            "releases": [c.to_json() for c in self.candidates],
            "intel": {**self.intel.to_json(), "comparison": self.intel_comparison},
            "notes": self.notes,
        }


def _cand_ref(c: Candidate | None) -> dict[str, Any] | None:
    if c is None:
        return None
    return {"version": str(c.version) if c.version else None, "file": c.file.display if c.file else None}


# -- host checks ---------------------------------------------------------------------------------------


def host_checks(host: HostInfo) -> list[Check]:
    out = []
    if host.layout is None:
        out.append(Check("runtime_update", False,
                         "no /sys/class/firmware/tdx_module (or seamldr_upload): this kernel offers no runtime "
                         "update (kernel before 7.2, tdx_host not loaded, running module not TD-preserving, "
                         "or a CPU with the SEAMRET erratum)", INTEL))
    else:
        out.append(Check("runtime_update", True,
                         f"/{host.upload_dir} present ({host.layout.value} interface, takes "
                         f"{host.image_format} images)", INTEL))
        missing = [n for n in ("loading", "data", "status", "error") if not host.upload_files.get(n)]
        out.append(Check("upload_files", not missing,
                         f"upload directory lacks {', '.join(missing)}" if missing
                         else "loading, data, status and error present", STRICT))
        st = host.upload_status
        if st is not None and st.ok:
            out.append(Check("upload_idle", st.value == "idle",
                             "no upload in progress" if st.value == "idle"
                             else f"an upload is in progress (status {st.value!r}); wait for it to finish", STRICT))
    n = host.remaining_updates
    if n is None:
        err = host.num_remaining_updates.error or f"unparsable {host.num_remaining_updates.value!r}"
        out.append(Check("remaining_updates", False, f"num_remaining_updates unreadable ({err})", INTEL))
    else:
        out.append(Check("remaining_updates", n > 0,
                         f"{n} update(s) left before a reboot" if n > 0 else
                         "num_remaining_updates is 0: the P-SEAMLDR accepts no more updates until a reboot", INTEL))
    online = host.all_cpus_online
    if online is None:
        out.append(Check("cpus_online", None, "cannot compare /sys/devices/system/cpu/online and present", INTEL))
    else:
        out.append(Check("cpus_online", online,
                         f"all CPUs online ({host.cpus_present.value})" if online else
                         f"CPUs {host.cpus_present.value} present but only {host.cpus_online.value} online: the "
                         "P-SEAMLDR loads only when every CPU takes part; bring them online first", INTEL))
    return out


# -- per-release checks ----------------------------------------------------------------------------------


def _running_svn(host: HostInfo, catalog: Catalog | None) -> tuple[int | None, str]:
    v = host.version
    if v is None:
        return None, ""
    if catalog is not None:
        rel = catalog.get(v)
        if rel is not None and rel.file is not None and rel.file.sigstruct is not None:
            from tdxseam.formats.sigstruct import Sigstruct

            return Sigstruct.from_bytes(rel.file.sigstruct).seamsvn, "its catalog file"
    known = RELEASES_BY_VERSION.get(v)
    if known is not None:
        return known.seamsvn, "Intel's release data"
    return None, ""


def _fmt_list(vs) -> str:
    return ", ".join(str(v) for v in vs) or "none"


def release_checks(version: ModuleVersion | None, file: ModuleFile | None, verified: VerifyResult | None,
                   mapping, host: HostInfo, catalog: Catalog | None, opts: PlanOptions) -> list[Check]:
    cur = host.version
    ldr = host.seamldr
    sig = verified.sig if verified else None
    c: list[Check] = []
    add = c.append

    # file and offline verification (strict)
    if file is None:
        add(Check("file", False, "no module file in the catalog (listed in mapping_file.json only)", STRICT))
    else:
        add(Check("file", True, f"{file.display} ({file.format})", STRICT))
    if verified is not None:
        bad = [p for p in verified.problems if p.code != "debug"]
        if bad:
            add(Check("verify", False, "fails verification: " + "; ".join(str(p) for p in bad), STRICT))
        else:
            who = {"intel": "Intel's production key", "trusted": "a key trusted with --trust-key"}.get(
                verified.signing_key or "", "?")
            add(Check("verify", True, f"structure, signature ({who}) and SEAMHASH verified", STRICT))

    # Intel rule 1: a mapping entry
    if version is None:
        add(Check("mapping", False, "version unknown, so no mapping_file.json entry applies", INTEL))
    elif mapping is None:
        add(Check("mapping", False, f"{version} has no entry in mapping_file.json"
                  + ("" if catalog else " (no --catalog given)"), INTEL))
    else:
        add(Check("mapping", True, f"{version} is in mapping_file.json", INTEL))

    # Intel rule 4: debug
    if sig is not None:
        if sig.is_debug:
            add(Check("debug", opts.allow_debug,
                      "debug-signed; allowed by --allow-debug" if opts.allow_debug else
                      "debug-signed (module_type bit 31); production hosts refuse it (--allow-debug)", INTEL))
        else:
            add(Check("debug", True, "production-signed", INTEL))

    # Intel rule 5: TD-preserving (Z-stream) rules
    if version is not None and cur is not None:
        line = f"{version.major}.{version.minor}"
        cur_line = f"{cur.major}.{cur.minor}"
        same = version.major_minor == cur.major_minor
        add(Check("td_line", same,
                  f"same {line} line as the running {cur}" if same else
                  f"{version} is in the {line} line, the host runs {cur} ({cur_line}); a TD-preserving "
                  "update stays within one major.minor line (Z-stream only)", INTEL))
        if same:
            up = version.update >= cur.update
            add(Check("td_order", up,
                      f"update {version.update:02d} >= running {cur.update:02d}" if up else
                      f"{version} is older than the running {cur} (a downgrade)", INTEL))
        if mapping is not None and same:
            floor = mapping.min_module_version_for_td_preserving
            okf = floor <= cur
            add(Check("td_floor", okf,
                      f"running {cur} >= min_module_version_for_td_preserving {floor}" if okf else
                      f"running {cur} is below {version}'s min_module_version_for_td_preserving {floor}", INTEL))
        if version == cur:
            add(Check("not_running", False, f"{version} is already running; reinstalling it would spend "
                                             "one of the remaining updates for nothing", STRICT))

    # Intel rule 3: P-SEAMLDR floor
    if mapping is not None:
        floors = mapping.min_seamldr_versions
        if ldr is None and host.layout is None and host.seamldr_version.error == "missing":
            add(Check("seamldr", None, "P-SEAMLDR version hidden (the kernel offers no runtime update)", INTEL))
        elif ldr is None:
            err = host.seamldr_version.error or "unparsable"
            add(Check("seamldr", False, f"P-SEAMLDR version unknown ({err})", INTEL))
        else:
            ok = any(f.major_minor == ldr.major_minor and f.update <= ldr.update for f in floors)
            add(Check("seamldr", ok,
                      f"P-SEAMLDR {ldr} satisfies min_seamldr_versions ({_fmt_list(floors)})" if ok else
                      f"needs a P-SEAMLDR of {_fmt_list(floors)} or later in the same line; the host has {ldr}",
                      INTEL))

    # Intel rule 2: CPU (the P-SEAMLDR checks every package; Intel's tool only its own CPU)
    if sig is not None:
        table = {e & ~CPUID_STEPPING_MASK for e in sig.cpuids}
        listed = ", ".join(f"0x{e:x}" for e in sig.cpuids) or "none"
        if not host.cpus:
            add(Check("cpu", False, f"host CPU unknown (/proc/cpuinfo: {host.cpuinfo_error}); the module "
                                    f"supports {listed}", INTEL))
        else:
            missing = [h for h in host.cpus if h.cpuid_1_eax & ~CPUID_STEPPING_MASK not in table]
            add(Check("cpu", not missing,
                      f"CPU {host.cpus[0]} is in the module's CPUID table" if not missing else
                      "CPU " + ", ".join(str(h) for h in missing) + f" not in the module's CPUID table ({listed})",
                      INTEL))

    # strict: SVN rule the P-SEAMLDR applies to an UPDATE (spec-formats §1)
    if sig is not None:
        run_svn, src = _running_svn(host, catalog)
        if run_svn is None:
            add(Check("svn", None, f"running module's SVN unknown; the P-SEAMLDR requires major SVN "
                                   f"{sig.major_svn} to match and the minor SVN not to decrease", STRICT))
        else:
            rmaj, rmin = run_svn >> 8, run_svn & 0xFF
            ok = sig.major_svn == rmaj and sig.minor_svn >= rmin
            add(Check("svn", ok,
                      f"SVN {sig.major_svn}.{sig.minor_svn} vs running {rmaj}.{rmin} (from {src}): same major, "
                      "minor not lower" if ok else
                      f"SVN {sig.major_svn}.{sig.minor_svn} vs running {rmaj}.{rmin} (from {src}): the P-SEAMLDR "
                      "refuses a different major SVN or a lower minor SVN", STRICT))

    # strict: strict_compat_versions (newer mapping files only)
    if mapping is not None and cur is not None:
        sc = mapping.strict_compat_versions
        if not sc:
            add(Check("strict_compat", True, "no strict_compat_versions for this release", STRICT))
        elif cur in sc:
            add(Check("strict_compat", True, f"running {cur} is in strict_compat_versions ({_fmt_list(sc)})", STRICT))
        elif opts.ignore_strict_compat:
            add(Check("strict_compat", None, f"running {cur} is not in strict_compat_versions ({_fmt_list(sc)}); "
                                             "ignored (--ignore-strict-compat)", STRICT))
        else:
            add(Check("strict_compat", False,
                      f"running {cur} is not in {version}'s strict_compat_versions ({_fmt_list(sc)})", STRICT))

    # strict: image format the kernel accepts
    if file is not None and host.image_format is not None:
        fmt = host.image_format
        from tdxseam.tool.convert import image_for

        try:
            image_for(file, fmt, check_only=True)
            how = "sent as is" if file.format == fmt else f"converted from {file.format} to {fmt}"
            iface = "merged tdx_module interface" if fmt == "v2" else "older seamldr_upload interface"
            add(Check("image_format", True, f"{how} ({fmt} = 0x{'200' if fmt == 'v2' else '100'}, what the "
                                            f"{iface} takes)", STRICT))
        except ToolError as exc:
            add(Check("image_format", False, f"cannot make the {fmt} image this kernel takes: {exc}", STRICT))
    return c


# -- Intel's selection, reproduced ------------------------------------------------------------------------


def intel_view(host: HostInfo, catalog: Catalog | None, candidates: list[Candidate],
               allow_debug: bool) -> IntelView:
    """version_select_and_load.py's choice (spec-formats §10.2, rules 1-6) on this host."""
    if catalog is None:
        return IntelView(None, "needs a copy of its repository (no --catalog)")
    cur, ldr = host.version, host.seamldr
    skipped: list[str] = []
    pool: list[Candidate] = []
    for cand in candidates:
        rel = cand.release
        if rel is None or rel.file is None or not rel.in_joined_files:
            continue
        if rel.mapping is None:
            skipped.append(f"{rel.version}: Missing release information in JSON")
            continue
        if rel.mapping.tdx_feature0 is None:
            skipped.append(f"{rel.version}: Missing required information (tdx_feature0)")
            continue
        if cand.verified is None or cand.verified.sig is None:
            skipped.append(f"{rel.version}: unreadable blob")
            continue
        pool.append(cand)
    if cur is None:
        return IntelView(None, "Error reading current module version", skipped)

    def capable(cand: Candidate) -> bool:
        sig = cand.verified.sig
        if sig.is_debug and not allow_debug:
            return False
        v = cand.version
        floor = cand.release.mapping.min_module_version_for_td_preserving
        return v.major_minor == cur.major_minor and v.update >= cur.update and floor.update <= cur.update

    capable_list = [c for c in pool if capable(c)]
    if not capable_list:
        return IntelView(None, "No newer Intel TDX module found for update.", skipped)
    newest = max(capable_list, key=lambda c: c.version.update)
    sig = newest.verified.sig
    seam_ok = ldr is not None and any(
        f.major_minor == ldr.major_minor and f.update <= ldr.update for f in newest.release.mapping.min_seamldr_versions)
    cpu_ok = bool(host.cpus) and (host.cpus[0].cpuid_1_eax & 0xFFFFFFF0) in {e & 0xFFFFFFF0 for e in sig.cpuids}
    if not (seam_ok and cpu_ok):
        why = [w for w, bad in (("P-SEAMLDR", not seam_ok), ("CPU", not cpu_ok)) if bad]
        return IntelView(None, f"incompatible module {newest.version} ({' and '.join(why)})", skipped)
    return IntelView(newest.version, f"Install module {newest.release.file.path}", skipped)


def compare_with_intel(plan: Plan) -> str:
    iv = plan.intel
    ours = plan.selected or plan.best
    mine = ours.version if ours else None
    by_version = {c.version: c for c in plan.candidates}
    upload_caveat = ""
    if iv.selected is not None and plan.host.image_format == "v2":
        upload_caveat = ("; it would also upload Intel's v1 (0x100) blob unchanged, which the merged kernel "
                         "rejects (error: transferring:firmware-invalid)")
    if iv.selected is None and mine is None:
        return f"Intel's version_select_and_load.py would not install anything either: {iv.outcome}"
    if iv.selected == mine:
        return f"Intel's version_select_and_load.py would pick the same release ({mine}){upload_caveat}."
    if iv.selected is None:
        why = iv.outcome
        extra = ""
        if why.startswith("incompatible module"):
            extra = (" (it considers only the newest TD-preserving-capable release and checks CPU and P-SEAMLDR "
                     "afterwards, with no fallback)")
        return f"Intel's version_select_and_load.py would stop with \"{why}\"{extra}; tdxseam picks {mine}."
    theirs = by_version.get(iv.selected)
    reasons = "; ".join(c.reason for c in theirs.failed) if theirs else "not a candidate here"
    if iv.selected == plan.host.version:
        reasons = (f"{iv.selected} is already running; Intel's tool reinstalls it, spending one of the "
                   "remaining updates")
    tail = f" and picks {mine}" if mine else ""
    return f"Intel's version_select_and_load.py would install {iv.selected}; tdxseam refuses it ({reasons}){tail}{upload_caveat}."


# -- the plan ----------------------------------------------------------------------------------------------


def _require_host(host: HostInfo) -> None:
    import errno as _errno

    from tdxseam.formats.sysfs_abi import TDX_HOST as TDX_HOST_PATH

    if host.root_error is not None:
        raise ToolError(f"{host.root}: cannot read /{TDX_HOST_PATH}: {host.root_error}", Kind.HOST)
    if not host.tdx_host:
        raise ToolError(f"{host.root}: no /sys/devices/faux/tdx_host: not a TDX host, or the tdx_host driver is "
                        "not loaded (runtime update needs Linux 7.2+)", Kind.HOST)
    mv = host.module_version
    if not mv.ok:
        if mv.errno == _errno.ENXIO:
            raise ToolError("the TDX module is not running (version: ENXIO); a failed update lost it, reboot "
                            "the host", Kind.HOST)
        raise ToolError(f"cannot read /{mv.path}: {mv.error}", Kind.HOST)
    if host.version is None:
        raise ToolError(f"/{mv.path} reads {mv.value!r}, not a version", Kind.HOST)
    for attr in (host.seamldr_version, host.num_remaining_updates):
        if attr.errno in (_errno.EACCES, _errno.EPERM):
            raise ToolError(f"cannot read /{attr.path}: permission denied (root only); run as root", Kind.HOST)


def _verify_opts(opts: PlanOptions, catalog: Catalog | None, *, target: bool = False) -> VerifyOptions:
    """The catalog's mapping file for every release; --module-version for the target file only."""
    v = opts.verify
    if catalog is not None:
        v = replace(v, mapping=catalog.mapping)
    if target and opts.module_version is not None:
        v = replace(v, module_version=opts.module_version)
    return v


def make_candidate(rel: CatalogRelease | None, file: ModuleFile | None, host: HostInfo,
                   catalog: Catalog | None, opts: PlanOptions, mapping=None, *, target: bool = False) -> Candidate:
    verified = verify_module(file, _verify_opts(opts, catalog, target=target)) if file is not None else None
    if rel is not None:
        version = rel.version
        if verified is not None and verified.version is not None and verified.version != version:
            version = verified.version  # the signed/known identity wins over the file name
        mapping = rel.mapping
    else:
        version = verified.version if verified else None
    checks = release_checks(version, file, verified, mapping, host, catalog, opts)
    return Candidate(version, rel, file, verified, checks)


def make_plan(host: HostInfo, catalog: Catalog | None, *, target: str | None = None,
              opts: PlanOptions = PlanOptions(),
              load_file: Callable[[str], ModuleFile] | None = None) -> Plan:
    """Evaluate every release; `target` is a version in the catalog or a module file path."""
    if opts.module_version is not None and (target is None or not os.path.exists(target)):
        raise ToolError("--module-version goes with a module FILE (a catalog release is named by its file)",
                        Kind.USAGE)
    _require_host(host)
    hchecks = host_checks(host)
    cands: list[Candidate] = []
    if catalog is not None:
        cands = [make_candidate(r, r.file, host, catalog, opts) for r in catalog.releases]

    tcand: Candidate | None = None
    if target is not None:
        tcand = _resolve_target(target, cands, host, catalog, opts, load_file)
        if tcand not in cands:
            cands = [c for c in cands if c.version != tcand.version] + [tcand]
    # facts about a module that disagree, or a version nothing states: refused before anything
    for c in cands:
        bad = c.verified.identity_problem if c.verified is not None else None
        if bad is not None:
            raise ToolError(bad.message, Kind.BAD_INPUT)
    cands.sort(key=lambda c: (c.version is not None, c.version or (0, 0, 0)), reverse=True)

    acceptable = [c for c in cands if c.acceptable]
    best = tcand if tcand is not None else (acceptable[0] if acceptable else None)
    blocked = any(c.ok is False for c in hchecks)
    cur = host.version
    notes: list[str] = []

    if tcand is not None:
        if not tcand.acceptable:
            outcome, selected = "refused", None
            msg = f"{tcand.version or tcand.file.display} is refused: " + "; ".join(c.reason for c in tcand.failed)
            best = None
        else:
            outcome, selected = "update", tcand
            msg = f"would install {tcand.version} over {cur}"
            if acceptable and acceptable[0] is not tcand and acceptable[0].version != tcand.version:
                notes.append(f"{tcand.version} is not the newest acceptable release ({acceptable[0].version} is)")
    elif best is None:
        newer = [c for c in cands if c.version and cur and c.version.major_minor == cur.major_minor
                 and c.version > cur and c.file is not None]
        if newer:
            outcome, selected = "refused", None
            msg = (f"newer releases exist for {cur} but every one is refused: "
                   + "; ".join(f"{c.version}: {c.failed[0].reason}" for c in newer))
        else:
            outcome, selected = "up_to_date", None
            msg = f"{cur} is the newest release of its line in the catalog; nothing to install"
    else:
        outcome, selected = "update", best
        msg = f"would install {best.version} over {cur}"

    if outcome == "update" and blocked:
        outcome, selected = "blocked", None
        msg = (f"{best.version} is acceptable but the host cannot take an update now: "
               + "; ".join(c.reason for c in hchecks if c.ok is False))

    for c in cands:
        if c is selected:
            c.verdict = "selected"
        elif c is best and outcome == "blocked":
            c.verdict = "blocked"
        else:
            c.verdict = "acceptable" if c.acceptable else "refused"

    plan = Plan(host, catalog, hchecks, cands, best, selected, tcand, outcome, msg,
                IntelView(None, ""), "", notes)
    plan.intel = intel_view(host, catalog, cands, opts.allow_debug)
    plan.intel_comparison = compare_with_intel(plan)
    return plan


def _resolve_target(target: str, cands: list[Candidate], host: HostInfo, catalog: Catalog | None,
                    opts: PlanOptions, load_file) -> Candidate:
    import os

    from tdxseam.formats.errors import VersionError

    if not os.path.exists(target):
        try:
            v = ModuleVersion.parse(target)
        except VersionError:
            raise ToolError(f"{target}: no such file, and not a version x.y.zz", Kind.BAD_INPUT) from None
        if catalog is None:
            raise ToolError(f"version {v} given but no catalog (use --catalog DIR or TDXSEAM_CATALOG)", Kind.USAGE)
        for c in cands:
            if c.version == v and c.release is not None:
                if c.file is None:
                    raise ToolError(f"release {v} is in mapping_file.json but the catalog has no file for it")
                return c
        raise ToolError(f"release {v} is not in the catalog {catalog.path}")
    if load_file is None:
        from tdxseam.tool.catalog import load_module_file as load_file
    mf = load_file(target)
    verified = verify_module(mf, _verify_opts(opts, catalog, target=True))
    if verified.identity_problem is not None:
        raise ToolError(verified.identity_problem.message, Kind.BAD_INPUT)
    rel = catalog.get(verified.version) if (catalog and verified.version) else None
    if rel is not None:
        # the same release as a catalog entry, but the file the operator named
        rel = CatalogRelease(rel.version, mf, rel.mapping, False, list(rel.notes))
        return make_candidate(rel, mf, host, catalog, opts, target=True)
    return make_candidate(None, mf, host, catalog, opts, target=True)
