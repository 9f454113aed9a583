"""`tdxseam doctor`: check a TDX host as an operator would, one verdict and one fix per check.

Everything is read through files under the sysfs root (like the rest of the operator tool): the
tdx_host attributes and the tdx_module upload, /proc/cpuinfo, the CPU lists, the kernel log, and,
where readable, the msr device of CPU 0 (SEAMRR and the KeyID split). Reads are bounded and never
block: regular files only (opened O_NONBLOCK | O_NOFOLLOW), except the msr device, which is read
with one 8-byte pread per MSR.
"""

from __future__ import annotations

import errno
import os
import stat
from dataclasses import dataclass, field
from typing import Any

from tdxseam.formats.msr import (
    MSR_IA32_MKTME_KEYID_PARTITIONING,
    MSR_IA32_SEAMRR_PHYS_BASE,
    MSR_IA32_SEAMRR_PHYS_MASK,
    SEAMRR_ADDR_BITS,
    SEAMRR_MASK_ENABLED,
    SEAMRR_MASK_LOCKED,
    seamrr_size,
    split_keyids,
)
from tdxseam.formats import sysfs_abi as abi
from tdxseam.formats.sysfs_abi import CPUINFO, DMESG
from tdxseam.tool.explain import Item, escape, explain_log
from tdxseam.tool.hostinfo import HostInfo, Layout, SysfsRoot, os_error_text, read_host, read_upto

VERDICTS = ("ok", "warn", "fail", "unknown")
MAX_ATTR = 64 << 10  # one sysfs attribute
MAX_CPUINFO = 16 << 20  # /proc/cpuinfo of a 4096-CPU host is ~6 MiB
MAX_DMESG = 16 << 20

MSR_DEVICE = abi.MSR_DEVICE.format(cpu=0)


class NotRegular(OSError):
    """A path that is a FIFO, device or symlink where a regular file was expected."""


