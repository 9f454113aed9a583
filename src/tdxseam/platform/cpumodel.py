"""What the emulated CPU answers to CPUID, RDMSR and VMREAD of its VMX capabilities.

The Python model of the TDX module never asks: it is written against the machine's facts directly.
A real TDX module binary asks hundreds of questions during TDH.SYS.INIT and LP.INIT and refuses to
run on a CPU whose answers it does not like (TDX_INCORRECT_CPUID_VALUE, TDX_INCORRECT_MSR_VALUE,
TDX_INVALID_WBINVD_SCOPE, ...). This file is those answers, as data, for one machine.

Where the answer is a fact the rest of `platform` already holds, it is derived from it, never
restated: CPUID.1.EAX is each CPU's `cpuid_1_eax`, the topology leaves (1, 4, 0xB, 0x1F) follow
`ncpus` and `sockets`, the x2APIC ID is the CPU's, IA32_MKTME_KEYID_PARTITIONING follows
`num_private_hkids`, IA32_SEAMRR_PHYS_BASE/MASK follow the SEAM range, and the CMRs are the
memory's host window. The rest describes one Sapphire-Rapids-class part with TDX enabled; each
value was forced by a check one of Intel's releases makes (noted where the check is not obvious).

A question the table has no answer for is not guessed: `answer_cpuid`/`answer_msr` return None and
the caller reports what is missing. Two switches show that a module depends on an answer:
`cleared` answers zeros instead (the module judges the value), `removed` takes the answer away (the
platform model is incomplete). Keys are "cpuid:LEAF" / "cpuid:LEAF.SUBLEAF" and "msr:INDEX", hex.
"""

from __future__ import annotations

from dataclasses import dataclass, field

# Topology: two threads per core (SMT shift 1); packages hold a power of two of LPs.
THREADS_PER_CORE = 2
MAX_PHYS_ADDR_BITS = 52  # CPUID.0x80000008.EAX[7:0]; 1.5.01 and 1.5.05 insist on 52
MAX_LIN_ADDR_BITS = 57  # LA57 (CPUID.7.0.ECX[16])
KEYID_BITS = 6  # TME_ACTIVATE[35:32]: HKIDs in PA bits 51:46
HKID_SHIFT = MAX_PHYS_ADDR_BITS - KEYID_BITS
MAX_BASIC_LEAF = 0x20
MAX_EXTENDED_LEAF = 0x80000008

# Leaves whose answer depends on ECX; the others ignore it.
SUBLEAF_LEAVES = frozenset({0x4, 0x7, 0xB, 0xD, 0x14, 0x18, 0x1D, 0x1F, 0x20, 0x23})

_GENUINE_INTEL = (0x756E6547, 0x6C65746E, 0x49656E69)  # EBX, ECX, EDX of leaf 0
_ALL_ALLOWED1 = 0xFFFF_FFFF_0000_0000  # a VMX control MSR: no bit forced to 0, every bit allowed 1

