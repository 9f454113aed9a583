"""The kernel's file ABI for a TDX module update, as one tree of files with the kernel's behaviour.

What a real program sees under `/` of a TDX host, and nothing it does not need:

    /sys/devices/faux/tdx_host/{version, seamldr_version, num_remaining_updates}
    /sys/devices/faux/tdx_host/firmware/tdx_module/{loading, data, status, error, remaining_size, cancel}
    /sys/class/firmware/tdx_module -> ../../devices/faux/tdx_host/firmware/tdx_module
    /sys/devices/system/cpu/{online, present, possible}
    /proc/cpuinfo
    /var/log/dmesg   (the emulated kernel's log, read-only, in `dmesg` form)
    /dev/cpu/N/msr   (the msr driver: 8-byte reads at offset = MSR; the KeyID split and SEAMRR)

Every operation takes the caller's credentials and answers as the kernel would: bytes, a byte
count, or an `OSError` carrying the kernel's errno. The layers are the kernel's:
- the VFS (`generic_permission`): mode bits against the caller's fsuid/fsgid, overridden by
  CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH, as for any inode;
- kernfs (`kernfs_fop_open`): a sysfs file opened for writing needs a write bit in its mode *and* a
  store method, for reading a read bit and a show method, else -EACCES. So root, who passes the
  VFS check on anything, still gets EACCES writing a 0444 attribute or reading the 0200 `cancel`;
- sysfs: a read of a text attribute calls `show` once per read session (seq_file: a read at
  offset 0 starts a new one; a continuing read is served from the same text, so `status` never
  reads half old, half new); a write hands at most PAGE_SIZE bytes to `store` (a longer write is
  short, and `cat` or Python's buffered writer write the rest); an empty write returns 0 without
  calling it. Binary attributes (`data`) move at most PAGE_SIZE per call in both directions.
  Sizes and truncation are ignored (kernfs_iop_setattr "ignores size changes"), so
  `echo 1 > loading` (O_TRUNC) works;
- procfs: `/proc/cpuinfo` is 0444 and has no write method: root may open it for writing, and every
  write then fails with -EIO.
Names cannot be created, removed or renamed: -EACCES for a creating open, -EPERM for mkdir, mknod,
unlink, rmdir, rename, link and symlink once the directory permission check passes. Root may
chmod, chown and touch, as on sysfs.

Every sysfs callback is host kernel code, so it runs as a task on a simulated CPU (the runtime
picks one), interleaved with whatever else the kernel is doing, such as an update in progress.
The tree itself is not thread-safe: its public methods hand each operation to the runtime, which
runs it on the one thread that owns the emulated host (`tdxseam.sysfs.runtime`).
"""

from __future__ import annotations

import errno
import os
import stat as stat_mod
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from enum import Enum
from typing import TYPE_CHECKING, Any

from tdxseam.formats import msr
from tdxseam.formats import sysfs_abi as abi
from tdxseam.formats.page import PAGE_SIZE  # kernfs moves at most a page per read/write

if TYPE_CHECKING:
    from tdxseam.host import EmulatedHost
    from tdxseam.sysfs.runtime import MachineRuntime

SYSFS_MAGIC = 0x62656572
MAX_SYMLINKS = 40

# Capabilities the checks look at (linux/capability.h).
CAP_CHOWN = 0
CAP_DAC_OVERRIDE = 1
CAP_DAC_READ_SEARCH = 2
CAP_FOWNER = 3
CAP_SYS_RAWIO = 17
ALL_CAPS = (1 << 41) - 1  # CAP_LAST_CAP = 40

MAY_EXEC = 1
MAY_WRITE = 2
MAY_READ = 4

TDX_HOST = "/" + abi.TDX_HOST
TDX_MODULE = "/" + abi.TDX_MODULE_UPLOAD
CLASS_TDX_MODULE = "/" + abi.CLASS_TDX_MODULE


def _err(code: int, path: str | None = None) -> OSError:
    return OSError(code, os.strerror(code), path) if path else OSError(code, os.strerror(code))


