#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright (c) tdxseam contributors
# MIT License (see the tdxseam repository's pyproject.toml)

from __future__ import annotations

DOCUMENTATION = r"""
---
module: tdx_facts
short_description: TDX module facts - versions, remaining updates, MRSEAM, the pending update
description:
  - Reads the host's TDX files (as C(tdxseam plan) does) and sets the fact C(tdx) - the running
    module's version, the P-SEAMLDR's version, C(num_remaining_updates), the upload interface, the
    MRSEAM TD quotes carry now and the MRSEAM they will carry after the update the plan would
    install.
  - With O(catalog), plans the update (Intel's rules and tdxseam's stricter ones) and reports its
    outcome and reasons under C(tdx.plan); nothing is written to the host.
  - Never fails because of the host's state (a host that is not a TDX host, a lost module, missing
    root rights are reported in C(tdx.error)); fails on an unusable catalog or trust key.
version_added: "0.1.0"
author:
  - tdxseam contributors
requirements:
  - tdxseam installed for the Python that runs the module (set C(ansible_python_interpreter)).
options:
  catalog:
    description:
      - Directory laid out like Intel's binaries repository. Without it C(tdx.plan) is
        C(null), and the running module's MRSEAM comes from Intel's release data only.
      - Defaults to C($TDXSEAM_CATALOG) in the module's environment, if set.
    type: path
  version:
    description: The release to plan for (C(x.y.zz) in the catalog), or C(latest).
    type: str
    default: latest
  sysfs_root:
    description: Where the host's C(/sys) and C(/proc) are (C(/), or an emulated host's mount point).
    type: path
    default: /
  allow_debug:
    description: Accept debug-signed modules when planning.
    type: bool
    default: false
  ignore_strict_compat:
    description: Do not refuse a release for its C(strict_compat_versions) when planning.
    type: bool
    default: false
  trust_keys:
    description: PEM files of public keys to trust besides Intel's production key (test keys only).
    type: list
    elements: path
    default: []
attributes:
  check_mode:
    support: full
    details: Read-only; runs the same in check mode.
  facts:
    support: full
seealso:
  - module: tdxseam.tdx.tdx_module
"""

EXAMPLES = r"""
- name: Read the TDX facts and the update the catalog offers
  tdxseam.tdx.tdx_facts:
    catalog: /srv/tdx-module-binaries

- name: Refuse hosts that could not take the update
  ansible.builtin.assert:
    that: not ansible_facts.tdx.plan.pending or ansible_facts.tdx.num_remaining_updates > 0
    fail_msg: "{{ inventory_hostname }}: no runtime updates left before a reboot"

- name: Show what TD quotes will carry
  ansible.builtin.debug:
    msg: >-
      {{ ansible_facts.tdx.module_version }} ({{ ansible_facts.tdx.mrseam }}) ->
      {{ ansible_facts.tdx.plan.version }} ({{ ansible_facts.tdx.mrseam_after_update }})
"""

RETURN = r"""
ansible_facts:
  description: Facts set on the host.
  returned: always
  type: complex
  contains:
    tdx:
      description: The host's TDX state.
      returned: always
      type: complex
      contains:
        sysfs_root:
          description: The root read.
          type: str
          returned: always
        tdx_host:
          description: C(/sys/devices/faux/tdx_host) exists (a TDX host whose kernel loaded tdx_host).
          type: bool
          returned: always
        module_version:
          description: The running TDX module's version; C(null) if unreadable (see RV(ansible_facts.tdx.errors)).
          type: str
          returned: always
          sample: 1.5.06
        seamldr_version:
          description: The P-SEAMLDR's version (root only).
          type: str
          returned: always
          sample: 1.5.00
        num_remaining_updates:
          description: Runtime updates the P-SEAMLDR still accepts before a reboot.
          type: int
          returned: always
          sample: 63
        runtime_update:
          description: The kernel offers the update interface (C(tdx_module) or C(seamldr_upload)).
          type: bool
          returned: always
        layout:
          description: C(tdx_module) (merged kernel, takes v2 images) or C(seamldr_upload) (v1), or C(null).
          type: str
          returned: always
        upload_status:
          description: The upload's C(status) (C(idle) when no upload runs).
          type: str
          returned: always
        cpuids:
          description: Every distinct CPUID.1.EAX of the host's CPUs.
          type: list
          elements: str
          returned: always
        all_cpus_online:
          description: Every present CPU is online (the P-SEAMLDR needs them all).
          type: bool
          returned: always
        mrseam:
          description:
            - MRSEAM that TD quotes carry now, inferred from the running version (the catalog's
              file of that version, else Intel's release data); C(null) if unknown.
          type: str
          returned: always
        mrseam_source:
          description: C(catalog), C(intel-release-data) or C(null).
          type: str
          returned: always
        measurement:
          description: MRSEAM, MRSIGNERSEAM, TEE_TCB_SVN and SEAMSVN of the running module (as RV(ansible_facts.tdx.mrseam)).
          type: dict
          returned: always
        mrseam_after_update:
          description:
            - The MRSEAM the host will report once the pending update is installed (the running
              module's MRSEAM when nothing is pending); C(null) without a catalog.
          type: str
          returned: always
        plan:
          description:
            - The plan, with O(catalog); C(null) without. Nothing is written to the host.
            - C(outcome) is C(update), C(up_to_date), C(refused), C(blocked), or C(error) (the host
              cannot be planned for; see RV(ansible_facts.tdx.error)).
            - C(pending) is true when an acceptable release newer than the running one exists (also
              when the host is blocked, e.g. by 0 remaining updates).
            - C(version), C(mrseam), C(tee_tcb_svn) are those of that release (the selected one, or
              the best one when blocked, or the one asked for); C(message) and C(reasons) say why, one line each.
            - C(releases) lists every release's C(verdict) and failed-check C(reasons); C(host_checks)
              every host check; also C(selected), C(best), C(catalog_warnings), C(intel_comparison), C(notes).
          type: dict
          returned: always
          sample:
            outcome: update
            pending: true
            version: 1.5.13
            message: would install 1.5.13 over 1.5.06
            reasons: ["would install 1.5.13 over 1.5.06"]
        error:
          description: The tool's one-line error when the host cannot be read as a TDX host, else C(null).
          type: str
          returned: always
        errors:
          description: Files that could not be read, with the error of each.
          type: dict
          returned: always
"""

