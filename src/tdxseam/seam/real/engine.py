"""One TDX module instance running on an emulated x86-64 CPU (unicorn), entered by SEAMCALL.

What the P-SEAMLDR model leaves in SEAM memory (the code pages, SYS_INFO_TABLE, kept handoff
pages, all at the addresses `seam.layout` computed) is copied into the emulator's physical memory;
the engine then does the rest of what Intel's P-SEAMLDR does in SEAM memory and the model does
not: the ELF relocation, the IDT fix-up, the 4-level SEAM page tables and one SEAM VMCS per LP
with the host state intel/tdx-loader's seam_vmcs_setup.c writes. A SEAMCALL loads that VMCS's
host state into the CPU, puts the caller's registers in place and runs the module until SEAMRET.

Host memory (the CMRs) is mirrored both ways around each SEAMCALL: the machine's pages are copied
in before it, and the pages the module wrote (a write hook on the CMR range, checked by unicorn in
C) are copied back after it. The handoff area goes back to the machine's memory after the leaves
that write it, so the P-SEAMLDR model can keep it across an install.

Only the addresses of the special instructions (`insns`) carry a Python hook; a block hook counts
instructions and enforces the per-SEAMCALL budget. Key-ID bits in the keyhole's page-table
entries (PA bits 51:46) are more physical address than unicorn's CPU has: the PTE writes are
noted by a write hook on the page-table pool and the bits stripped at the next block (all key IDs
alias the same memory here: nothing is encrypted).
"""

from __future__ import annotations

import random
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from capstone import CS_ARCH_X86, CS_MODE_64, Cs
from capstone import x86_const as cx
from unicorn import (
    UC_ARCH_X86,
    UC_HOOK_BLOCK,
    UC_HOOK_CODE,
    UC_HOOK_INSN_INVALID,
    UC_HOOK_INTR,
    UC_HOOK_MEM_INVALID,
    UC_HOOK_MEM_WRITE,
    UC_MODE_64,
    Uc,
    UcError,
)
from unicorn import x86_const as ux

from tdxseam.formats.page import PAGE_SIZE
from tdxseam.formats.sigstruct import Sigstruct
from tdxseam.platform.cpumodel import HKID_SHIFT, KEYID_BITS, CpuModel
from tdxseam.platform.memory import PhysMem
from tdxseam.seam.layout import (
    LINEAR_BASE_CODE,
    LINEAR_BASE_DATA,
    LINEAR_BASE_KEYEDIT,
    LINEAR_BASE_KEYHOLE,
    LINEAR_BASE_STACK,
    LINEAR_BASE_SYSINFO,
    SeamLayout,
)
from tdxseam.seam.real import elf, insns
from tdxseam.seam.real.errors import BudgetExceeded, MissingPlatformValue, ModuleStopped, RealFirmwareError

DEFAULT_BUDGET = 20_000_000  # instructions per SEAMCALL: the heaviest leaf seen runs ~110k
REG_NAMES = ("rax", "rcx", "rdx", "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")
_UREG = {n: getattr(ux, f"UC_X86_REG_{n.upper()}") for n in
         ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp", "rsp", "r8", "r9", "r10", "r11", "r12",
          "r13", "r14", "r15")}
_HKID_MASK = ((1 << KEYID_BITS) - 1) << HKID_SHIFT
_PA_MASK = 0x000F_FFFF_FFFF_F000
_P, _RW, _US, _A, _D, _PS = 1, 2, 4, 0x20, 0x40, 0x80
_NX = 1 << 63
_FLAGS_VMSUCCEED_CLEAR = 0x1 | 0x4 | 0x10 | 0x40 | 0x80 | 0x800  # CF PF AF ZF SF OF