# ---- credentials --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cred:
    """Who is asking: fsuid/fsgid, supplementary groups and effective capabilities."""

    uid: int = 0
    gid: int = 0
    groups: tuple[int, ...] = ()
    caps: int = ALL_CAPS
    pid: int | None = None

    @classmethod
    def root(cls) -> Cred:
        return cls()

    @classmethod
    def user(cls, uid: int = 65534, gid: int | None = None) -> Cred:
        """An ordinary user: no capabilities (`nobody` by default)."""
        return cls(uid=uid, gid=uid if gid is None else gid, caps=0)

    def capable(self, cap: int) -> bool:
        return bool((self.caps >> cap) & 1)

    def without(self, *caps: int) -> Cred:
        mask = self.caps
        for c in caps:
            mask &= ~(1 << c)
        return replace(self, caps=mask)

    def in_group(self, gid: int) -> bool:
        return gid == self.gid or gid in self.groups

    @classmethod
    def of_process(cls, uid: int, gid: int, pid: int | None) -> Cred:
        """The credentials of a live process (a FUSE caller), from /proc/<pid>/status.

        fsuid/fsgid are what the VFS checks; CapEff decides the overrides and CAP_SYS_RAWIO. If the
        process is gone already, root keeps every capability and anyone else none, which is what
        they have unless something set file capabilities or dropped them.
        """
        fallback = cls(uid=uid, gid=gid, caps=ALL_CAPS if uid == 0 else 0, pid=pid)
        if not pid:
            return fallback
        try:
            with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
                text = f.read()
        except OSError:
            return fallback
        fields: dict[str, str] = {}
        for line in text.splitlines():
            k, _, v = line.partition(":")
            fields[k] = v.strip()
        try:
            fsuid = int(fields["Uid"].split()[3])
            fsgid = int(fields["Gid"].split()[3])
            groups = tuple(int(g) for g in fields.get("Groups", "").split())
            caps = int(fields["CapEff"], 16)
        except (KeyError, IndexError, ValueError):
            return fallback
        return cls(uid=fsuid, gid=fsgid, groups=groups, caps=caps, pid=pid)


ROOT = Cred.root()


# ---- nodes ---------------------------------------------------------------------------------------


class Kind(Enum):
    DIR = "dir"
    ATTR = "attr"  # sysfs text attribute: show/store
    BIN = "bin"  # sysfs binary attribute: read/write at offsets
    LINK = "link"
    PROC = "proc"  # a read-only seq_file in procfs


@dataclass(eq=False)
class Node:
    name: str
    kind: Kind
    mode: int  # permission bits
    uid: int = 0
    gid: int = 0
    show: Callable[[], str | int] | None = None
    store: Callable[[str], int] | None = None
    bin_read: Callable[[int, int], bytes | int] | None = None
    bin_write: Callable[[int, bytes, Cred], int] | None = None
    target: str = ""
    children: dict[str, Node] = field(default_factory=dict)
    ino: int = 0
    mtime_ns: int = 0
    atime_ns: int = 0
    ctime_ns: int = 0

    @property
    def is_dir(self) -> bool:
        return self.kind is Kind.DIR

    @property
    def type_bits(self) -> int:
        if self.kind is Kind.DIR:
            return stat_mod.S_IFDIR
        if self.kind is Kind.LINK:
            return stat_mod.S_IFLNK
        return stat_mod.S_IFREG

    @property
    def size(self) -> int:
        """What stat reports: PAGE_SIZE for sysfs text attributes, 0 for everything else (`data`,
        procfs files, directories, and kernfs symlinks too)."""
        return PAGE_SIZE if self.kind is Kind.ATTR else 0

    @property
    def readable(self) -> bool:
        return self.show is not None or self.bin_read is not None

    @property
    def writable(self) -> bool:
        return self.store is not None or self.bin_write is not None


@dataclass(frozen=True)
class Stat:
    st_mode: int
    st_ino: int
    st_nlink: int
    st_uid: int
    st_gid: int
    st_size: int
    st_atime_ns: int
    st_mtime_ns: int
    st_ctime_ns: int
    st_blksize: int = PAGE_SIZE
    st_blocks: int = 0

    @property
    def is_dir(self) -> bool:
        return stat_mod.S_ISDIR(self.st_mode)

    @property
    def is_link(self) -> bool:
        return stat_mod.S_ISLNK(self.st_mode)

    @property
    def perm(self) -> int:
        return stat_mod.S_IMODE(self.st_mode)


@dataclass(eq=False)
class OpenFile:
    node: Node
    path: str
    flags: int
    cred: Cred
    text: bytes | None = None  # the seq_file buffer of this read session
    text_end: int = 0  # offset just past the last byte handed out from it

    @property
    def can_read(self) -> bool:
        return (self.flags & os.O_ACCMODE) in (os.O_RDONLY, os.O_RDWR)

    @property
    def can_write(self) -> bool:
        return (self.flags & os.O_ACCMODE) in (os.O_WRONLY, os.O_RDWR)


def generic_permission(cred: Cred, node: Node, mask: int) -> None:
    """fs/namei.c: mode bits for owner / group / other, then the capability overrides."""
    mode = node.mode
    if cred.uid == node.uid:
        bits = (mode >> 6) & 7
    elif cred.in_group(node.gid):
        bits = (mode >> 3) & 7
    else:
        bits = mode & 7
    if mask & ~bits & 7 == 0:
        return
    if node.is_dir:
        if not mask & MAY_WRITE and cred.capable(CAP_DAC_READ_SEARCH):
            return
        if cred.capable(CAP_DAC_OVERRIDE):
            return
        raise _err(errno.EACCES)
    if mask == MAY_READ and cred.capable(CAP_DAC_READ_SEARCH):
        return
    if cred.capable(CAP_DAC_OVERRIDE) and (not mask & MAY_EXEC or mode & 0o111):
        return
    raise _err(errno.EACCES)


