# -*- coding: utf-8 -*-
# Copyright (c) tdxseam contributors
# MIT License (see the tdxseam repository's pyproject.toml)
"""Shared by tdx_module and tdx_facts: the tdxseam import, options, and the reading of a plan.

The modules run the operator tool in-process (tdxseam.tool), so the interpreter Ansible runs them
with (ansible_python_interpreter) must have tdxseam installed. The tool reaches the host only
through files under sysfs_root; it writes nothing unless tdx_module installs an update.
"""

from __future__ import annotations

import traceback

TDXSEAM_IMPORT_ERROR = None
try:
    from tdxseam.formats.errors import FormatError
    from tdxseam.formats.version import ModuleVersion
    from tdxseam.tool.errors import Kind, ToolError
except ImportError:  # pragma: no cover - reported by require_tdxseam()
    TDXSEAM_IMPORT_ERROR = traceback.format_exc()
    FormatError = ToolError = Exception  # keep the names defined for `except` clauses
    Kind = ModuleVersion = None

# The operator tool's exit codes (docs/operator-tool.md §8, tdxseam/cli/exits.py), so a playbook
# can branch on the same numbers as a shell script. Mirrored here rather than imported: importing
# tdxseam.cli loads the whole command line (typer); a test checks the two agree.
EXIT_CODES = {
    "updated": 0, "dry_run": 0, "up_to_date": 10, "refused": 11, "blocked": 12, "declined": 18,
    "upload_failed": 13, "module_lost": 14, "timeout": 15, "version_mismatch": 16,
    "usage": 2, "bad_input": 3, "host": 17, "internal": 70,
}

# What ends a module run with failed=true: every outcome the tool exits non-zero for, except
# up_to_date (nothing to do is success for a desired-state module); tdx_module also lets `refused`
# pass for version=latest (no newer release the host can take: it is on target).
FAILED_OUTCOMES = frozenset(("refused", "blocked", "declined", "upload_failed", "module_lost", "timeout",
                             "version_mismatch"))

COMMON_OPTIONS = dict(
    catalog=dict(type="path"),
    sysfs_root=dict(type="path", default="/"),
    version=dict(type="str", default="latest"),
    allow_debug=dict(type="bool", default=False),
    ignore_strict_compat=dict(type="bool", default=False),
    trust_keys=dict(type="list", elements="path", default=[], no_log=False),
)


def require_tdxseam(module):
    if TDXSEAM_IMPORT_ERROR is not None:
        from ansible.module_utils.basic import missing_required_lib

        module.fail_json(msg=missing_required_lib("tdxseam", reason="the tdxseam.tdx modules run the operator "
                                                  "tool in-process; set ansible_python_interpreter to a Python "
                                                  "where tdxseam is installed"),
                         exception=TDXSEAM_IMPORT_ERROR)


def one_line(text):
    return " ".join(str(text).split())


def error_result(exc):
    """A ToolError/FormatError as the tool prints it: one line and its documented exit code."""
    if isinstance(exc, ToolError) and Kind is not None:
        kind = {Kind.BAD_INPUT: "bad_input", Kind.HOST: "host", Kind.USAGE: "usage"}[exc.kind]
    else:
        kind = "bad_input"
    return dict(msg="tdxseam: error: " + one_line(exc), error_kind=kind, exit_code=EXIT_CODES[kind])


def target_version(module):
    """None for 'latest', else the ModuleVersion asked for (fails the module on a malformed one)."""
    v = (module.params.get("version") or "latest").strip()
    if v == "latest":
        return None
    try:
        return ModuleVersion.parse(v)
    except Exception:
        module.fail_json(msg="tdxseam: error: version %r is neither 'latest' nor a version x.y.zz" % v,
                         outcome="error", error_kind="usage", exit_code=EXIT_CODES["usage"], changed=False)


def plan_options(params):
    from tdxseam.tool.plan import PlanOptions
    from tdxseam.tool.verify import TrustedKeys, VerifyOptions

    keys = TrustedKeys.from_pem_files(params.get("trust_keys") or [])
    return PlanOptions(VerifyOptions(tuple(keys.hashes), bool(params.get("allow_debug"))),
                       bool(params.get("ignore_strict_compat")))


def load_catalog(path):
    from tdxseam.tool.catalog import load_catalog as _load

    return _load(path) if path else None


def measurement(sig):
    """{mrseam, mrsignerseam, tee_tcb_svn, seamsvn} of a sigstruct (what a TD quote carries)."""
    if sig is None:
        return None
    from tdxseam.formats.measure import expected_measurement

    m = expected_measurement(sig)
    return dict(mrseam=m.mrseam.hex(), mrsignerseam=m.mrsignerseam.hex(), tee_tcb_svn=m.tee_tcb_svn.hex(),
                seamsvn="%d.%d" % (sig.major_svn, sig.minor_svn))


def running_measurement(version, plan=None, catalog=None):
    """The MRSEAM a host running `version` reports, inferred from the version: the catalog's file
    of that version first, else Intel's release data. Returns (measurement dict or None, source)."""
    if version is None:
        return None, None
    if plan is not None:
        for c in plan.candidates:
            if c.version == version and c.release is not None and c.verified is not None and c.verified.sig:
                return measurement(c.verified.sig), "catalog"
    elif catalog is not None:
        rel = catalog.get(version)
        if rel is not None and rel.file is not None and rel.file.sigstruct is not None:
            from tdxseam.formats.sigstruct import Sigstruct

            try:
                return measurement(Sigstruct.from_bytes(rel.file.sigstruct)), "catalog"
            except FormatError:
                pass
    from tdxseam.formats.releases import RELEASES_BY_VERSION

    known = RELEASES_BY_VERSION.get(version)
    if known is not None:
        from tdxseam.formats.measure import MRSIGNERSEAM_INTEL, tee_tcb_svn

        return dict(mrseam=known.mrseam.hex(), mrsignerseam=MRSIGNERSEAM_INTEL.hex(),
                    tee_tcb_svn=tee_tcb_svn(known.seamsvn).hex(),
                    seamsvn="%d.%d" % (known.seamsvn >> 8, known.seamsvn & 0xFF)), "intel-release-data"
    return None, None


def plan_reasons(plan):
    """Why the plan decided what it did, one line each: its message, then the failed host checks
    (blocked), the failed checks of the release asked for or of every newer one (refused), notes."""
    out = [plan.message]
    out += ["%s: %s" % (c.name, c.reason) for c in plan.blockers]
    if plan.outcome == "refused":
        cur = plan.host.version
        if plan.target is not None:
            cands = [plan.target]
        else:
            cands = [c for c in plan.candidates if c.version and cur and c.version > cur
                     and c.version.major_minor == cur.major_minor]
        for c in cands:
            out += ["%s %s: %s" % (c.version, x.name, x.reason) for x in c.failed]
    out += list(plan.notes)
    return [one_line(r) for r in out]


def plan_summary(plan):
    """The plan, compact: outcome, message, selected, every release's verdict and failed checks."""
    sel = plan.selected or plan.best
    return dict(
        outcome=plan.outcome,
        message=plan.message,
        selected=str(plan.selected.version) if plan.selected and plan.selected.version else None,
        best=str(sel.version) if sel and sel.version else None,
        host_checks=[c.to_json() for c in plan.host_checks],
        releases=[dict(version=str(c.version) if c.version else None, verdict=c.verdict,
                       reasons=[one_line(x.reason) for x in c.failed]) for c in plan.candidates],
        catalog_warnings=list(plan.catalog.warnings) if plan.catalog else [],
        intel_comparison=plan.intel_comparison,
        notes=list(plan.notes),
    )