# Fixed answers: (leaf, subleaf or None) -> (EAX, EBX, ECX, EDX). Topology-dependent leaves are
# computed in `answer_cpuid` and absent here.
_CPUID: dict[tuple[int, int | None], tuple[int, int, int, int]] = {
    (0x0, None): (MAX_BASIC_LEAF, *_GENUINE_INTEL),
    (0x2, None): (0x1, 0, 0, 0x2C307D),
    (0x3, None): (0, 0, 0, 0),
    (0x5, None): (0, 0, 0x3, 0),
    (0x6, None): (0x4, 0, 0, 0),
    # TDX's required features (AVX-512, PKS, TSX ctl, ...): the values releases report as required
    (0x7, 0): (0x2, 0x219C27CB, 0x99010008, 0xFC080400),
    (0x7, 1): (0, 0, 0, 0),
    (0x7, 2): (0, 0, 0, 0x17),
    (0x8, None): (0, 0, 0, 0),
    (0xA, None): (0x805, 0, 0, 0x8000),  # architectural PMU v5
    (0xD, 0): (0x2E7, 0xA88, 0xA88, 0),
    (0xD, 1): (0xF, 0, 0x1800, 0),
    (0xD, 2): (0x100, 0x240, 0, 0),
    (0xD, 5): (0x40, 0x440, 0, 0),
    (0xD, 6): (0x200, 0x480, 0, 0),
    (0xD, 7): (0x400, 0x680, 0, 0),
    (0xD, 8): (0x80, 0, 1, 0),  # PT state: supervisor (XSS)
    (0xD, 9): (0x8, 0xA80, 0, 0),
    (0xD, 0xB): (0x10, 0, 1, 0),  # CET_U
    (0xD, 0xC): (0x18, 0, 1, 0),  # CET_S
    (0xE, None): (0, 0, 0, 0),
    (0x11, None): (0, 0, 0, 0),
    (0x12, None): (0, 0, 0, 0),
    (0x13, None): (0, 0, 0, 0),
    (0x14, 0): (0x1, 0xA88, 0xA88, 0),
    (0x14, 1): (0x5, 0, 0, 0),
    (0x15, None): (0x2, 0xBC, 25_000_000, 0),  # TSC/crystal ratio, 25 MHz crystal
    (0x19, None): (0, 0, 0, 0),
    (0x1A, None): (0, 0, 0, 0),
    (0x1C, None): (0x4000000F, 0x7, 0x7, 0),
    (0x1E, None): (0, 0, 0, 0),
    (0x20, None): (0, 0, 0, 0),
    (0x22, None): (0, 0, 0, 0),
    (0x80000000, None): (MAX_EXTENDED_LEAF, *_GENUINE_INTEL),
    (0x80000001, None): (0x80660, 0, 0x121, 0x2C100800),  # ECX[8] PREFETCHW required
    (0x80000002, None): (0x65746E49, 0x6558206C, 0x50206E6F, 0x65636F72),  # "Intel Xeon Proce"
    (0x80000006, None): (0, 0x42004200, 0x2008140, 0),
    (0x80000007, None): (0, 0, 0, 0x100),  # EDX[8] invariant TSC required
    (0x80000008, None): (MAX_LIN_ADDR_BITS << 8 | MAX_PHYS_ADDR_BITS, 0x200, 0, 0),
}
# Subleaf-indexed leaves past their last valid subleaf answer zeros (EAX..EDX), as hardware does.
_SUBLEAF_LAST = {0x4: 3, 0x7: 2, 0xD: 0xC, 0x14: 1}

# Architectural MSR numbers the module reads (names after the SDM).
IA32_TIME_STAMP_COUNTER_ADJUST = 0x3B
IA32_SPEC_CTRL = 0x48
IA32_MKTME_KEYID_PARTITIONING = 0x87
IA32_WBINVDP = 0x98
IA32_WBNOINVDP = 0x99
IA32_PLATFORM_INFO_LIKE = (0xBC, 0xBD)
IA32_CORE_CAPABILITIES = 0xCF
IA32_MTRRCAP = 0xFE
IA32_ARCH_CAPABILITIES = 0x10A
IA32_MISC_ENABLE = 0x1A0
IA32_SMRR_PHYSBASE = 0x1F2
IA32_SMRR_PHYSMASK = 0x1F3
IA32_DEBUGCTL = 0x1D9
IA32_PERF_CAPABILITIES = 0x345
IA32_VMX_BASIC = 0x480
IA32_VMX_MISC = 0x485
IA32_TME_CAPABILITY = 0x981
IA32_TME_ACTIVATE = 0x982
IA32_XFD = 0x1C4
IA32_SEAMRR_PHYS_BASE = 0x1400
IA32_SEAMRR_PHYS_MASK = 0x1401

_ARCH_CAPABILITIES = sum(1 << b for b in (0, 1, 3, 5, 6, 8, 10, 11, 12, 13, 14, 15, 21))