def cpulist(ids: list[int]) -> str:
    """A cpumask as `cpumap_print_to_pagebuf(true, ...)` prints it: "0-3,5,7-9"."""
    parts: list[str] = []
    ids = sorted(ids)
    i = 0
    while i < len(ids):
        j = i
        while j + 1 < len(ids) and ids[j + 1] == ids[j] + 1:
            j += 1
        parts.append(str(ids[i]) if i == j else f"{ids[i]}-{ids[j]}")
        i = j + 1
    return ",".join(parts)


# ---- /proc/cpuinfo ---------------------------------------------------------------------------------

# CPUID.1.EAX & ~0xF -> what the emulated CPU calls itself (spec-formats §9).
_CPU_NAMES = {
    0x806F0: "Sapphire Rapids",
    0xC06F0: "Emerald Rapids",
    0xA06F0: "Sierra Forest",
    0xA06D0: "Granite Rapids",
    0xA06E0: "Granite Rapids-D",
}

# A Sapphire Rapids host's flags (abridged: what tools grep for), with the TDX host flag.
_CPU_FLAGS = (
    "fpu vme de pse tsc msr pae mce cx8 apic sep mtrr pge mca cmov pat pse36 clflush dts acpi mmx "
    "fxsr sse sse2 ss ht tm pbe syscall nx pdpe1gb rdtscp lm constant_tsc art arch_perfmon pebs bts "
    "rep_good nopl xtopology nonstop_tsc cpuid aperfmperf tsc_known_freq pni pclmulqdq dtes64 monitor "
    "ds_cpl vmx smx est tm2 ssse3 sdbg fma cx16 xtpr pdcm pcid dca sse4_1 sse4_2 x2apic movbe popcnt "
    "tsc_deadline_timer aes xsave avx f16c rdrand lahf_lm abm 3dnowprefetch cpuid_fault epb cat_l3 "
    "cat_l2 cdp_l3 intel_ppin cdp_l2 ssbd mba ibrs ibpb stibp ibrs_enhanced tpr_shadow flexpriority ept "
    "vpid ept_ad fsgsbase tsc_adjust bmi1 hle avx2 smep bmi2 erms invpcid rtm cqm rdt_a avx512f "
    "avx512dq rdseed adx smap avx512ifma clflushopt clwb intel_pt avx512cd sha_ni avx512bw avx512vl "
    "xsaveopt xsavec xgetbv1 xsaves cqm_llc cqm_occup_llc cqm_mbm_total cqm_mbm_local split_lock_detect "
    "avx_vnni avx512_bf16 wbnoinvd dtherm ida arat pln pts hfi vnmi avx512vbmi umip pku ospke waitpkg "
    "avx512_vbmi2 gfni vaes vpclmulqdq avx512_vnni avx512_bitalg tme avx512_vpopcntdq la57 rdpid "
    "bus_lock_detect cldemote movdiri movdir64b enqcmd fsrm md_clear serialize tsxldtrk pconfig "
    "arch_lbr ibt amx_bf16 avx512_fp16 amx_tile amx_int8 flush_l1d arch_capabilities tdx_host_platform"
).split()
_CPU_BUGS = ("spectre_v1", "spectre_v2", "spec_store_bypass", "swapgs", "eibrs_pbrsb", "bhi")


def decode_cpuid_1_eax(eax: int) -> tuple[int, int, int]:
    """(family, model, stepping) as x86_family()/x86_model()/x86_stepping() compute them."""
    family = (eax >> 8) & 0xF
    if family == 0xF:
        family += (eax >> 20) & 0xFF
    model = (eax >> 4) & 0xF
    if family >= 0x6:
        model += ((eax >> 16) & 0xF) << 4
    return family, model, eax & 0xF