def read_regular(path: str | os.PathLike[str], limit: int) -> bytes:
    """At most `limit` bytes of a regular file; never follows a final symlink, never blocks."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise NotRegular(errno.EINVAL, "not a regular file", str(path))
        return read_upto(fd, limit, 1 << 20)
    finally:
        os.close(fd)


class SafeRoot(SysfsRoot):
    """The plain SysfsRoot, with every read bounded and refused on anything but a regular file."""

    def read_text(self, rel: str) -> str:
        return read_regular(self.path(rel), MAX_ATTR).decode("utf-8", "replace")

    def read_all(self, rel: str) -> str:
        return read_regular(self.path(rel), MAX_CPUINFO).decode("utf-8", "replace")


def reads_files(fs: SysfsRoot) -> bool:
    """True when `fs` reads the file system under its root (not a tree served from memory, whose
    root is only nominally "/": nothing may be read from the real / for it)."""
    return isinstance(fs, SafeRoot) or type(fs).read_all is SysfsRoot.read_all


def read_msr(root: SysfsRoot, msr: int) -> int:
    """One MSR of CPU 0 through the msr driver (a character device; a regular file in tests)."""
    if not reads_files(root):
        # a root served from memory may offer pread(rel, size, offset) (the in-process tree does)
        pread = getattr(root, "pread", None)
        if pread is None:
            raise FileNotFoundError(errno.ENOENT, "this root serves no msr device", MSR_DEVICE)
        data = pread(MSR_DEVICE, 8, msr)
        if len(data) != 8:
            raise OSError(errno.EIO, f"short read of MSR 0x{msr:x}", MSR_DEVICE)
        return int.from_bytes(data, "little")
    path = root.path(MSR_DEVICE)
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0))
    try:
        mode = os.fstat(fd).st_mode
        if not (stat.S_ISCHR(mode) or stat.S_ISREG(mode)):
            raise NotRegular(errno.EINVAL, "not the msr device", str(path))
        data = os.pread(fd, 8, msr)
    finally:
        os.close(fd)
    if len(data) != 8:
        raise OSError(errno.EIO, f"short read of MSR 0x{msr:x}", str(path))
    return int.from_bytes(data, "little")


@dataclass
class Check:
    name: str
    verdict: str
    summary: str
    fix: str = ""
    details: Any = None

    def to_json(self) -> dict[str, Any]:
        d = {"name": self.name, "verdict": self.verdict, "summary": self.summary, "fix": self.fix}
        if self.details is not None:
            d["details"] = self.details
        return d


@dataclass
class Report:
    root: str
    checks: list[Check]
    log_source: str | None
    log_items: list[Item] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not any(c.verdict == "fail" for c in self.checks)

    def counts(self) -> dict[str, int]:
        return {v: sum(1 for c in self.checks if c.verdict == v) for v in VERDICTS}

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "root": escape(self.root), "counts": self.counts(),
                "checks": [c.to_json() for c in self.checks],
                "kernel_log": {"source": escape(self.log_source) if self.log_source else None,
                               "items": [i.to_json() for i in self.log_items]}}


# -- the checks ------------------------------------------------------------------------------------


def _attr_error(a) -> str:
    return escape(a.error or "unreadable")


def check_tdx_host(h: HostInfo) -> Check:
    if h.tdx_host:
        return Check("tdx_host", "ok", "/sys/devices/faux/tdx_host is present")
    return Check("tdx_host", "fail", "no /sys/devices/faux/tdx_host: TDX did not initialise, or the kernel "
                 "has no tdx_host driver", "read the kernel log check below; runtime update needs Linux 7.2+ "
                 "with TDX enabled (kvm_intel.tdx=1) and TDX enabled in the BIOS")


def check_module(h: HostInfo) -> Check:
    a = h.module_version
    if a.ok and h.version is not None:
        return Check("module", "ok", f"TDX module {h.version} is running")
    if a.ok:
        return Check("module", "fail", f"version reads {escape(a.value or '')!r}, not a version",
                     "report this: the kernel should print major.minor.update")
    if a.errno == errno.ENXIO:
        return Check("module", "fail", "the TDX module is not running (version: ENXIO): a failed update lost "
                     "it and TDs cannot run", "reboot the host (the BIOS loads a module again)")
    if a.errno in (errno.EACCES, errno.EPERM):
        return Check("module", "unknown", f"cannot read version: {_attr_error(a)}", "run as root")
    if not h.tdx_host:
        return Check("module", "unknown", "no tdx_host device, so no version to read", "see tdx_host")
    return Check("module", "fail", f"cannot read version: {_attr_error(a)}", "see the kernel log check")


def check_upload(h: HostInfo) -> Check:
    if h.layout is Layout.TDX_MODULE:
        status = h.upload_status.value if h.upload_status and h.upload_status.ok else None
        if status not in (None, "idle"):
            return Check("upload", "warn", f"/{h.upload_dir}: an upload is in progress (status "
                         f"{escape(status)})", "wait until status reads idle, then read error")
        return Check("upload", "ok", f"runtime update offered through /{h.upload_dir} (v2 images)")
    if h.layout is Layout.SEAMLDR_UPLOAD:
        return Check("upload", "warn", f"/{h.upload_dir}: a pre-v4 patch set interface (v1 blobs)",
                     "move to a kernel with the merged tdx_module interface")
    if h.tdx_host:
        return Check("upload", "warn", "runtime update not offered: no firmware/tdx_module upload",
                     "the running module must support TD-preserving update (TDX_FEATURES0 bit 1), the CPUs "
                     "must not have the seamret_invd_vmcs erratum, and the kernel needs update support")
    return Check("upload", "unknown", "no tdx_host device", "see tdx_host")


def check_seamldr(h: HostInfo) -> Check:
    a = h.seamldr_version
    if a.ok and h.seamldr is not None:
        return Check("seamldr", "ok", f"P-SEAMLDR {h.seamldr}")
    if a.errno == errno.ENOENT or (a.error == "missing"):
        if h.layout is None:
            return Check("seamldr", "unknown", "the kernel shows no P-SEAMLDR version (runtime update not offered)",
                         "see upload")
        return Check("seamldr", "fail", "seamldr_version is missing although the upload exists",
                     "report this kernel")
    if a.errno in (errno.EACCES, errno.EPERM):
        return Check("seamldr", "unknown", f"cannot read seamldr_version: {_attr_error(a)}", "run as root")
    return Check("seamldr", "fail", f"the P-SEAMLDR does not answer (seamldr_version: {_attr_error(a)})",
                 "the BIOS did not load a P-SEAMLDR: update the BIOS / enable the SEAM loader; no runtime "
                 "update is possible until then")


def check_remaining(h: HostInfo) -> Check:
    n = h.remaining_updates
    a = h.num_remaining_updates
    if n is not None:
        if n > 0:
            return Check("remaining_updates", "ok", f"{n} runtime update(s) left this boot")
        return Check("remaining_updates", "warn", "no runtime updates left this boot (num_remaining_updates 0)",
                     "reboot to install a newer module (the P-SEAMLDR resets the count at boot)")
    if a.error == "missing" and h.layout is None:
        return Check("remaining_updates", "unknown", "not shown (runtime update not offered)", "see upload")
    if a.errno in (errno.EACCES, errno.EPERM):
        return Check("remaining_updates", "unknown", f"cannot read num_remaining_updates: {_attr_error(a)}",
                     "run as root")
    return Check("remaining_updates", "unknown", f"cannot read num_remaining_updates: {_attr_error(a)}",
                 "see seamldr")


def check_release(h: HostInfo, catalog, opts) -> Check:
    if catalog is None:
        return Check("release", "unknown", "no catalog given", "pass --catalog DIR (Intel's binaries "
                     "repository layout) to compare with the releases")
    from tdxseam.tool.errors import ToolError
    from tdxseam.tool.plan import make_plan

    try:
        p = make_plan(h, catalog, opts=opts)
    except ToolError as e:
        return Check("release", "unknown", f"cannot judge releases: {escape(str(e))}", "fix the checks above first")
    details = {"outcome": p.outcome, "selected": str(p.selected.version) if p.selected else None,
               "best": str(p.best.version) if p.best and p.best.version else None}
    if p.outcome == "up_to_date":
        return Check("release", "ok", escape(p.message), details=details)
    if p.outcome == "update":
        return Check("release", "warn", f"a newer release applies: {escape(p.message)}",
                     f"tdxseam update {p.selected.version} --catalog DIR", details)
    return Check("release", "warn", escape(p.message), "tdxseam plan --catalog DIR shows every reason", details)


def _cpuinfo_flags(text: str) -> tuple[int, int, int]:
    """(processors, with tdx_host_platform, with the seamret_invd_vmcs bug)."""
    procs = tdx = bug = 0
    for block in text.split("\n\n"):
        fields = {}
        for line in block.splitlines():
            k, sep, v = line.partition(":")
            if sep:
                fields[k.strip()] = v.split()
        if "processor" not in fields:
            continue
        procs += 1
        tdx += "tdx_host_platform" in fields.get("flags", [])
        bug += "seamret_invd_vmcs" in fields.get("bugs", [])
    return procs, tdx, bug


def check_cpu_flags(fs: SysfsRoot) -> Check:
    try:
        text = fs.read_all(CPUINFO)
    except OSError as e:
        return Check("cpu_flags", "unknown", f"cannot read /proc/cpuinfo: {escape(os_error_text(e))}",
                     "check the sysfs root")
    procs, tdx, bug = _cpuinfo_flags(text)
    if not procs:
        return Check("cpu_flags", "unknown", "/proc/cpuinfo lists no processors", "check the sysfs root")
    if tdx < procs:
        return Check("cpu_flags", "fail", f"{procs - tdx} of {procs} CPUs lack the tdx_host_platform flag",
                     "enable TDX in the BIOS (and its prerequisites: TME-MT, SEAM loader), on a kernel with "
                     "TDX host support")
    if bug:
        return Check("cpu_flags", "warn", f"tdx_host_platform on all {procs} CPUs; {bug} have the "
                     "seamret_invd_vmcs bug, so the kernel hides runtime update",
                     "a microcode update may fix the erratum; until then update by rebooting")
    return Check("cpu_flags", "ok", f"tdx_host_platform on all {procs} CPUs")


def check_cpus_online(h: HostInfo) -> Check:
    v = h.all_cpus_online
    if v is None:
        return Check("cpus_online", "unknown", "cannot compare online and present CPUs", "check the sysfs root")
    if v:
        return Check("cpus_online", "ok", f"all present CPUs online ({escape(h.cpus_online.value or '')})")
    return Check("cpus_online", "warn", f"CPUs offline (online {escape(h.cpus_online.value or '')}, present "
                 f"{escape(h.cpus_present.value or '')}): an update needs every CPU",
                 "echo 1 > /sys/devices/system/cpu/cpuN/online for each offline CPU before updating")


def check_kernel_log(text: str | None, source: str | None, h: HostInfo) -> tuple[Check, list[Item]]:
    if text is None:
        return Check("kernel_log", "unknown", "no kernel log read",
                     "pass --dmesg FILE (from `dmesg > FILE` as root) or --dmesg - for stdin"), []
    items = explain_log(text)
    errors = [i for i in items if i.verdict == "error"]
    warns = [i for i in items if i.verdict == "warn"]
    where = escape(source or "log")
    if not items:
        return Check("kernel_log", "warn", f"{where}: no TDX or P-SEAMLDR line",
                     "a kernel without TDX host support, or the boot messages were rotated away "
                     "(journalctl -k -b)"), items
    if errors:
        running = h.version is not None
        first = errors[0]
        what = (f"{first.leaf['name']} {first.status['name']}" if first.kind == "seamcall_failure"
                else (first.text or ""))
        verdict = "warn" if running else "fail"
        tail = "; the module runs now" if running else ""
        fix = first.actions[0] if first.actions else "see the explained lines"
        if not running and first.phase == "runtime" and "reboot" not in fix:
            fix = f"reboot the host to get a TDX module back; then: {fix}"
        return Check("kernel_log", verdict, f"{where}: {len(errors)} failure line(s), first line {first.line}: "
                     f"{what}{tail}", fix), items
    if warns:
        return Check("kernel_log", "warn", f"{where}: {len(warns)} warning line(s)",
                     "see the explained lines"), items
    return Check("kernel_log", "ok", f"{where}: {len(items)} TDX line(s), no failure"), items


def check_seamrr(fs: SysfsRoot) -> Check:
    try:
        base = read_msr(fs, MSR_IA32_SEAMRR_PHYS_BASE)
        mask = read_msr(fs, MSR_IA32_SEAMRR_PHYS_MASK)
    except OSError as e:
        return Check("seamrr", "unknown", f"cannot read /{MSR_DEVICE}: {escape(os_error_text(e))}",
                     "modprobe msr and run as root to check SEAMRR")
    enabled, locked = bool(mask & SEAMRR_MASK_ENABLED), bool(mask & SEAMRR_MASK_LOCKED)
    size = seamrr_size(mask)
    details = {"base": f"0x{base & SEAMRR_ADDR_BITS:x}", "size": size, "enabled": enabled, "locked": locked,
               "msr_0x1400": f"0x{base:016x}", "msr_0x1401": f"0x{mask:016x}"}
    if enabled and locked:
        return Check("seamrr", "ok", f"SEAMRR enabled and locked: base 0x{base & SEAMRR_ADDR_BITS:x}, "
                     f"{size >> 20} MiB", details=details)
    return Check("seamrr", "fail", f"SEAMRR {'enabled' if enabled else 'not enabled'}, "
                 f"{'locked' if locked else 'not locked'} (MSR 0x1401 = 0x{mask:016x})",
                 "enable TDX in the BIOS: it must set up and lock SEAMRR", details)


def check_keyids(fs: SysfsRoot) -> Check:
    try:
        v = read_msr(fs, MSR_IA32_MKTME_KEYID_PARTITIONING)
    except OSError as e:
        return Check("keyids", "unknown", f"cannot read /{MSR_DEVICE}: {escape(os_error_text(e))}",
                     "modprobe msr and run as root to check the KeyID split")
    mktme, tdx = split_keyids(v)
    details = {"mktme_keyids": mktme, "tdx_keyids": tdx, "range": [mktme + 1, mktme + 1 + tdx]}
    if tdx == 0:
        return Check("keyids", "fail", f"the BIOS gave TDX no private KeyIDs ({mktme} MKTME KeyIDs)",
                     "set the TDX KeyID split in the BIOS (TME-MT / TDX settings)", details)
    return Check("keyids", "ok", f"{tdx} TDX private KeyIDs [{mktme + 1}, {mktme + 1 + tdx}), "
                 f"{mktme} MKTME KeyIDs", details=details)


def find_log(fs: SysfsRoot) -> tuple[str | None, str | None]:
    """The kernel log under the root (an emulated host serves it at var/log/dmesg)."""
    try:
        if reads_files(fs):
            data = read_regular(fs.path(DMESG), MAX_DMESG).decode("utf-8", "replace")
        else:
            data = fs.read_all(DMESG)[:MAX_DMESG]
    except OSError:
        return None, None
    return data, "/" + DMESG


def run_doctor(fs: SysfsRoot, *, log_text: str | None = None, log_source: str | None = None,
               catalog=None, opts=None) -> Report:
    """Every check, in the order an operator would look."""
    if log_text is None:
        log_text, log_source = find_log(fs)
    h = read_host(fs)
    if opts is None:
        from tdxseam.tool.plan import PlanOptions

        opts = PlanOptions()
    log_check, items = check_kernel_log(log_text, log_source, h)
    checks = [check_tdx_host(h), check_module(h), check_upload(h), check_seamldr(h), check_remaining(h),
              check_release(h, catalog, opts), check_cpu_flags(fs), check_cpus_online(h), log_check,
              check_seamrr(fs), check_keyids(fs)]
    return Report(str(fs.root), checks, log_source, items)