_MSRS: dict[int, int] = {
    IA32_TIME_STAMP_COUNTER_ADJUST: 0,
    IA32_SPEC_CTRL: 0,
    IA32_WBINVDP: 16,  # sub-blocks WBINVDP / WBNOINVDP walk
    IA32_WBNOINVDP: 16,
    0xBC: 1,
    0xBD: 1,
    IA32_CORE_CAPABILITIES: 0,
    # MTRRCAP: 10 variable MTRRs, fixed, WC, SMRR (bit 11), SMRR lock (bit 14), SEAMRR (bit 15);
    # without SMRR lock the module answers TDX_SMRR_LOCK_NOT_SUPPORTED.
    IA32_MTRRCAP: 0xCD0A,
    IA32_ARCH_CAPABILITIES: _ARCH_CAPABILITIES,
    IA32_MISC_ENABLE: 0x80 | 0x1000,
    IA32_DEBUGCTL: 0,
    IA32_SMRR_PHYSBASE: 0x7F000006,
    IA32_SMRR_PHYSMASK: 0xFF800800 | (1 << 10),  # valid + locked
    IA32_PERF_CAPABILITIES: 0x3000,
    # VMX_BASIC: revision 4, VMCS size 0x400 (1.5.01 rejects more than 2 KiB), WB, INS/OUTS
    # info (54), TRUE controls (55); bit 60 off would mean SEAMRET clears the VMCS pointer.
    IA32_VMX_BASIC: 0x00D8_0400_0000_0004,
    0x481: _ALL_ALLOWED1, 0x482: _ALL_ALLOWED1, 0x483: _ALL_ALLOWED1, 0x484: _ALL_ALLOWED1,
    IA32_VMX_MISC: 0x6004C1E5,
    0x486: 0x80000021, 0x487: 0xFFFFFFFF, 0x488: 0x2000, 0x489: 0x7FFFFF,
    0x48B: _ALL_ALLOWED1, 0x48C: 0xF0106F34141, 0x48D: _ALL_ALLOWED1, 0x48E: _ALL_ALLOWED1,
    0x48F: _ALL_ALLOWED1, 0x490: _ALL_ALLOWED1, 0x491: 0, 0x492: 0xFF, 0x493: 0,
    # TME: AES-XTS-128 with integrity, KEYID_BITS key-ID bits, enabled and locked
    IA32_TME_CAPABILITY: 0x3 | (KEYID_BITS << 32) | (63 << 36),
    IA32_TME_ACTIVATE: 1 | 2 | (1 << 4) | (KEYID_BITS << 32) | (1 << 36) | (0x3 << 48),
}


def tdx_keyid_start(private_hkids: int) -> int:
    """The first TDX private KeyID: KeyID 0 is TME's, MKTME KeyIDs come next, TDX's last."""
    return (1 << KEYID_BITS) - private_hkids


def _ceil_log2(n: int) -> int:
    return max(n - 1, 0).bit_length()


