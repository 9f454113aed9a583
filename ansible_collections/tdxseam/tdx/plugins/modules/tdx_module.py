#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) tdxseam contributors
# MIT License (see the tdxseam repository's pyproject.toml)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: tdx_module
short_description: Install a TDX module runtime update with the tdxseam operator tool
description:
  - Plans and installs a TDX module runtime update through the kernel's firmware-upload files
    (Linux 7.2+ C(/sys/class/firmware/tdx_module), or the older C(seamldr_upload) interface), exactly
    as C(tdxseam update --yes) does, in-process.
  - The release is chosen by the tool's plan (Intel's selection rules plus tdxseam's stricter
    ones - signature, SEAMHASH, SVN, strict_compat_versions, image format, upload interface ready).
    Nothing is written unless the plan selects a release.
  - Idempotent. C(changed) is true only when the running module's version changes (or, in check
    mode, would change). A host already running the release asked for (or the newest acceptable one
    for O(version=latest)) reports C(changed=false).
  - Every outcome the tool exits non-zero for fails the task, with the tool's one-line error in
    C(msg) and its exit code in RV(exit_code); except C(up_to_date), and C(refused) with
    O(version=latest) - every release newer than the running one fails a check, so the host runs
    the newest release it can take (ok, not changed, a warning with the reasons).
  - The host is reached only through files under O(sysfs_root); run as root on a TDX host (the
    P-SEAMLDR attributes are root-only).
version_added: "0.1.0"
author:
  - tdxseam contributors
requirements:
  - tdxseam installed for the Python that runs the module (set C(ansible_python_interpreter)).
options:
  version:
    description:
      - The release to install, C(x.y.zz), which must be in the catalog; or C(latest) for what the
        plan selects (the newest release of the running line that passes every check).
    type: str
    default: latest
  catalog:
    description:
      - Directory laid out like Intel's binaries repository (C(mapping_file.json),
        C(joined_files/), C(separate_files/)).
      - Defaults to C($TDXSEAM_CATALOG) in the module's environment.
    type: path
  sysfs_root:
    description:
      - Where the host's C(/sys) and C(/proc) are. C(/) on a TDX host; the mount point of
        C(tdxseam emulate --mount DIR) for an emulated host.
    type: path
    default: /
  allow_debug:
    description: Accept debug-signed modules.
    type: bool
    default: false
  ignore_strict_compat:
    description: Do not refuse a release for its C(strict_compat_versions).
    type: bool
    default: false
  trust_keys:
    description:
      - PEM files of RSA-3072 public keys to trust besides Intel's production key (test keys only).
    type: list
    elements: path
    default: []
  timeout:
    description: Seconds to wait for the upload's C(status) to return to C(idle).
    type: float
    default: 30
  history:
    description:
      - History log (JSON lines) to append to after every attempt that wrote to the host.
      - Default C($TDXSEAM_HISTORY), else C(/var/lib/tdxseam/history.jsonl).
    type: path
attributes:
  check_mode:
    support: full
    details: Plans and builds the image the kernel takes, writes nothing, and reports what would change.
  diff_mode:
    support: full
    details: The running version before and after.
notes:
  - Schedule updates when no TD is being built (an update racing a TD build can corrupt that TD's
    measurement on modules before 1.5.24/2.0.14); the tool cannot see TD builds through sysfs.
  - A failed update after the old module was shut down (RV(outcome=module_lost)) loses every TD on
    the host; the host needs a reboot. Use C(serial) and C(max_fail_percentage) to stop a rollout.
seealso:
  - module: tdxseam.tdx.tdx_facts
"""

EXAMPLES = r"""
- name: Install the newest acceptable TDX module release
  tdxseam.tdx.tdx_module:
    catalog: /srv/tdx-module-binaries
  register: tdx_update

- name: Install one release, or report what would happen (run with --check)
  tdxseam.tdx.tdx_module:
    catalog: /srv/tdx-module-binaries
    version: 1.5.13
    history: /var/log/tdxseam/history.jsonl

- name: Against an emulated host (tdxseam emulate --mount /tmp/tdx), trusting the test key
  tdxseam.tdx.tdx_module:
    catalog: /tmp/catalog
    sysfs_root: /tmp/tdx
    trust_keys: [/tmp/tdxseam-test-key.pem]
