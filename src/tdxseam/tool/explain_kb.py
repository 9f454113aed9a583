"""What a SEAMCALL failure means for an operator: per leaf, per status, per kernel message.

Prose written from the specs (each entry names its source); the codes and names themselves live in
`tdxseam.formats`. Sources: spec-linux.md (§2 wrappers, §5.6 update steps, §5.7 outcomes, §7.3 log
lines), spec-firmware.md (§3 P-SEAMLDR statuses, §7 P-SEAMLDR leaves, §10 TDX module leaves), the
TDX module sources (intel/tdx-module, src/vmm_dispatcher/api_calls/tdh_sys_init.c,
tdh_sys_lp_init.c) and upstream tdx.c.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Advice:
    meaning: str
    causes: tuple[str, ...] = ()
    actions: tuple[str, ...] = ()
    source: str = ""


@dataclass(frozen=True)
class LeafContext:
    """What the kernel uses a leaf for, and what its failure leaves behind, at boot and at runtime."""

    role: str
    boot: str = ""
    runtime: str = ""
    source: str = ""
    boot_only: bool = False
    runtime_only: bool = False


_LOST = ("the old module was already shut down, so the host has no working TDX module: TDs are lost "
         "(KVM kills them), `version` reads ENXIO, and only a reboot brings TDX back")

LEAF_CONTEXT: dict[str, LeafContext] = {
    "TDH_SYS_INIT": LeafContext(
        "global initialisation of the TDX module; the kernel's first SEAMCALL to a module, run once",
        boot="TDX is not available this boot: no CPU can be enabled for TDX and the tdx_host device "
             "does not appear",
        runtime="it is the first call to the newly installed module during an update (CPU_INIT): " + _LOST,
        source="spec-linux.md §5.6 (tdx_cpu_enable), §5.7; spec-firmware.md §10.5"),
    "TDH_SYS_LP_INIT": LeafContext(
        "per-CPU initialisation, on every logical CPU after TDH.SYS.INIT",
        boot="this CPU cannot run TDX; the boot-time enabling fails and TDX is not available",
        runtime="a CPU failed to initialise the new module during an update (CPU_INIT): " + _LOST,
        source="spec-linux.md §5.6, §5.7; spec-firmware.md §10.5"),
    "TDH_SYS_CONFIG": LeafContext(
        "hands the module the TDMR list and the global KeyID (boot only)", boot_only=True,
        boot="init_tdx_module fails ('TDX-Module initialization failed'); TDX is not available this boot",
        source="spec-firmware.md §10.2 (normal init path)"),
    "TDH_SYS_KEY_CONFIG": LeafContext(
        "programs the module's global private key on each package (boot only)", boot_only=True,
        boot="init_tdx_module fails; TDX is not available this boot",
        source="spec-firmware.md §10.2"),
    "TDH_SYS_TDMR_INIT": LeafContext(
        "initialises the PAMT of each TDMR (boot only)", boot_only=True,
        boot="init_tdx_module fails; TDX is not available this boot",
        source="spec-firmware.md §10.2"),
    "TDH_SYS_RD": LeafContext(
        "reads one global metadata field (RDX = field id in, R8 = value out); the kernel prints the "
        "output registers for it",
        boot="reading the module's metadata (get_tdx_sys_info) failed, so init_tdx_module fails; TDX "
             "is not available this boot",
        runtime="before TDH.SYS.SHUTDOWN the kernel reads the handoff version (a failure WARNs and the "
                "update goes on with version 0); after TDH.SYS.UPDATE it re-reads the version (a "
                "failure WARNs; the update itself succeeded)",
        source="spec-linux.md §5.6"),
    "TDH_SYS_SHUTDOWN": LeafContext(
        "first step of a runtime update: the running module writes its handoff data and stops",
        runtime_only=True,
        runtime="the update stopped before anything changed: the old module still runs, TDs are "
                "unaffected, and the upload's `error` reads transferring:firmware-invalid; an update "
                "can be tried again",
        source="spec-linux.md §5.6, §5.7; spec-firmware.md §10.4"),
    "TDH_SYS_UPDATE": LeafContext(
        "last step of a runtime update: the new module takes the handoff data (TDs, keys, TDMRs)",
        runtime_only=True,
        runtime="the new module is loaded but did not take over the old one's state: " + _LOST,
        source="spec-linux.md §5.6, §5.7; spec-firmware.md §10.5"),
    "P_SEAMLDR_INFO": LeafContext(
        "SEAMLDR.INFO: the P-SEAMLDR's version and num_remaining_updates (each read of the "
        "tdx_host seamldr_version / num_remaining_updates files)",
        runtime="only that file read failed; the TDX module is not affected",
        source="spec-firmware.md §7.1; spec-linux.md §3"),
    "P_SEAMLDR_INSTALL": LeafContext(
        "SEAMLDR.INSTALL: loads the new module, called on every CPU in turn during an update "
        "(CPU_INSTALL)", runtime_only=True,
        runtime="the install failed after TDH.SYS.SHUTDOWN: " + _LOST,
        source="spec-firmware.md §7.3; spec-linux.md §5.7"),
}

GENERIC_LEAF = LeafContext(
    "a TD-management leaf, used by KVM while it builds and runs TDs",
    boot="", runtime="the failing operation concerns one TD; the module and other TDs keep running",
    source="spec-firmware.md §10.1")


def _a(meaning: str, causes: tuple[str, ...] = (), actions: tuple[str, ...] = (), source: str = "") -> Advice:
    return Advice(meaning, causes, actions, source)


_REBOOT = "reboot the host: the BIOS loads a TDX module again and resets the P-SEAMLDR's update count"
_CATALOG = "choose a release whose mapping_file.json entry allows an update from the running version ('tdxseam plan')"

STATUS_ADVICE: dict[str, Advice] = {
    # kernel software values
    "TDX_SEAMCALL_VMFAILINVALID": _a(
        "the SEAMCALL did not reach any SEAM software: none is loaded or ready there",
        ("the BIOS did not load a TDX module (TDX disabled, or no module on the BIOS image)",
         "a failed runtime update left no module loaded (SEAM_READY is 0)",
         "a CPU was offline during SEAMLDR.INSTALL, so the P-SEAMLDR never completed the load",
         "(P-SEAMLDR) another CPU was inside the P-SEAMLDR: the kernel's seamldr_lock should prevent it"),
        ("enable TDX in the BIOS (and its prerequisites: TME-MT, SEAM loader) and update the BIOS",
         "after a failed update: " + _REBOOT, "keep every CPU online during an update"),
        "spec-firmware.md §4; spec-linux.md §2, §5.7"),
    "TDX_SEAMCALL_GP": _a(
        "SEAMCALL raised #GP: the CPU does not allow SEAM calls",
        ("SEAMRR is not enabled or not locked by the BIOS (IA32_SEAMRR_PHYS_MASK)",),
        ("enable TDX in the BIOS; check 'tdxseam doctor' for SEAMRR",), "spec-linux.md §2"),
    "TDX_SEAMCALL_UD": _a(
        "SEAMCALL raised #UD: the CPU is not in VMX operation or does not know the instruction",
        ("VMX is off on this CPU (KVM not loaded, or VMXOFF), or the CPU has no TDX",),
        ("load kvm_intel with TDX enabled (kvm_intel.tdx=1)",), "spec-linux.md §2"),
    # TDX module statuses
    "TDX_OPERAND_INVALID": _a(
        "an input register or structure failed the module's checks; the low bits name the operand",
        ("TDH.SYS.SHUTDOWN with RCX outside [min_update_hv, module_hv] of the running module",
         "reserved bits set in a leaf's input (RAX bits 63:24, RCX of TDH.SYS.INIT)"),
        ("for a shutdown: the running module cannot hand off at that version; " + _CATALOG,),
        "spec-firmware.md §10.1, §10.4"),
    "TDX_SYS_BUSY": _a(
        "another CPU holds the module's global lock, or other CPUs were inside the module at shutdown",
        ("a concurrent TDX call during TDH.SYS.SHUTDOWN (the kernel runs it under stop_machine)",),
        ("retry the update",), "spec-firmware.md §10.4, §10.5"),
    "TDX_RND_NO_ENTROPY": _a(
        "RDRAND/RDSEED had no entropy; the kernel already retried 10 times",
        ("heavy RDRAND use on the platform",), ("retry; if it persists, check the platform's DRNG",),
        "spec-linux.md §2"),
    "TDX_SYS_INIT_NOT_PENDING": _a("TDH.SYS.INIT ran twice on the same module",
                                   ("a kernel bug (TDH.SYS.INIT is cached to run once)",), (), "spec-firmware.md §10.5"),
    "TDX_SYS_LP_INIT_NOT_DONE": _a("a metadata read on a CPU that has not run TDH.SYS.LP.INIT",
                                   ("the CPU came online without TDX initialisation",), (), "spec-firmware.md §10.3"),
    "TDX_SYS_LP_INIT_DONE": _a("TDH.SYS.LP.INIT ran twice on this CPU", ("a kernel bug",), (), "spec-firmware.md §10.5"),
    "TDX_SYS_NOT_READY": _a("the module is not initialised for this leaf yet",
                            ("a leaf called before TDH.SYS.TDMR.INIT / TDH.SYS.UPDATE finished",), (), "spec-firmware.md §10.3"),
    "TDX_SYS_SHUTDOWN": _a(
        "the module was shut down (TDH.SYS.SHUTDOWN ran) and answers nothing else",
        ("an earlier update shut this module down and did not finish",), (_REBOOT,), "spec-firmware.md §10.3"),
    "TDX_SYS_STATE_INCORRECT": _a(
        "TDH.SYS.UPDATE ran before every CPU had initialised the new module",
        ("a CPU skipped TDH.SYS.LP.INIT (offline, or a kernel bug)",), ("keep every CPU online; " + _REBOOT,),
        "spec-firmware.md §10.5"),
    "TDX_SYS_INVALID_HANDOFF": _a(
        "the new module cannot read the handoff data the old one wrote (version outside its range)",
        ("the new release does not accept updates from the running one",), (_CATALOG, _REBOOT),
        "spec-firmware.md §10.5"),
    "TDX_SYS_INCOMPATIBLE_SIGSTRUCT": _a(
        "the sigstruct's handoff fields do not match what this module build expects",
        ("a module paired with the wrong sigstruct",), ("use the release's own .sigstruct / blob",),
        "spec-firmware.md §10.5"),
    "TDX_INCOMPATIBLE_SEAM_CAPABILITIES": _a(
        "the CPU lacks SEAMOPS functions the module needs (SEAMDB_GETREF, SEAMDB_REPORT)",
        ("old microcode",), ("update the BIOS/microcode",), "spec-firmware.md §10.5"),
    "TDX_UPDATE_COMPAT_SENSITIVE": _a(
        "TDH.SYS.SHUTDOWN refused: a TD is in an update-sensitive phase (being built or migrated)",
        ("a TD build (TDH.MEM.PAGE.ADD / MR.EXTEND / MR.FINALIZE) was in progress",),
        ("retry the update later (the upload's error reads device-busy)",), "spec-firmware.md §10.4"),
    "TDX_INCORRECT_CPUID_VALUE": _a(
        "a CPUID value of this platform is not what the module requires; the output registers name "
        "the leaf/subleaf (RCX), the mask (RDX, R8) and the required value (R9, R10)",
        ("a BIOS setting hides or changes a CPU feature TDX needs",
         "microcode or BIOS too old for this module"),
        ("compare the CPUID leaf with BIOS settings (e.g. features disabled in setup); update the BIOS",),
        "intel/tdx-module src/vmm_dispatcher/api_calls/tdh_sys_init.c"),
    "TDX_INCONSISTENT_CPUID_FIELD": _a(
        "this CPU's CPUID differs from the first CPU's in a field that must be equal (RCX: leaf/subleaf, "
        "RDX/R8: the field mask)",
        ("CPUs with different microcode or BIOS settings per socket",), ("update microcode on every socket",),
        "intel/tdx-module src/vmm_dispatcher/api_calls/tdh_sys_lp_init.c"),
    "TDX_INCORRECT_MSR_VALUE": _a(
        "an MSR has a value the module does not accept; the low bits hold the MSR address",
        ("a BIOS setting (e.g. IA32_MISC_PACKAGE_CTLS, IA32_ARCH_CAPABILITIES)",), ("check BIOS settings; update BIOS",),
        "intel/tdx-module tdh_sys_init.c"),
    "TDX_INCONSISTENT_MSR": _a("an MSR differs between CPUs", ("per-socket BIOS or microcode differences",),
                               ("update microcode everywhere",), "intel/tdx-module tdh_sys_lp_init.c"),
    "TDX_SMRR_NOT_LOCKED": _a("SMRR is not locked (the low bits name the SMRR)", ("BIOS configuration",),
                              ("update the BIOS",), "intel/tdx-module tdh_sys_init.c"),
    "TDX_INVALID_SMRR_CONFIGURATION": _a("an SMRR is badly configured", ("BIOS configuration",), ("update the BIOS",),
                                         "intel/tdx-module tdh_sys_init.c"),
    "TDX_SMRR_OVERLAPS_CMR": _a("SMRAM overlaps memory TDX may use (a CMR)", ("BIOS configuration",),
                                ("update the BIOS",), "intel/tdx-module tdh_sys_init.c"),
    "TDX_NUM_ACTIVATED_HKIDS_NOT_SUPPORTED": _a(
        "more TDX KeyIDs are activated than the module supports", ("BIOS KeyID split",),
        ("reduce the TDX KeyIDs in the BIOS",), "intel/tdx-module tdh_sys_init.c"),
    "TDX_CPUID_LEAF_NOT_SUPPORTED": _a("the CPU does not report a CPUID leaf the module needs",
                                       ("CPUID max-leaf limited in the BIOS",),
                                       ("disable 'Limit CPUID maximum' in the BIOS",), "intel/tdx-module tdh_sys_init.c"),
    "TDX_LIMIT_CPUID_MAXVAL_SET": _a("IA32_MISC_ENABLE 'limit CPUID maxval' is set",
                                     ("BIOS setting",), ("disable 'Limit CPUID maximum' in the BIOS",),
                                     "intel/tdx-module tdh_sys_init.c"),
    "TDX_METADATA_FIELD_ID_INCORRECT": _a(
        "the module does not know the metadata field asked for (RDX holds the field id)",
        ("a kernel reading a field this module version does not have",), ("use a kernel matching the module version",),
        "spec-firmware.md §11"),
    "TDX_CRYPTO_SELF_TEST_FAILED": _a("the module's cryptographic self test failed",
                                      ("a hardware or microcode fault",), ("update BIOS/microcode; contact the vendor",),
                                      "intel/tdx-module include/auto_gen_1_5/tdx_error_codes_defs.h"),
    # P-SEAMLDR
    "EBADPARAM": _a("the P-SEAMLDR rejected an input address or parameters", ("a kernel bug",), (), "spec-firmware.md §3, §5"),
    "EBADCALL": _a("the call is not allowed now",
                   ("no runtime updates left (num_remaining_updates is 0)", "INSTALL repeated on a CPU"),
                   (_REBOOT,), "spec-firmware.md §3, §8"),
    "EBADHANDOFF": _a("the running module's handoff data is invalid or unsupported by the new one",
                      ("an incompatible release",), (_CATALOG,), "spec-firmware.md §3"),
    "ENOMEM": _a("the new module does not fit in the SEAM range", ("a module too large for SEAMRR",),
                 ("choose another release",), "spec-firmware.md §3"),
    "EUNSUPCPU": _a("the module does not support a CPU of this platform",
                    ("a release built for another CPU generation",), ("'tdxseam verify' the file; pick a release for this CPU",),
                    "spec-firmware.md §3, §7.4"),
    "EBADSIG": _a("the sigstruct is malformed, or its signature, key or SVN check failed",
                  ("a corrupted or unsigned file", "an SVN below the platform's minimum"),
                  ("'tdxseam verify' the file; download Intel's release again",), "spec-firmware.md §3, §7.4"),
    "EBADHASH": _a("the module image does not match its sigstruct's SEAMHASH",
                   ("a corrupted download", "the .bin of one release with another's .sigstruct"),
                   ("'tdxseam verify' the file; download Intel's release again",), "spec-firmware.md §3, §7.4"),
    "ENOENTROPY": _a("no entropy for RDRAND/RDSEED or SEAMDB", (), ("retry",), "spec-firmware.md §3"),
    "EUNSPECERR": _a("unspecified platform error", ("bad LP id, no entropy for the stack canary",), (_REBOOT,),
                     "spec-firmware.md §1, §3"),
    "EUNSUPPORTED": _a("the module's major SVN is not supported by this P-SEAMLDR", (),
                       ("update the BIOS (newer P-SEAMLDR) or choose another release",), "spec-firmware.md §3"),
    "ECLEANUPREQ": _a("SEAMLDR.CLEANUP must run first", (), (_REBOOT,), "spec-firmware.md §3"),
    "EINTERRUPT": _a("SEAMLDR.CLEANUP was interrupted", (), ("call it again",), "spec-firmware.md §3"),
}


@dataclass(frozen=True)
class Message:
    """A kernel log line tdxseam recognises, other than the SEAMCALL failure lines."""

    pattern: str  # a regular expression matched against the text after the printk prefix
    verdict: str  # "ok", "info", "warn", "error"
    meaning: str
    actions: tuple[str, ...] = field(default=())
    source: str = ""


MESSAGES: tuple[Message, ...] = (
    Message(r"module not loaded$", "error",
            "TDH.SYS.INIT ended in VMfailInvalid: no TDX module is loaded in SEAM "
            "(the BIOS loaded none, or a failed update left none)",
            ("enable TDX in the BIOS and update it; after a failed update, " + _REBOOT,),
            "upstream tdx.c try_init_module_global; spec-linux.md §7.3"),
    Message(r"(TDX-Module|module) initialized$", "ok", "the TDX module initialised at boot",
            (), "upstream tdx.c tdx_enable"),
    Message(r"(TDX-Module|module) initialization failed \((-?\d+)\)$", "error",
            "boot-time initialisation of the TDX module failed (the errno is shown); TDX is not "
            "available this boot", ("read the SEAMCALL line before it",), "upstream tdx.c tdx_enable"),
    Message(r"BIOS enabled: private KeyID range \[(\d+), (\d+)\)$", "info",
            "the BIOS gave TDX these private KeyIDs (each TD needs one)", (), "upstream tdx.c tdx_init"),
    Message(r"(\d+) KB allocated for PAMT$", "info",
            "memory the kernel gave the TDX module for its page metadata (PAMT) at boot", (),
            "upstream tdx.c init_tdx_module"),
    Message(r"TDX not supported by the host platform$", "error",
            "the CPU does not advertise the TDX host platform feature (X86_FEATURE_TDX_HOST_PLATFORM)",
            ("enable TDX in the BIOS",), "upstream tdx.c tdx_enable"),
    Message(r"(XSAVE|MOVDIR64B|Self-snoop) is required for TDX$", "error",
            "a CPU feature TDX needs is off", ("enable it in the BIOS / kernel command line",),
            "upstream tdx.c tdx_enable"),
    Message(r"(TDX-Module update failed \((-?\d+)\)|module update failed: (-?\d+))$", "error",
            "TDH.SYS.UPDATE failed during a runtime update: " + _LOST, (_REBOOT,),
            "runtime-update series v3/v4 tdx_module_run_update"),
    Message(r"version (\d+\.\d+\.\d+) -> (\d+\.\d+\.\d+)$", "ok",
            "a runtime update replaced the TDX module (printed by series up to v8)", (),
            "spec-linux.md §5.6"),
    Message(r"WARNING: failed to read the TDX module's handoff version$", "warn",
            "TDH.SYS.RD of the handoff version failed before an update; the kernel went on with version 0",
            (), "spec-linux.md §5.6"),
    Message(r"WARNING: failed to read the new TDX module's version$", "warn",
            "the update succeeded but the new version could not be read; `version` may be stale",
            (), "spec-linux.md §5.6"),
    Message(r"WARNING: P-SEAMLDR call on cpu\d+, which has the seamret_invd_vmcs erratum$", "warn",
            "a P-SEAMLDR call was attempted on a CPU with the SEAMRET erratum (a kernel bug: the "
            "interface should be hidden there)", (), "spec-linux.md §9"),
)