# Host state of the SEAM VMCS (field encodings, SDM appendix B) and the CPU state it loads.
HOST_CR0, HOST_CR3, HOST_CR4 = 0x6C00, 0x6C02, 0x6C04
HOST_FS_BASE, HOST_GS_BASE, HOST_GDTR_BASE, HOST_IDTR_BASE = 0x6C06, 0x6C08, 0x6C0C, 0x6C0E
HOST_RSP, HOST_RIP, HOST_S_CET, HOST_SSP = 0x6C14, 0x6C16, 0x6C18, 0x6C1A
HOST_IA32_PAT, HOST_IA32_EFER = 0x2C00, 0x2C02
HOST_SELECTORS = {0x0C02: 0x8, 0x0C04: 0x10, 0x0C08: 0x18, 0x0C0A: 0x18, 0x0C0C: 0x20}  # CS SS FS GS TR
CR0_VALUE = 0x80050033  # PE MP ET NE WP AM PG
CR4_RUN = (1 << 3) | (1 << 5) | (1 << 7) | (1 << 9) | (1 << 10) | (1 << 16) | (1 << 18)
CR4_VMCS = CR4_RUN | (1 << 13) | (1 << 20) | (1 << 21) | (1 << 23)  # + VMXE SMEP SMAP CET
EFER_VALUE = (1 << 8) | (1 << 10) | (1 << 11)  # LME LMA NXE
PAT_VALUE = 0x0006060606060606
S_CET_VALUE = 0x15
# Guest (VMM) state of the VM exit a SEAMCALL is, as the module reads it on the way out.
EXIT_REASON_SEAMCALL = 76
SEAMCALL_GUEST_STATE = {0x4402: EXIT_REASON_SEAMCALL, 0x440C: 4, 0x681E: 0x1000, 0x6820: 0x2,
                        0x2802: 0, 0x2808: 0, 0x4824: 0, 0x6822: 0, 0x4400: 0}
SEAMOPS_CAPABILITIES, SEAMOPS_SEAMDB_GETREF = 0, 4


@dataclass
class CallResult:
    regs: dict[str, int]
    instructions: int
    seconds: float


@dataclass
class Stats:
    calls: int = 0
    instructions: int = 0
    seconds: float = 0.0
    special: dict[str, int] = field(default_factory=dict)
    host_pages_in: int = 0
    host_pages_out: int = 0
    setup_seconds: float = 0.0  # loader work: copy, relocate, page tables, VMCSs, instruction sweep
    sync_seconds: float = 0.0  # host memory mirrored in and out around SEAMCALLs
    by_leaf: dict[int, list] = field(default_factory=dict)  # leaf -> [calls, instructions, seconds]