"""

RETURN = r"""
outcome:
  description:
    - The tool's outcome (docs/operator-tool.md section 5) - C(updated), C(dry_run) (check mode),
      C(up_to_date), C(refused), C(blocked), C(upload_failed), C(module_lost), C(timeout),
      C(version_mismatch); or C(error) when the tool stopped with an error line.
    - C(refused) with O(version=latest) does not fail the task (see the description).
  returned: always
  type: str
  sample: updated
exit_code:
  description: The exit code C(tdxseam update) gives for this outcome.
  returned: always
  type: int
  sample: 0
msg:
  description: One line. On failure, the line the tool prints (it starts with C(tdxseam:)).
  returned: always
  type: str
  sample: updated the TDX module from 1.5.06 to 1.5.13
version_before:
  description: The running module's version before the task.
  returned: when the host was readable
  type: str
  sample: 1.5.06
version_after:
  description:
    - The running module's version after the task (in check mode, the version it would run).
    - C(null) when C(version) reads an error afterwards (RV(version_after_error)).
  returned: when the host was readable
  type: str
  sample: 1.5.13
version_after_error:
  description: Why C(version) could not be read after the update (ENXIO - the module is gone).
  returned: when the host was readable
  type: str
target_version:
  description: The release the plan selected (or was asked for), installed or not.
  returned: when the host was readable
  type: str
  sample: 1.5.13
mrseam:
  description:
    - MRSEAM (SHA-384 of the module, 96 hex digits) that TD quotes on this host carry after the
      task, for the module that runs then (in check mode, the one that would run).
    - For a module the task did not install it is inferred from the running version (the
      catalog's file of that version, else Intel's release data); C(null) if unknown or lost.
  returned: when the host was readable
  type: str
target_mrseam:
  description: MRSEAM of RV(target_version)'s file.
  returned: when the host was readable
  type: str
remaining_updates:
  description: C(num_remaining_updates) after the task (before it, if nothing was written).
  returned: when the host was readable
  type: int
  sample: 62
reasons:
  description:
    - Why the plan decided what it did, one line each - its message, failed host checks,
      the failed checks of the release asked for (or of every newer release), notes.
  returned: when the host was readable
  type: list
  elements: str
plan:
  description:
    - The plan, compact - outcome, message, selected, best, host_checks, every release's verdict and
      reasons, catalog warnings, how Intel's script would choose.
  returned: on success, when a plan was made (on failure RV(msg) and RV(reasons) say why)
  type: dict
upload:
  description: The upload's result (outcome, error, bytes written, duration, statuses seen).
  returned: when something was written to the host
  type: dict
image:
  description: The image built for the kernel (format, size, sha384).
  returned: when a release was selected
  type: dict
history:
  description: The history log appended to, and the error if that failed (the outcome stands).
  returned: when something was written to the host
  type: dict
error_kind:
  description: For an error line - C(host) (not a TDX host, module lost, not root), C(bad_input), C(usage).
  returned: on error
  type: str