@dataclass(frozen=True)
class CpuModel:
    """The answers of one machine's CPUs. Build it with `CpuModel.of(machine, seamrr_base, size)`."""

    ncpus: int
    sockets: int
    cpuid_1_eax: tuple[int, ...]  # per CPU
    seamrr_base: int
    seamrr_size: int
    private_hkids: int
    cmrs: tuple[tuple[int, int], ...]
    cleared: frozenset[str] = field(default_factory=frozenset)  # answer zeros
    removed: frozenset[str] = field(default_factory=frozenset)  # no answer

    @classmethod
    def of(cls, machine, seamrr_base: int, seamrr_size: int, cleared: frozenset[str] = frozenset(),
           removed: frozenset[str] = frozenset()) -> CpuModel:
        return cls(machine.ncpus, machine.sockets, tuple(c.cpuid_1_eax for c in machine.cpus),
                   seamrr_base, seamrr_size, machine.num_private_hkids, machine.mem.cmrs(),
                   frozenset(cleared), frozenset(removed))

    @staticmethod
    def _keys(kind: str, n: int, sub: int | None = None) -> tuple[str, ...]:
        return (f"{kind}:{n:#x}",) if sub is None else (f"{kind}:{n:#x}", f"{kind}:{n:#x}.{sub:#x}")

    # ---- topology --------------------------------------------------------------------------

    @property
    def lps_per_package(self) -> int:
        return -(-self.ncpus // self.sockets)

    @property
    def smt_shift(self) -> int:
        # the SMT level is always there, even with one LP: the module derives the package's
        # WBINVD scope from it (a shift of 0 gives TDX_INVALID_WBINVD_SCOPE)
        return _ceil_log2(THREADS_PER_CORE)

    @property
    def package_shift(self) -> int:
        return max(_ceil_log2(self.lps_per_package), self.smt_shift)

    def x2apic_id(self, lp: int) -> int:
        per = self.lps_per_package
        return (lp // per) << self.package_shift | (lp % per)

    @property
    def mktme_keys(self) -> int:
        return tdx_keyid_start(self.private_hkids) - 1

    # ---- answers ---------------------------------------------------------------------------

    def answer_cpuid(self, leaf: int, sub: int, lp: int) -> tuple[int, int, int, int] | None:
        keys = self._keys("cpuid", leaf, sub if leaf in SUBLEAF_LEAVES else None)
        if any(k in self.removed for k in keys):
            return None
        ans = self._cpuid(leaf, sub, lp)
        if ans is not None and any(k in self.cleared for k in keys):
            return (0, 0, 0, 0)
        return ans

    def _cpuid(self, leaf: int, sub: int, lp: int) -> tuple[int, int, int, int] | None:
        apic = self.x2apic_id(lp)
        smt, pkg = self.smt_shift, self.package_shift
        if leaf == 0x1:
            per_pkg = 1 << pkg
            return (self.cpuid_1_eax[lp], 0x00000800 | (per_pkg << 16) | (apic & 0xFF) << 24,
                    0xCFFAA217, 0x1FABFBFF)
        if leaf == 0x4:
            cores = (1 << (pkg - smt)) - 1
            shared_core, shared_pkg = (1 << smt) - 1, (1 << pkg) - 1
            caches = {0: (0x121, shared_core, 0x01C0003F, 0x3F, 0),
                      1: (0x122, shared_core, 0x01C0003F, 0x3F, 0),
                      2: (0x143, shared_core, 0x03C0003F, 0x3FF, 0),
                      3: (0x163, shared_pkg, 0x03C0003F, 0x3FFF, 0x4)}
            if sub in caches:
                t, share, b, c, d = caches[sub]
                return (cores << 26 | share << 14 | t, b, c, d)
            return (0, 0, 0, 0)
        if leaf in (0xB, 0x1F):
            levels = {0: (smt, 1 << smt, 0x100), 1: (pkg, 1 << pkg, 0x201)}
            if sub in levels:
                shift, count, ecx = levels[sub]
                return (shift, count, ecx | sub, apic)
            return (0, 0, sub & 0xFF, apic)  # past the package level: an invalid level
        if leaf in (0x18, 0x1D, 0x20, 0x21, 0x23):
            return (0, 0, 0, 0)  # no address-translation, tile, or newer leaves described
        if leaf == 0xD and (leaf, sub) not in _CPUID:
            return (0, 0, 0, 0)  # an XSAVE component this CPU does not have
        for k in ((leaf, sub), (leaf, None)):
            if k in _CPUID:
                return _CPUID[k]
        if leaf in _SUBLEAF_LAST and sub > _SUBLEAF_LAST[leaf]:
            return (0, 0, 0, 0)
        return None

    def answer_msr(self, index: int) -> int | None:
        if self._keys("msr", index)[0] in self.removed:
            return None
        ans = self._msr(index)
        return 0 if ans is not None and self._keys("msr", index)[0] in self.cleared else ans

    def _msr(self, index: int) -> int | None:
        if index == IA32_SEAMRR_PHYS_BASE:
            return self.seamrr_base | 1  # configured
        if index == IA32_SEAMRR_PHYS_MASK:
            mask = ((1 << 46) - 1) & ~(self.seamrr_size - 1)
            return mask | (1 << 11) | (1 << 10)  # valid, locked
        if index == IA32_MKTME_KEYID_PARTITIONING:
            return self.mktme_keys | self.private_hkids << 32
        return _MSRS.get(index)
