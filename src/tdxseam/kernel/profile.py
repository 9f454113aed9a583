"""Kernel profiles: which posting of the runtime-update series the host kernel behaves as.

Every difference between the postings that the Linux spec records (spec-linux.md §3, §5, §9, §10)
and that the emulated kernel models is one field of `KernelProfile`, and the three postings are
the rows of `PROFILES`. Kernel code asks `k.profile.<switch>` at the one place the behaviour
lives; nothing else tests a profile's name.

| switch | v4 | v10 | merged | where |
|---|---|---|---|---|
| `seamldr_lock_irqsave` | yes | no | no | `seamldr_call` (§3) |
| `td_build_guard` | kernel | module | none | `seamldr_install_module`, `tdx_module_shutdown` (§9) |
| `shutdown_needs_handoff` | no | no | yes | `tdx_module_shutdown` (§5.6 step 1) |
| `precheck_remaining` | yes | no | no | `seamldr_install_module` (v4: -ENOSPC) |
| `refuse_offline_cpus` | yes | no | no | `seamldr_install_module` (v4 refused with a CPU offline) |
| `version_show_locked` | no | no | yes | `version_show` (`seamldr_lock_module_update`) |

Not switches, because every posting agrees (and tdxseam follows them in all profiles): `sc_retry`
retries TDX_RND_NO_ENTROPY on any leaf, P-SEAMLDR leaves included; `tdx_offline_cpu` refuses the
last online CPU of a package while TDX KeyIDs are in use; the image format is the merged 0x200
one (v4's 0x100 blob is not modelled).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class KernelProfile:
    name: str
    description: str
    # seamldr_call: v4 took seamldr_lock with guard(raw_spinlock_irqsave); v5 on, a plain
    # raw spinlock (no interrupt path calls the P-SEAMLDR)
    seamldr_lock_irqsave: bool
    # what stops an update landing in the middle of a TD build:
    #   "kernel" - a kernel gate: builds hold it shared, the update trylocks it (-EBUSY);
    #              the seed design of this project, kept as the v4 profile's behaviour
    #   "module" - v8-v10: TDH.SYS.SHUTDOWN with AVOID_COMPAT_SENSITIVE; the module answers
    #              TDX_UPDATE_COMPAT_SENSITIVE and the kernel returns -EBUSY (device-busy)
    #   "none"   - merged: nothing (userspace must not update during TD builds)
    td_build_guard: str
    # tdx_module_shutdown when the handoff version cannot be read: merged refuses ("Handoff
    # information is required for proper shutdown"), v10 WARNed and shut down with version 0
    shutdown_needs_handoff: bool
    # v4 read num_remaining_updates before the update and refused at zero (-ENOSPC)
    precheck_remaining: bool
    # v4 refused an update while any CPU was offline (dropped in v5)
    refuse_offline_cpus: bool
    # merged only: version_show reads the version with preemption disabled
    # (seamldr_lock_module_update), so stop_machine cannot run in the middle of the read
    version_show_locked: bool


PROFILES: dict[str, KernelProfile] = {
    "merged": KernelProfile(
        "merged", "tip x86/tdx for Linux 7.2: v10 minus the compat-sensitive shutdown, "
                  "version_show locked, shutdown refused without handoff information",
        seamldr_lock_irqsave=False, td_build_guard="none", shutdown_needs_handoff=True,
        precheck_remaining=False, refuse_offline_cpus=False, version_show_locked=True),
    "v10": KernelProfile(
        "v10", "[PATCH v10 00/25] Runtime TDX module update support (2026-05-20)",
        seamldr_lock_irqsave=False, td_build_guard="module", shutdown_needs_handoff=False,
        precheck_remaining=False, refuse_offline_cpus=False, version_show_locked=False),
    "v4": KernelProfile(
        "v4", "the v4 posting (2026-02-12): irqsave seamldr_lock, offline-CPU and "
              "remaining-update pre-checks; with tdxseam's kernel TD-build gate",
        seamldr_lock_irqsave=True, td_build_guard="kernel", shutdown_needs_handoff=False,
        precheck_remaining=True, refuse_offline_cpus=True, version_show_locked=False),
}
DEFAULT_PROFILE = "merged"
PROFILE_NAMES = tuple(PROFILES)


def get_profile(name: str | KernelProfile | None) -> KernelProfile:
    """The profile named `name` (merged, v10 or v4); ValueError for any other name."""
    if isinstance(name, KernelProfile):
        return name
    if name is None:
        return PROFILES[DEFAULT_PROFILE]
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown kernel profile {name!r} (one of {', '.join(PROFILE_NAMES)})") from None