"""

import os
import traceback

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.tdxseam.tdx.plugins.module_utils.tdx_common import (
    COMMON_OPTIONS,
    EXIT_CODES,
    FAILED_OUTCOMES,
    FormatError,
    ToolError,
    error_result,
    load_catalog,
    one_line,
    plan_options,
    plan_reasons,
    plan_summary,
    require_tdxseam,
    running_measurement,
    target_version,
)

ARGUMENT_SPEC = dict(
    COMMON_OPTIONS,
    timeout=dict(type="float", default=30.0),
    history=dict(type="path"),
)


def _already_running(host, target, catalog):
    """version=X on a host running X: nothing to do (the plan would refuse X as `not_running`)."""
    meas, _ = running_measurement(host.version, catalog=catalog)
    v = str(host.version)
    return dict(changed=False, outcome="up_to_date", exit_code=EXIT_CODES["up_to_date"],
                msg="%s is already running; nothing to install" % v, version_before=v, version_after=v,
                version_after_error=None, target_version=str(target), mrseam=meas["mrseam"] if meas else None,
                target_mrseam=meas["mrseam"] if meas else None, remaining_updates=host.remaining_updates,
                reasons=["%s is already running; nothing to install" % v])


def _result(res, latest):
    """Map the tool's UpdateResult onto changed/failed and the documented return values."""
    outcome = res.outcome.value
    plan = res.plan
    before = res.from_version
    wrote = res.outcome.wrote
    if outcome == "dry_run":
        after, after_err = res.to_version, None
    elif wrote:
        after, after_err = res.version_after, res.version_after_error
    else:
        after, after_err = before, None
    changed = (after != before) if (wrote or outcome == "dry_run") else False

    if outcome in ("updated", "dry_run"):
        mrseam = res.mrseam
    elif after is not None and plan is not None:
        from tdxseam.formats.version import ModuleVersion

        try:
            meas, _ = running_measurement(ModuleVersion.parse(after), plan=plan)
        except Exception:
            meas = None
        mrseam = meas["mrseam"] if meas else None
    else:
        mrseam = None
    remaining = res.remaining_after if wrote else res.remaining_before

    failed = outcome in FAILED_OUTCOMES
    msg = one_line(res.message)
    if outcome == "refused" and latest:
        # version=latest: every release newer than the running one fails a check, so the host
        # already runs the newest release it can take. Its desired state: ok, with a warning.
        failed = False
        msg = "nothing to install: " + msg
    elif failed:
        msg = "tdxseam: " + msg  # the line `tdxseam update` prints on stderr
    out = dict(changed=changed, outcome=outcome, exit_code=EXIT_CODES[outcome], msg=msg,
               version_before=before, version_after=after, version_after_error=after_err,
               target_version=res.to_version, mrseam=mrseam, target_mrseam=res.mrseam,
               remaining_updates=remaining, reasons=plan_reasons(plan) if plan else [msg])
    if plan is not None and not failed:  # on failure msg and reasons say it; keep the failure line short
        out["plan"] = plan_summary(plan)
    if res.image_format is not None:
        out["image"] = dict(format=res.image_format, size=res.image_size, sha384=res.image_sha384)
    if res.upload is not None:
        out["upload"] = res.upload.to_json()
    if wrote:
        out["history"] = dict(path=res.history_path, error=res.history_error)
    if failed:
        out["failed"] = True
    return out


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    require_tdxseam(module)
    p = module.params
    target = target_version(module)
    catalog_path = p["catalog"] or os.environ.get("TDXSEAM_CATALOG")
    if not catalog_path:
        module.fail_json(msg="tdxseam: error: no catalog: set catalog (or TDXSEAM_CATALOG)", outcome="error",
                         error_kind="usage", exit_code=EXIT_CODES["usage"], changed=False)
    if p["timeout"] <= 0:
        module.fail_json(msg="tdxseam: error: timeout must be positive, not %g" % p["timeout"], outcome="error",
                         error_kind="usage", exit_code=EXIT_CODES["usage"], changed=False)
    try:
        from tdxseam.tool.history import history_path
        from tdxseam.tool.hostinfo import SysfsRoot, read_host
        from tdxseam.tool.update import UpdateOptions, run_update

        popts = plan_options(p)
        catalog = load_catalog(catalog_path)
        fs = SysfsRoot(p["sysfs_root"])
        host = read_host(fs)
        if target is not None and host.version == target:
            out = _already_running(host, target, catalog)
        else:
            uopts = UpdateOptions(dry_run=module.check_mode, timeout=p["timeout"],
                                  history=history_path(p["history"]))
            res = run_update(fs, catalog, str(target) if target is not None else None, popts, uopts)
            out = _result(res, target is None)
    except (ToolError, FormatError) as exc:
        module.fail_json(changed=False, outcome="error", **error_result(exc))
    except Exception as exc:  # a bug in tdxseam: one line, the traceback beside it
        module.fail_json(changed=False, outcome="error", msg="tdxseam: error: internal error: %s" % one_line(exc),
                         error_kind="internal", exit_code=EXIT_CODES["internal"], exception=traceback.format_exc())
    if out["outcome"] == "refused" and not out.get("failed"):
        module.warn("tdxseam: " + out["msg"])
    if (out.get("history") or {}).get("error"):
        module.warn("tdxseam: warning: " + out["history"]["error"])
    if module._diff:
        out["diff"] = dict(before="version: %s\n" % out["version_before"],
                           after="version: %s\n" % (out["version_after"] or out["version_after_error"]))
    if out.pop("failed", False):
        module.fail_json(**out)
    module.exit_json(**out)


if __name__ == "__main__":
    main()