def cpuinfo_text(host: EmulatedHost) -> str:
    """show_cpuinfo() (arch/x86/kernel/cpu/proc.c) for every online CPU, one stanza each."""
    m = host.machine
    online = [c for c in m.cpus if c.online]
    sockets = max(1, m.sockets)
    per_socket = max(1, m.ncpus // sockets)
    out = []
    for c in online:
        family, model, stepping = decode_cpuid_1_eax(c.cpuid_1_eax)
        codename = _CPU_NAMES.get(c.cpuid_1_eax & ~0xF, "unknown")
        bugs = list(_CPU_BUGS)
        if c.has_seamret_invd_vmcs:
            bugs.append("seamret_invd_vmcs")  # X86_BUG(1*32+11), after the word-0 bugs
        out.append(
            f"processor\t: {c.id}\n"
            "vendor_id\t: GenuineIntel\n"
            f"cpu family\t: {family}\n"
            f"model\t\t: {model}\n"
            f"model name\t: Intel(R) Xeon(R) CPU ({codename}, emulated by tdxseam)\n"
            f"stepping\t: {stepping}\n"
            "microcode\t: 0x2b000620\n"
            "cpu MHz\t\t: 2000.000\n"
            f"physical id\t: {min(c.id // per_socket, sockets - 1)}\n"
            f"siblings\t: {per_socket}\n"
            f"core id\t\t: {c.id % per_socket}\n"
            f"cpu cores\t: {per_socket}\n"
            f"apicid\t\t: {c.x2apic_id}\n"
            f"initial apicid\t: {c.x2apic_id}\n"
            "fpu\t\t: yes\n"
            "fpu_exception\t: yes\n"
            "cpuid level\t: 32\n"
            "wp\t\t: yes\n"
            f"flags\t\t: {' '.join(_CPU_FLAGS)}\n"
            f"bugs\t\t: {' '.join(bugs)}\n"
            "bogomips\t: 4000.00\n"
            "clflush size\t: 64\n"
            "cache_alignment\t: 64\n"
            "address sizes\t: 52 bits physical, 57 bits virtual\n"
            "power management:\n\n"
        )
    return "".join(out)


# ---- /dev/cpu/N/msr ---------------------------------------------------------------------------------


def msr_read(host: EmulatedHost, reg: int, size: int) -> bytes | int:
    """msr_read() (arch/x86/kernel/msr.c): whole 8-byte reads of the MSR at the file offset; an MSR
    the model does not have faults (-EIO), as rdmsr_safe_on_cpu does on hardware."""
    if size % 8:
        return -errno.EINVAL
    fw = host.fw
    values = {
        msr.MSR_IA32_MKTME_KEYID_PARTITIONING: msr.keyid_partitioning(0, host.machine.num_private_hkids),
        msr.MSR_IA32_SEAMRR_PHYS_BASE: fw.seamrr_base & msr.SEAMRR_ADDR_BITS,
        msr.MSR_IA32_SEAMRR_PHYS_MASK: msr.seamrr_mask(fw.seamrr_size),
    }
    if reg not in values:
        return -errno.EIO
    return values[reg].to_bytes(8, "little") * (size // 8)


# ---- the tree -------------------------------------------------------------------------------------


def _split(path: str) -> list[str]:
    if not path.startswith("/"):
        raise _err(errno.EINVAL, path)
    return [p for p in path.split("/") if p and p != "."]


class SysfsTree:
    """The file tree of one emulated host. Public methods may be called from any thread."""

    def __init__(self, runtime: MachineRuntime) -> None:
        """Build the tree; runs on the machine thread (`runtime.call(SysfsTree, runtime)`)."""
        from tdxseam.kernel.tdx_host import tdx_host_init

        self.rt = runtime
        self.host: EmulatedHost = runtime.host
        self._ino = 0
        self._now = time.time_ns()
        self._files: dict[int, OpenFile] = {}
        self._next_fh = 1
        self.root = self._dir("")
        k = self.host.kernel
        self.dev = runtime.run_kernel(tdx_host_init, k, name="tdx_host_init")
        self.fw = self.dev.fw_upload
        self._build()

    # ---- construction -----------------------------------------------------------------------

    def _new(self, name: str, kind: Kind, mode: int, **kw: Any) -> Node:
        self._ino += 1
        return Node(name, kind, mode, ino=self._ino, mtime_ns=self._now, atime_ns=self._now,
                    ctime_ns=self._now, **kw)

    def _dir(self, name: str) -> Node:
        return self._new(name, Kind.DIR, 0o755)

    def _mkdirs(self, path: str) -> Node:
        node = self.root
        for part in _split(path):
            nxt = node.children.get(part)
            if nxt is None:
                nxt = node.children[part] = self._dir(part)
            node = nxt
        return node

    def _add(self, path: str, kind: Kind, mode: int, **kw: Any) -> Node:
        parent, _, name = path.rpartition("/")
        d = self._mkdirs(parent)
        node = d.children[name] = self._new(name, kind, mode, **kw)
        return node

    def _build(self) -> None:
        dev, fw, host = self.dev, self.fw, self.host
        for name, mode in dev.attributes().items():
            self._add(f"{TDX_HOST}/{name}", Kind.ATTR, mode, show=getattr(dev, f"{name}_show"))
        self._mkdirs("/sys/class/firmware")  # the firmware class exists with or without devices
        if fw is not None:
            # drivers/base/firmware_loader/sysfs.c + sysfs_upload.c: the fw_upload device
            self._add(f"{TDX_MODULE}/loading", Kind.ATTR, 0o644, show=fw.loading_show,
                      store=fw.loading_store)
            self._add(f"{TDX_MODULE}/data", Kind.BIN, 0o644, bin_read=fw.data_read,
                      bin_write=lambda off, chunk, cred: fw.data_write(
                          off, chunk, cap_sys_rawio=cred.capable(CAP_SYS_RAWIO)))
            self._add(f"{TDX_MODULE}/status", Kind.ATTR, 0o444, show=fw.status_show)
            self._add(f"{TDX_MODULE}/error", Kind.ATTR, 0o444, show=fw.error_show)
            self._add(f"{TDX_MODULE}/remaining_size", Kind.ATTR, 0o444, show=fw.remaining_size_show)
            self._add(f"{TDX_MODULE}/cancel", Kind.ATTR, 0o200, store=fw.cancel_store)
            self._add(CLASS_TDX_MODULE, Kind.LINK, 0o777,
                      target="../../devices/faux/tdx_host/firmware/tdx_module")
        m = host.machine

        def online() -> str:
            return cpulist([c.id for c in m.cpus if c.online]) + "\n"

        def present() -> str:
            return cpulist([c.id for c in m.cpus]) + "\n"

        self._add("/" + abi.CPU_ONLINE, Kind.ATTR, 0o444, show=online)
        self._add("/" + abi.CPU_PRESENT, Kind.ATTR, 0o444, show=present)
        self._add("/" + abi.CPU_POSSIBLE, Kind.ATTR, 0o444, show=present)
        self._add("/" + abi.CPUINFO, Kind.PROC, 0o444, show=lambda: cpuinfo_text(host))
        # not sysfs: the kernel log, so log readers (tdxseam doctor/explain) find it under the root
        self._add("/" + abi.DMESG, Kind.PROC, 0o444, show=host.kernel.dmesg_dump)
        # the msr driver's devices (root only), as regular files here: an 8-byte read at an offset
        # reads that MSR of that CPU
        for c in m.cpus:
            self._add("/" + abi.MSR_DEVICE.format(cpu=c.id), Kind.BIN, 0o600,
                      bin_read=lambda off, size: msr_read(host, off, size))

    # ---- lookup -------------------------------------------------------------------------------

    def _walk(self, path: str, cred: Cred, *, follow: bool = True) -> tuple[Node, Node, str]:
        """(node, parent directory, canonical path); every directory passed needs search (x)."""
        parts = _split(path)
        stack: list[Node] = [self.root]
        names: list[str] = []
        links = 0
        i = 0
        while i < len(parts):
            part = parts[i]
            cur = stack[-1]
            if not cur.is_dir:
                raise _err(errno.ENOTDIR, path)
            generic_permission(cred, cur, MAY_EXEC)
            if part == "..":
                if len(stack) > 1:
                    stack.pop()
                    names.pop()
                i += 1
                continue
            nxt = cur.children.get(part)
            if nxt is None:
                raise _err(errno.ENOENT, path)
            last = i == len(parts) - 1
            if nxt.kind is Kind.LINK and (follow or not last):
                links += 1
                if links > MAX_SYMLINKS:
                    raise _err(errno.ELOOP, path)
                target = _split(nxt.target) if nxt.target.startswith("/") else \
                    [p for p in nxt.target.split("/") if p and p != "."]
                if nxt.target.startswith("/"):
                    stack, names = [self.root], []
                parts = target + parts[i + 1:]
                i = 0
                continue
            stack.append(nxt)
            names.append(part)
            i += 1
        parent = stack[-2] if len(stack) > 1 else self.root
        return stack[-1], parent, "/" + "/".join(names)

    def _stat(self, node: Node) -> Stat:
        nlink = 2 + sum(1 for c in node.children.values() if c.is_dir) if node.is_dir else 1
        return Stat(st_mode=node.type_bits | node.mode, st_ino=node.ino, st_nlink=nlink,
                    st_uid=node.uid, st_gid=node.gid, st_size=node.size,
                    st_atime_ns=node.atime_ns, st_mtime_ns=node.mtime_ns, st_ctime_ns=node.ctime_ns)

    # ---- kernel callbacks on a simulated CPU ---------------------------------------------------

    def _kcall(self, node: Node, fn: Callable[..., Any], *args: Any) -> Any:
        return self.rt.run_kernel(fn, *args, name=f"sysfs:{node.name}")

    # ---- operations (machine thread) ---------------------------------------------------------------

    def _op_stat(self, path: str, cred: Cred, follow: bool) -> Stat:
        node, _, _ = self._walk(path, cred, follow=follow)
        return self._stat(node)

    def _op_listdir(self, path: str, cred: Cred) -> list[str]:
        node, _, _ = self._walk(path, cred)
        if not node.is_dir:
            raise _err(errno.ENOTDIR, path)
        generic_permission(cred, node, MAY_READ)
        return sorted(node.children)

    def _op_scandir(self, path: str, cred: Cred) -> list[tuple[str, Stat]]:
        node, parent, _ = self._walk(path, cred)
        if not node.is_dir:
            raise _err(errno.ENOTDIR, path)
        generic_permission(cred, node, MAY_READ)
        out = [(".", self._stat(node)), ("..", self._stat(parent))]
        out += [(name, self._stat(node.children[name])) for name in sorted(node.children)]
        return out

    def _op_readlink(self, path: str, cred: Cred) -> str:
        node, _, _ = self._walk(path, cred, follow=False)
        if node.kind is not Kind.LINK:
            raise _err(errno.EINVAL, path)
        return node.target

    def _op_open(self, path: str, flags: int, cred: Cred) -> int:
        acc = flags & os.O_ACCMODE
        try:
            node, _, canon = self._walk(path, cred, follow=not flags & os.O_NOFOLLOW)
        except FileNotFoundError:
            if not flags & os.O_CREAT:
                raise
            parent_path = path.rstrip("/").rpartition("/")[0] or "/"
            parent, _, _ = self._walk(parent_path, cred)
            if not parent.is_dir:
                raise _err(errno.ENOTDIR, path) from None
            generic_permission(cred, parent, MAY_WRITE | MAY_EXEC)
            raise _err(errno.EACCES, path) from None  # no ->create in sysfs or procfs
        if flags & os.O_CREAT and flags & os.O_EXCL:
            raise _err(errno.EEXIST, path)
        if node.kind is Kind.LINK:
            raise _err(errno.ELOOP, path)  # O_NOFOLLOW on a link
        if node.is_dir:
            if acc != os.O_RDONLY or flags & os.O_TRUNC:
                raise _err(errno.EISDIR, path)
            generic_permission(cred, node, MAY_READ)
        elif flags & getattr(os, "O_DIRECTORY", 0):
            raise _err(errno.ENOTDIR, path)
        want_read = acc in (os.O_RDONLY, os.O_RDWR)
        want_write = acc in (os.O_WRONLY, os.O_RDWR) or bool(flags & os.O_TRUNC)
        mask = (MAY_READ if want_read else 0) | (MAY_WRITE if want_write else 0)
        if mask:
            generic_permission(cred, node, mask)  # the VFS (may_open)
        if node.kind in (Kind.ATTR, Kind.BIN):
            # kernfs_fop_open: the mode must allow it and the attribute must implement it
            if want_write and acc != os.O_RDONLY and (not node.mode & 0o222 or not node.writable):
                raise _err(errno.EACCES, path)
            if want_read and (not node.mode & 0o444 or not node.readable):
                raise _err(errno.EACCES, path)
        fh = self._next_fh
        self._next_fh += 1
        self._files[fh] = OpenFile(node, canon, flags, cred)
        return fh

    def _file(self, fh: int) -> OpenFile:
        f = self._files.get(fh)
        if f is None:
            raise _err(errno.EBADF)
        return f

    def _show(self, f: OpenFile) -> bytes:
        ret = self._kcall(f.node, f.node.show)
        if isinstance(ret, int):
            if ret < 0:
                raise _err(-ret, f.path)
            ret = ""
        data = ret.encode("latin-1", "replace")
        return data[:PAGE_SIZE] if f.node.kind is Kind.ATTR else data

    def _op_read(self, fh: int, offset: int, size: int) -> bytes:
        f = self._file(fh)
        if f.node.is_dir:
            raise _err(errno.EISDIR, f.path)
        if not f.can_read:
            raise _err(errno.EBADF, f.path)
        if offset < 0 or size < 0:
            raise _err(errno.EINVAL, f.path)
        if size == 0:
            return b""
        node = f.node
        if node.kind is Kind.BIN:
            size = min(size, PAGE_SIZE)  # kernfs_file_read_iter
            ret = self._kcall(node, node.bin_read, offset, size)
            if isinstance(ret, int):
                raise _err(-ret, f.path)
            return ret
        # seq_file: a read at offset 0, or anywhere but where the last one ended, starts over
        if f.text is None or offset == 0 or offset != f.text_end:
            f.text = self._show(f)
        chunk = f.text[offset:offset + size]
        f.text_end = offset + len(chunk)
        return chunk

    def _op_write(self, fh: int, offset: int, data: bytes) -> int:
        f = self._file(fh)
        if not f.can_write:
            raise _err(errno.EBADF, f.path)
        node = f.node
        if node.kind is Kind.PROC:
            raise _err(errno.EIO, f.path)  # pde_write() without proc_write
        if offset < 0:
            raise _err(errno.EINVAL, f.path)
        chunk = bytes(data[:PAGE_SIZE])  # kernfs_fop_write_iter
        if not chunk:
            return 0
        if node.kind is Kind.BIN:
            ret = self._kcall(node, node.bin_write, offset, chunk, f.cred)
        else:
            # sysfs_kf_write: the buffer as a NUL-terminated string; the offset is ignored
            ret = self._kcall(node, node.store, chunk.decode("latin-1"))
        if ret < 0:
            raise _err(-ret, f.path)
        return min(ret, len(chunk))

    def _op_release(self, fh: int) -> None:
        self._files.pop(fh, None)

    def _op_truncate(self, path: str, length: int, cred: Cred, fh: int | None) -> None:
        if length < 0:
            raise _err(errno.EINVAL, path)
        if fh is not None and fh in self._files:
            f = self._files[fh]
            if not f.can_write:
                raise _err(errno.EINVAL, path)
            node = f.node
        else:
            node, _, _ = self._walk(path, cred)
            if node.is_dir:
                raise _err(errno.EISDIR, path)
            generic_permission(cred, node, MAY_WRITE)
        if node.is_dir:
            raise _err(errno.EISDIR, path)
        # kernfs_iop_setattr / proc_notify_change: "this ignores size changes"
        node.mtime_ns = node.ctime_ns = time.time_ns()

    def _op_chmod(self, path: str, mode: int, cred: Cred) -> None:
        node, _, _ = self._walk(path, cred)
        if cred.uid != node.uid and not cred.capable(CAP_FOWNER):
            raise _err(errno.EPERM, path)
        node.mode = mode & 0o7777
        node.ctime_ns = time.time_ns()

    def _op_chown(self, path: str, uid: int, gid: int, cred: Cred, follow: bool) -> None:
        node, _, _ = self._walk(path, cred, follow=follow)
        new_uid = node.uid if uid in (-1, 0xFFFFFFFF) else uid
        new_gid = node.gid if gid in (-1, 0xFFFFFFFF) else gid
        if not cred.capable(CAP_CHOWN):
            if new_uid != node.uid or cred.uid != node.uid:
                raise _err(errno.EPERM, path)
            if new_gid != node.gid and not cred.in_group(new_gid):
                raise _err(errno.EPERM, path)
        node.uid, node.gid = new_uid, new_gid
        node.ctime_ns = time.time_ns()

    def _op_utimens(self, path: str, times: tuple[int, int] | None, cred: Cred) -> None:
        node, _, _ = self._walk(path, cred)
        owner = cred.uid == node.uid or cred.capable(CAP_FOWNER)
        if times is None:
            if not owner:
                generic_permission(cred, node, MAY_WRITE)
            now = time.time_ns()
            node.atime_ns = node.mtime_ns = now
        else:
            if not owner:
                raise _err(errno.EPERM, path)
            node.atime_ns, node.mtime_ns = times
        node.ctime_ns = time.time_ns()

    def _op_access(self, path: str, amode: int, cred: Cred) -> None:
        node, _, _ = self._walk(path, cred)
        mask = ((MAY_READ if amode & os.R_OK else 0) | (MAY_WRITE if amode & os.W_OK else 0)
                | (MAY_EXEC if amode & os.X_OK else 0))
        if mask:
            generic_permission(cred, node, mask)

    def _op_namespace(self, op: str, path: str, cred: Cred, must_exist: bool) -> None:
        """mkdir, mknod, unlink, rmdir, rename, link, symlink: sysfs and procfs offer none."""
        parent_path = path.rstrip("/").rpartition("/")[0] or "/"
        parent, _, _ = self._walk(parent_path, cred)
        if not parent.is_dir:
            raise _err(errno.ENOTDIR, path)
        name = path.rstrip("/").rpartition("/")[2]
        exists = name in parent.children
        if must_exist and not exists:
            raise _err(errno.ENOENT, path)
        if not must_exist and exists:
            raise _err(errno.EEXIST, path)
        generic_permission(cred, parent, MAY_WRITE | MAY_EXEC)
        raise _err(errno.EPERM, path)

    def _op_read_file(self, path: str, cred: Cred) -> bytes:
        fh = self._op_open(path, os.O_RDONLY, cred)
        try:
            out = bytearray()
            while True:
                chunk = self._op_read(fh, len(out), 1 << 20)
                if not chunk:
                    return bytes(out)
                out += chunk
        finally:
            self._op_release(fh)

    def _op_write_file(self, path: str, data: bytes, cred: Cred, offset: int) -> int:
        """What `cat file > path` does: open with O_TRUNC, write until everything is taken."""
        fh = self._op_open(path, os.O_WRONLY | os.O_TRUNC, cred)
        try:
            done = 0
            while done < len(data):
                n = self._op_write(fh, offset + done, data[done:done + (1 << 20)])
                if n <= 0:
                    break
                done += n
            return done
        finally:
            self._op_release(fh)

    # ---- the public interface: any thread, each call one request to the machine --------------

    def stat(self, path: str, cred: Cred = ROOT, *, follow: bool = True) -> Stat:
        return self.rt.call(self._op_stat, path, cred, follow)

    def lstat(self, path: str, cred: Cred = ROOT) -> Stat:
        return self.rt.call(self._op_stat, path, cred, False)

    def exists(self, path: str, cred: Cred = ROOT) -> bool:
        try:
            self.stat(path, cred)
        except OSError:
            return False
        return True

    def listdir(self, path: str, cred: Cred = ROOT) -> list[str]:
        return self.rt.call(self._op_listdir, path, cred)

    def scandir(self, path: str, cred: Cred = ROOT) -> list[tuple[str, Stat]]:
        """Directory entries with their lstat, "." and ".." first (what getdents carries)."""
        return self.rt.call(self._op_scandir, path, cred)

    def readlink(self, path: str, cred: Cred = ROOT) -> str:
        return self.rt.call(self._op_readlink, path, cred)

    def open(self, path: str, flags: int = os.O_RDONLY, cred: Cred = ROOT) -> int:
        return self.rt.call(self._op_open, path, flags, cred)

    def read_fh(self, fh: int, offset: int, size: int) -> bytes:
        return self.rt.call(self._op_read, fh, offset, size)

    def write_fh(self, fh: int, offset: int, data: bytes) -> int:
        return self.rt.call(self._op_write, fh, offset, data)

    def release(self, fh: int) -> None:
        self.rt.call(self._op_release, fh)

    def read(self, path: str, offset: int = 0, size: int = 1 << 20, cred: Cred = ROOT) -> bytes:
        """One read(2) on a freshly opened file."""
        def op() -> bytes:
            fh = self._op_open(path, os.O_RDONLY, cred)
            try:
                return self._op_read(fh, offset, size)
            finally:
                self._op_release(fh)
        return self.rt.call(op)

    def write(self, path: str, offset: int, data: bytes, cred: Cred = ROOT) -> int:
        """One write(2) on a file freshly opened O_WRONLY (no O_TRUNC): may be short."""
        def op() -> int:
            fh = self._op_open(path, os.O_WRONLY, cred)
            try:
                return self._op_write(fh, offset, data)
            finally:
                self._op_release(fh)
        return self.rt.call(op)

    def read_file(self, path: str, cred: Cred = ROOT) -> bytes:
        """Read to EOF, as `cat` does."""
        return self.rt.call(self._op_read_file, path, cred)

    def read_text(self, path: str, cred: Cred = ROOT) -> str:
        return self.read_file(path, cred).decode("latin-1")

    def write_file(self, path: str, data: bytes, cred: Cred = ROOT, *, offset: int = 0) -> int:
        """Write everything, as `cat image > path` does (O_TRUNC, then write until done)."""
        return self.rt.call(self._op_write_file, path, bytes(data), cred, offset)

    def write_text(self, path: str, text: str, cred: Cred = ROOT) -> int:
        return self.write_file(path, text.encode("latin-1"), cred)

    def truncate(self, path: str, length: int = 0, cred: Cred = ROOT, fh: int | None = None) -> None:
        self.rt.call(self._op_truncate, path, length, cred, fh)

    def chmod(self, path: str, mode: int, cred: Cred = ROOT) -> None:
        self.rt.call(self._op_chmod, path, mode, cred)

    def chown(self, path: str, uid: int, gid: int, cred: Cred = ROOT, *, follow: bool = True) -> None:
        self.rt.call(self._op_chown, path, uid, gid, cred, follow)

    def utimens(self, path: str, times: tuple[int, int] | None = None, cred: Cred = ROOT) -> None:
        self.rt.call(self._op_utimens, path, times, cred)

    def access(self, path: str, amode: int, cred: Cred = ROOT) -> None:
        self.rt.call(self._op_access, path, amode, cred)

    def refuse(self, op: str, path: str, cred: Cred = ROOT) -> None:
        """mkdir, mknod, symlink, link (at a new name `path`) or unlink, rmdir, rename (of an
        existing `path`): sysfs has no such inode operations, so each ends in an error."""
        must_exist = op in ("unlink", "rmdir", "rename")
        self.rt.call(self._op_namespace, op, path, cred, must_exist)

    def statfs(self) -> dict[str, int]:
        return {"f_type": SYSFS_MAGIC, "f_bsize": PAGE_SIZE, "f_frsize": PAGE_SIZE, "f_blocks": 0,
                "f_bfree": 0, "f_bavail": 0, "f_files": 0, "f_ffree": 0, "f_namemax": 255}

    def walk(self, cred: Cred = ROOT) -> list[tuple[str, Stat]]:
        """Every path and its lstat, depth first: for listings and tests."""
        def op() -> list[tuple[str, Stat]]:
            out: list[tuple[str, Stat]] = []

            def visit(node: Node, path: str) -> None:
                out.append((path or "/", self._stat(node)))
                for name in sorted(node.children):
                    visit(node.children[name], f"{path}/{name}")
            visit(self.root, "")
            return out
        return self.rt.call(op)