def _up(n: int) -> int:
    return -(-n // PAGE_SIZE) * PAGE_SIZE


class SeamEngine:
    """A module instance. `seamcall(lp, regs)` runs one leaf; see the module docstring."""

    def __init__(self, *, mem: PhysMem, layout: SeamLayout, sig: Sigstruct, cpu: CpuModel,
                 release: str, seed: int = 0, seamops: Callable[[int], dict[str, int]] | None = None,
                 budget: int = DEFAULT_BUDGET, leaf_name: Callable[[int], str] = str) -> None:
        self.mem, self.layout, self.sig, self.cpu = mem, layout, sig, cpu
        self.release, self.budget, self.leaf_name = release, budget, leaf_name
        self.rng = random.Random(f"rdrand:{seed}")
        self.seamops = seamops or (lambda leaf: {"rax": 0})
        self.stats = Stats()
        self.pconfigs: list[tuple[int, int, int]] = []  # (leaf, key id, command)
        self.nlp = cpu.ncpus
        self.uc = Uc(UC_ARCH_X86, UC_MODE_64)
        self.uc.ctl_set_cpu_model(ux.UC_CPU_X86_ICELAKE_SERVER)  # the instruction set the module uses (SMAP's STAC/CLAC ...)
        self.cs = Cs(CS_ARCH_X86, CS_MODE_64)
        self.cs.detail = True
        self._decoded: dict[int, object] = {}
        self._block_len: dict[int, int] = {}
        self.msrs: dict[int, int] = {}  # what the module wrote (IA32_SPEC_CTRL ...)
        self._pending_ptes: list[int] = []
        self._tlb: dict[int, int] = {}  # linear page -> physical page, for the hooks' own walks
        self._ureg_cache: dict[int, int] = {}
        self._dirty_host: set[int] = set()
        self._mirrored: set[int] = set()
        self._stop: tuple | None = None
        self._icount = 0
        self._lp = 0
        self._leaf = 0
        t0 = time.perf_counter()
        self._load()
        self.stats.setup_seconds = time.perf_counter() - t0

    # ---- addresses ---------------------------------------------------------------------------

    @property
    def code_la(self) -> int:
        return LINEAR_BASE_CODE | self.layout.aslr

    def _la(self, base: int) -> int:
        return base | self.layout.aslr

    @property
    def seam_range(self) -> tuple[int, int]:
        return self.layout.seamrr_base, self.layout.module_physlimit

    # ---- what the loader does in SEAM memory -------------------------------------------------

    def _load(self) -> None:
        L, uc, mem = self.layout, self.uc, self.mem
        lo, hi = self.seam_range
        uc.mem_map(lo, hi - lo)
        first, last = lo // PAGE_SIZE, (hi - 1) // PAGE_SIZE
        for pfn in sorted(p for p in mem.pages if first <= p <= last):
            uc.mem_write(pfn * PAGE_SIZE, bytes(mem.pages[pfn]))
        self.cmrs = self.cpu.cmrs
        for base, size in self.cmrs:
            uc.mem_map(base, size)
        image = bytes(uc.mem_read(L.code_pa, L.code_size))
        self.image = image
        # ELF relocation and the IDT fix-up (entries 0-31 -> the fault wrapper)
        code_la = self.code_la
        for off, addend in elf.relative_relocations(image):
            uc.mem_write(L.code_pa + off, struct.pack("<Q", code_la + addend))
        sig = self.sig
        if sig.gdt_idt_offset:
            for v in range(32):
                handler = code_la + sig.fault_wrapper_offset + 16 * v
                ent = L.code_pa + sig.gdt_idt_offset + 16 * v
                d = bytearray(uc.mem_read(ent, 16))
                d[0:2] = (handler & 0xFFFF).to_bytes(2, "little")
                d[6:8] = ((handler >> 16) & 0xFFFF).to_bytes(2, "little")
                d[8:12] = (handler >> 32).to_bytes(4, "little")
                uc.mem_write(ent, bytes(d))
        self._build_page_tables()
        self._build_vmcs()
        self._install_hooks()

    def _build_page_tables(self) -> None:
        L = self.layout
        self._pt_lo = self._pt_next = _up(L.data_pa + L.data_size)
        self._pt_limit = L.stack_pa
        self.pml4 = self._alloc_pt()
        ro, rw = _P | _A, _P | _RW | _A | _D
        self._map(L.code_pa, self._la(LINEAR_BASE_CODE), L.code_size, _P | _RW | _A)
        self._map(L.data_pa, self._la(LINEAR_BASE_DATA), L.data_size, rw | _NX)
        lp_stack = L.data_stack_size + PAGE_SIZE
        stack_la = self._la(LINEAR_BASE_STACK)
        for i in range(L.num_addr_lps):
            pa, la = L.stack_pa + i * lp_stack, stack_la + i * lp_stack
            self._map(pa, la, L.data_stack_size, rw | _NX)
            self._map(pa + L.data_stack_size, la + L.data_stack_size, PAGE_SIZE, ro | _D | _NX)  # shadow stack
        self._map(L.sysinfo_pa, self._la(LINEAR_BASE_SYSINFO), PAGE_SIZE, ro | _NX)
        # keyhole: empty leaf entries the module fills in; their page-table pages are what the
        # keyhole-edit region maps, so the module can edit them
        keyhole_la, edit_la, prev = self._la(LINEAR_BASE_KEYHOLE), self._la(LINEAR_BASE_KEYEDIT), None
        for i in range(L.keyhole_size // PAGE_SIZE):
            table = self._map_page(0, keyhole_la + i * PAGE_SIZE, 0, keyhole=True)
            if table != prev:
                self._map_page(table, edit_la, rw | _US | _NX)
                edit_la += PAGE_SIZE
                prev = table
        self.keyhole = (keyhole_la, keyhole_la + L.keyhole_size)

    def _alloc_pt(self) -> int:
        pa = self._pt_next
        if pa + PAGE_SIZE > self._pt_limit:
            raise RealFirmwareError("SEAM page tables do not fit between the data and stack regions")
        self._pt_next += PAGE_SIZE
        self.uc.mem_write(pa, bytes(PAGE_SIZE))
        return pa

    def _map_page(self, pa: int, la: int, attr: int, keyhole: bool = False) -> int:
        uc, table = self.uc, self.pml4
        for level in (3, 2, 1):
            idx = (la >> (12 + 9 * level)) & 0x1FF
            entry = struct.unpack("<Q", uc.mem_read(table + 8 * idx, 8))[0]
            if entry == 0:
                entry = self._alloc_pt() | _P | _RW | _US | _A | (_NX if keyhole and level == 1 else 0)
                uc.mem_write(table + 8 * idx, struct.pack("<Q", entry))
            table = entry & _PA_MASK
        uc.mem_write(table + 8 * ((la >> 12) & 0x1FF), struct.pack("<Q", pa | attr))
        return table

    def _map(self, pa: int, la: int, size: int, attr: int) -> None:
        for off in range(0, size, PAGE_SIZE):
            self._map_page(pa + off, la + off, attr)

    def _build_vmcs(self) -> None:
        L, sig = self.layout, self.sig
        lp_stack = L.data_stack_size + PAGE_SIZE
        code_la, stack_la = self.code_la, self._la(LINEAR_BASE_STACK)
        self.vmcs: list[dict[int, int]] = []
        for lp in range(self.nlp):
            v = {
                HOST_CR0: CR0_VALUE, HOST_CR3: self.pml4, HOST_CR4: CR4_VMCS,
                HOST_RIP: code_la + sig.rip_offset,
                HOST_FS_BASE: self._la(LINEAR_BASE_SYSINFO),
                HOST_GS_BASE: self._la(LINEAR_BASE_DATA) + L.handoff_size + lp * L.local_data_size,
                HOST_RSP: stack_la + lp * lp_stack + L.data_stack_size - 8,
                HOST_SSP: stack_la + (lp + 1) * lp_stack - 8,
                HOST_IDTR_BASE: code_la + sig.gdt_idt_offset, HOST_GDTR_BASE: 0,
                HOST_IA32_EFER: EFER_VALUE, HOST_IA32_PAT: PAT_VALUE, HOST_S_CET: S_CET_VALUE,
                **HOST_SELECTORS,
            }
            self.vmcs.append(v)

    # ---- hooks -------------------------------------------------------------------------------

    def _install_hooks(self) -> None:
        uc = self.uc
        self.special = {s.offset: s for s in insns.special_instructions(self.image)}
        code_la = self.code_la
        for s in self.special.values():
            a = code_la + s.offset
            uc.hook_add(UC_HOOK_CODE, self._on_special, s, begin=a, end=a)
        uc.hook_add(UC_HOOK_BLOCK, self._on_block)
        uc.hook_add(UC_HOOK_INTR, self._on_intr)
        uc.hook_add(UC_HOOK_INSN_INVALID, self._on_invalid)
        uc.hook_add(UC_HOOK_MEM_INVALID, self._on_bad_access)
        uc.hook_add(UC_HOOK_MEM_WRITE, self._on_pt_write, begin=self._pt_lo, end=self._pt_limit - 1)
        for base, size in self.cmrs:
            uc.hook_add(UC_HOOK_MEM_WRITE, self._on_host_write, begin=base, end=base + size - 1)

    def _fail(self, stop: tuple) -> None:
        if self._stop is None:
            self._stop = stop
        self.uc.emu_stop()

    def _offset(self, address: int) -> int:
        return address - self.code_la

    def _on_block(self, uc, address, size, _ud) -> None:
        if self._pending_ptes:
            self._strip_hkids()
        n = self._block_len.get(address)
        if n is None:
            code = self._vread(address, size) if size else b""
            n = self._block_len[address] = sum(1 for _ in self.cs.disasm_lite(code, address)) or 1
        self._icount += n
        if self._icount > self.budget:
            self._fail(("budget", address))

    def _on_pt_write(self, uc, _access, address, _size, _value, _ud) -> None:
        self._pending_ptes.append(address & ~7)
        self._tlb.clear()

    def _strip_hkids(self) -> None:
        uc = self.uc
        for pa in self._pending_ptes:
            e = struct.unpack("<Q", uc.mem_read(pa, 8))[0]
            if e & _HKID_MASK:
                uc.mem_write(pa, struct.pack("<Q", e & ~_HKID_MASK))
        self._pending_ptes.clear()

    def _on_host_write(self, uc, _access, address, size, _value, _ud) -> None:
        self._dirty_host.add(address // PAGE_SIZE)
        if (address + size - 1) // PAGE_SIZE != address // PAGE_SIZE:
            self._dirty_host.add((address + size - 1) // PAGE_SIZE)

    def _on_intr(self, uc, intno, _ud) -> None:
        rip = uc.reg_read(ux.UC_X86_REG_RIP)
        how = f"exception {intno}"
        if intno == 14:
            how += f", page fault at {uc.reg_read(ux.UC_X86_REG_CR2):#x}"
        self._fail(("stopped", rip, how))

    def _on_invalid(self, uc, _ud) -> bool:
        rip = uc.reg_read(ux.UC_X86_REG_RIP)
        self._fail(("stopped", rip, f"#UD: {self._text(rip)}"))
        return False

    def _on_bad_access(self, uc, access, address, size, _value, _ud) -> bool:
        rip = uc.reg_read(ux.UC_X86_REG_RIP)
        self._fail(("stopped", rip, f"access to unmapped memory {address:#x}"))
        return False

    # ---- memory as the module sees it --------------------------------------------------------

    def _v2p(self, la: int) -> int:
        page = self._tlb.get(la >> 12)
        if page is not None:
            return page | (la & 0xFFF)
        pa = self._walk(la)
        self._tlb[la >> 12] = pa & ~0xFFF
        return pa

    def _walk(self, la: int) -> int:
        uc = self.uc
        table = uc.reg_read(ux.UC_X86_REG_CR3) & _PA_MASK
        for level in (3, 2, 1, 0):
            e = struct.unpack("<Q", uc.mem_read(table + 8 * ((la >> (12 + 9 * level)) & 0x1FF), 8))[0]
            if not e & _P:
                raise RealFirmwareError(f"linear address {la:#x} is not mapped")
            if level in (1, 2) and e & _PS:
                span = 1 << (12 + 9 * level)
                return (e & _PA_MASK & ~_HKID_MASK & ~(span - 1)) | (la & (span - 1))
            table = e & _PA_MASK & ~_HKID_MASK
        return table | (la & 0xFFF)

    def _vread(self, la: int, n: int) -> bytes:
        out = bytearray()
        while n:
            k = min(n, PAGE_SIZE - (la & 0xFFF))
            out += self.uc.mem_read(self._v2p(la), k)
            la, n = la + k, n - k
        return bytes(out)

    def _vwrite(self, la: int, data: bytes) -> None:
        while data:
            k = min(len(data), PAGE_SIZE - (la & 0xFFF))
            pa = self._v2p(la)
            self.uc.mem_write(pa, bytes(data[:k]))
            if self._in_host(pa):
                self._dirty_host.add(pa // PAGE_SIZE)
            la, data = la + k, data[k:]

    def _in_host(self, pa: int) -> bool:
        return any(b <= pa < b + s for b, s in self.cmrs)

    def _text(self, rip: int) -> str:
        try:
            return insns.disassemble(self._vread(rip, 16), rip)
        except RealFirmwareError:
            return "(code not mapped)"

    # ---- operands of the emulated instructions -----------------------------------------------

    def _insn(self, address: int):
        i = self._decoded.get(address)
        if i is None:
            i = self._decoded[address] = next(self.cs.disasm(self._vread(address, 16), address, 1))
        return i

    def _ea(self, i, mem) -> int:
        uc = self.uc
        ea = mem.disp
        if mem.base:
            ea += i.address + i.size if mem.base == cx.X86_REG_RIP else uc.reg_read(self._ureg(i, mem.base))
        if mem.index:
            ea += uc.reg_read(self._ureg(i, mem.index)) * mem.scale
        if mem.segment == cx.X86_REG_GS:
            ea += uc.reg_read(ux.UC_X86_REG_GS_BASE)
        elif mem.segment == cx.X86_REG_FS:
            ea += uc.reg_read(ux.UC_X86_REG_FS_BASE)
        return ea & (1 << 64) - 1

    def _ureg(self, i, reg: int) -> int:
        u = self._ureg_cache.get(reg)
        if u is None:
            u = self._ureg_cache[reg] = getattr(ux, f"UC_X86_REG_{i.reg_name(reg).upper()}")
        return u

    def _read_op(self, i, op) -> int:
        if op.type == cx.X86_OP_REG:
            return self.uc.reg_read(self._ureg(i, op.reg))
        if op.type == cx.X86_OP_IMM:
            return op.imm
        return struct.unpack("<Q", self._vread(self._ea(i, op.mem), 8))[0]

    def _write_op(self, i, op, value: int) -> None:
        value &= (1 << 64) - 1
        if op.type == cx.X86_OP_REG:
            self.uc.reg_write(self._ureg(i, op.reg), value)
        else:
            self._vwrite(self._ea(i, op.mem), struct.pack("<Q", value))

    # ---- the special instructions ------------------------------------------------------------

    def _set_flags(self, set_mask: int = 0) -> None:
        f = self.uc.reg_read(ux.UC_X86_REG_EFLAGS)
        self.uc.reg_write(ux.UC_X86_REG_EFLAGS, (f & ~_FLAGS_VMSUCCEED_CLEAR) | set_mask)

    def _missing(self, address: int, what: str) -> None:
        self._fail(("missing", address, what))

    def _on_special(self, uc, address, _size, s: insns.Special) -> None:
        if self._stop is not None:
            return
        m = s.mnemonic
        self.stats.special[m] = self.stats.special.get(m, 0) + 1
        r = uc.reg_read
        if m == "cpuid":
            leaf, sub = r(ux.UC_X86_REG_EAX) & 0xFFFFFFFF, r(ux.UC_X86_REG_ECX) & 0xFFFFFFFF
            ans = self.cpu.answer_cpuid(leaf, sub, self._lp)
            if ans is None:
                return self._missing(address, f"CPUID leaf {leaf:#x} subleaf {sub:#x}")
            for reg, v in zip((ux.UC_X86_REG_RAX, ux.UC_X86_REG_RBX, ux.UC_X86_REG_RCX, ux.UC_X86_REG_RDX), ans):
                uc.reg_write(reg, v)
        elif m == "rdmsr":
            idx = r(ux.UC_X86_REG_ECX) & 0xFFFFFFFF
            v = self.msrs.get(idx) if idx in self.msrs else self.cpu.answer_msr(idx)
            if v is None:
                return self._missing(address, f"MSR {idx:#x}")
            uc.reg_write(ux.UC_X86_REG_RAX, v & 0xFFFFFFFF)
            uc.reg_write(ux.UC_X86_REG_RDX, v >> 32)
        elif m == "wrmsr":
            idx = r(ux.UC_X86_REG_ECX) & 0xFFFFFFFF
            self.msrs[idx] = (r(ux.UC_X86_REG_RAX) & 0xFFFFFFFF) | (r(ux.UC_X86_REG_RDX) & 0xFFFFFFFF) << 32
        elif m == "vmread":
            i = self._insn(address)
            dst, fld = i.operands
            f = self._read_op(i, fld)
            vmcs = self.vmcs[self._lp]
            if f not in vmcs:
                return self._missing(address, f"VMCS field {f:#x}")
            self._write_op(i, dst, vmcs[f])
            self._set_flags()
        elif m == "vmwrite":
            i = self._insn(address)
            fld, src = i.operands
            self.vmcs[self._lp][self._read_op(i, fld)] = self._read_op(i, src)
            self._set_flags()
        elif m in ("vmptrld", "vmptrst", "vmclear", "invept", "invvpid", "wbinvd", "wbnoinvd"):
            self._set_flags()  # one VMCS per LP, no caches or TLBs to flush here
        elif m == "seamops":
            out = self.seamops(r(ux.UC_X86_REG_RAX))
            for name, v in out.items():
                uc.reg_write(_UREG[name], v)
        elif m == "seamret":
            self._stop = ("seamret", {n: r(_UREG[n]) for n in REG_NAMES})
            uc.emu_stop()
            return
        elif m == "pconfig":
            kp = self._vread(r(ux.UC_X86_REG_RBX), 8)
            self.pconfigs.append((r(ux.UC_X86_REG_RAX), int.from_bytes(kp[0:2], "little"), kp[2]))
            uc.reg_write(ux.UC_X86_REG_RAX, 0)
            self._set_flags()
        elif m == "movdir64b":
            i = self._insn(address)
            dst, src = i.operands
            self._vwrite(self._read_op(i, dst), self._vread(self._ea(i, src.mem), 64))
        elif m in ("rdrand", "rdseed"):
            i = self._insn(address)
            self._write_op(i, i.operands[0], self.rng.getrandbits(64))
            self._set_flags(1)  # CF=1: a value was available
        elif m in ("ud2", "hlt"):
            self._fail(("stopped", address, m))
            return
        else:
            self._fail(("stopped", address, f"{m} is not emulated"))
            return
        uc.reg_write(ux.UC_X86_REG_RIP, address + s.size)

    # ---- SEAMCALL ----------------------------------------------------------------------------

    def _sync_in(self) -> None:
        """The machine's host pages into the emulator (and pages it dropped, zeroed)."""
        uc, pages = self.uc, self.mem.pages
        present = set()
        for base, size in self.cmrs:
            first, last = base // PAGE_SIZE, (base + size - 1) // PAGE_SIZE
            present |= {p for p in pages if first <= p <= last}
        for pfn in present:
            uc.mem_write(pfn * PAGE_SIZE, bytes(pages[pfn]))
        for pfn in self._mirrored - present:
            uc.mem_write(pfn * PAGE_SIZE, bytes(PAGE_SIZE))
        self._mirrored = present
        self.stats.host_pages_in += len(present)

    def _sync_out(self) -> None:
        for pfn in self._dirty_host:
            self.mem.write(pfn * PAGE_SIZE, bytes(self.uc.mem_read(pfn * PAGE_SIZE, PAGE_SIZE)))
            self._mirrored.add(pfn)
        self.stats.host_pages_out += len(self._dirty_host)
        self._dirty_host.clear()

    def copy_in(self, pa: int, size: int) -> None:
        """Copy SEAM memory from the machine into the emulator (the handoff area before UPDATE)."""
        self.uc.mem_write(pa, self.mem.read(pa, size))

    def copy_out(self, pa: int, size: int) -> None:
        """Copy SEAM memory back to the machine (the handoff area after SHUTDOWN or UPDATE)."""
        self.mem.write(pa, bytes(self.uc.mem_read(pa, size)))

    def seamcall(self, lp: int, regs: dict[str, int]) -> CallResult:
        """Run one leaf on `lp` with `regs` (RAX..R15); returns the registers SEAMRET left."""
        if not 0 <= lp < self.nlp:
            raise RealFirmwareError(f"no LP {lp} (the platform has {self.nlp})")
        uc, v = self.uc, self.vmcs[lp]
        ts = time.perf_counter()
        self._sync_in()
        self.stats.sync_seconds += time.perf_counter() - ts
        self._lp, self._leaf = lp, regs.get("rax", 0)
        uc.reg_write(ux.UC_X86_REG_CR3, v[HOST_CR3])
        uc.reg_write(ux.UC_X86_REG_CR4, CR4_RUN)  # the VMCS value less VMXE/SMEP/SMAP/CET
        uc.reg_write(ux.UC_X86_REG_MSR, (0xC0000080, v[HOST_IA32_EFER]))
        uc.reg_write(ux.UC_X86_REG_CR0, v[HOST_CR0])
        uc.reg_write(ux.UC_X86_REG_IDTR, (0, v[HOST_IDTR_BASE], 32 * 16 - 1, 0))
        uc.reg_write(ux.UC_X86_REG_FS_BASE, v[HOST_FS_BASE])
        uc.reg_write(ux.UC_X86_REG_GS_BASE, v[HOST_GS_BASE])
        uc.reg_write(ux.UC_X86_REG_RSP, v[HOST_RSP])
        for name in ("rbx", "rsi", "rdi", "rbp"):
            uc.reg_write(_UREG[name], 0)
        for name in REG_NAMES:
            uc.reg_write(_UREG[name], regs.get(name, 0) & (1 << 64) - 1)
        uc.reg_write(ux.UC_X86_REG_RFLAGS, 0x2)
        v.update(SEAMCALL_GUEST_STATE)
        self._stop, self._icount = None, 0
        self._tlb.clear()
        t0 = time.perf_counter()
        try:
            uc.emu_start(v[HOST_RIP], 0)
        except UcError as e:
            rip = uc.reg_read(ux.UC_X86_REG_RIP)
            if self._stop is None:
                self._stop = ("stopped", rip, f"emulator error: {e}")
        dt = time.perf_counter() - t0
        ts = time.perf_counter()
        self._sync_out()
        st = self.stats
        st.sync_seconds += time.perf_counter() - ts
        st.calls += 1
        st.instructions += self._icount
        st.seconds += dt
        per = st.by_leaf.setdefault(self._leaf & 0xFFFF, [0, 0, 0.0])
        per[0] += 1
        per[1] += self._icount
        per[2] += dt
        stop = self._stop
        leaf = self.leaf_name(self._leaf)
        if stop is None:
            rip = uc.reg_read(ux.UC_X86_REG_RIP)
            stop = ("stopped", rip, f"emulation ended without SEAMRET: {self._text(rip)}")
        kind = stop[0]
        if kind == "seamret":
            return CallResult(stop[1], self._icount, dt)
        if kind == "budget":
            raise BudgetExceeded(leaf, self.budget, self._offset(stop[1]))
        if kind == "missing":
            raise MissingPlatformValue(self._offset(stop[1]), self._text(stop[1]), stop[2])
        raise ModuleStopped(self.release, leaf, self._offset(stop[1]), stop[2])