import os
import traceback

from ansible.module_utils.basic import AnsibleModule

from ansible_collections.tdxseam.tdx.plugins.module_utils.tdx_common import (
    COMMON_OPTIONS,
    FormatError,
    ToolError,
    error_result,
    load_catalog,
    measurement,
    one_line,
    plan_options,
    plan_reasons,
    plan_summary,
    require_tdxseam,
    running_measurement,
    target_version,
)

ARGUMENT_SPEC = dict(COMMON_OPTIONS)


def _plan_facts(host, catalog, target, popts):
    """The plan as facts (the same plan tdx_module would act on): (facts, measurement after it)."""
    from tdxseam.tool.plan import make_plan

    if target is not None and host.version == target:
        meas, _ = running_measurement(host.version, catalog=catalog)
        line = "%s is already running; nothing to install" % str(target)
        return dict(outcome="up_to_date", pending=False, version=str(target), message=line, reasons=[line],
                    mrseam=meas["mrseam"] if meas else None, tee_tcb_svn=meas["tee_tcb_svn"] if meas else None,
                    releases=[], host_checks=[], notes=[]), meas
    try:
        plan = make_plan(host, catalog, target=str(target) if target is not None else None, opts=popts)
    except ToolError as exc:
        if exc.kind.value != "host":
            raise
        line = error_result(exc)["msg"]
        return dict(outcome="error", pending=False, version=None, message=line, reasons=[line], mrseam=None,
                    tee_tcb_svn=None, releases=[], host_checks=[], notes=[]), None
    cand = plan.selected or plan.best or plan.target
    meas = measurement(cand.verified.sig) if cand and cand.verified else None
    running, _ = running_measurement(host.version, plan=plan)
    pending = plan.outcome in ("update", "blocked")
    out = plan_summary(plan)
    out.update(pending=pending, version=str(cand.version) if cand and cand.version else None,
               message=one_line(plan.message), reasons=plan_reasons(plan),
               mrseam=meas["mrseam"] if meas else None, tee_tcb_svn=meas["tee_tcb_svn"] if meas else None)
    return out, (meas if pending else running)


def main():
    module = AnsibleModule(argument_spec=ARGUMENT_SPEC, supports_check_mode=True)
    require_tdxseam(module)
    p = module.params
    target = target_version(module)
    catalog_path = p["catalog"] or os.environ.get("TDXSEAM_CATALOG")
    try:
        from tdxseam.tool.hostinfo import read_host

        popts = plan_options(p)
        catalog = load_catalog(catalog_path)
        host = read_host(p["sysfs_root"])
        hj = host.to_json()
        meas, source = running_measurement(host.version, catalog=catalog)
        facts = dict(
            sysfs_root=hj["root"], tdx_host=hj["tdx_host"], module_version=hj["module_version"],
            seamldr_version=hj["seamldr_version"], num_remaining_updates=hj["num_remaining_updates"],
            runtime_update=hj["layout"] is not None, layout=hj["layout"], image_format=hj["image_format"],
            upload_status=hj["upload_status"], cpuids=hj["cpuids"], all_cpus_online=hj["all_cpus_online"],
            mrseam=meas["mrseam"] if meas else None, mrseam_source=source, measurement=meas,
            mrseam_after_update=None, plan=None, error=None, errors=hj["errors"],
        )
        if catalog is not None:
            upd, after = _plan_facts(host, catalog, target, popts)
            facts["plan"] = upd
            facts["mrseam_after_update"] = after["mrseam"] if after else None
            if upd["outcome"] == "error":
                facts["error"] = upd["message"]
        else:
            from tdxseam.tool.plan import make_plan

            try:
                make_plan(host, None, opts=popts)  # no releases: only the tool's host checks
            except ToolError as exc:
                if exc.kind.value != "host":
                    raise
                facts["error"] = error_result(exc)["msg"]
    except (ToolError, FormatError) as exc:
        module.fail_json(**error_result(exc))
    except Exception as exc:
        module.fail_json(msg="tdxseam: error: internal error: %s" % one_line(exc), error_kind="internal",
                         exception=traceback.format_exc())
    module.exit_json(changed=False, ansible_facts=dict(tdx=facts))


if __name__ == "__main__":
    main()
