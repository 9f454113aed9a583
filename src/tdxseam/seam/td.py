"""Trust Domains, as far as "TDs survive a TD-preserving update" needs them to be real.

A TD here has a TDR page (its identity), an HKID, TD_PARAMS attributes, a lifecycle (OP_STATE
UNINITIALIZED -> INITIALIZED by TDH.MNG.INIT -> RUNNABLE by TDH.MR.FINALIZE), private 4 KiB pages
added by TDH.MEM.PAGE.ADD, a build measurement (MRTD) extended by PAGE.ADD and TDH.MR.EXTEND, and
vCPUs (TDH.VP.CREATE, TDH.VP.INIT) that TDH.VP.ENTER runs. Leaf numbers (`formats.leaves.TdxLeaf`),
register use and status codes are those of the TDX ABI (intel/tdx-module `include/tdx_api_defs.h`,
`include/auto_gen/tdx_error_codes_defs.h`); the TD statuses are in `formats.status`.

Where the state lives (the point of the model): the registry of TDs (which TDR, which pages at
which GPA, MRTD, vCPU state) exists only inside the running `TdxModule` object. TD private page
*contents* live in host memory at the HPAs the host gave, as real TD private pages do (outside
SEAMRR). At TDH.SYS.SHUTDOWN the module serialises its registry into the handoff area in emulated
memory (`serialize_handoff`); the next module rebuilds it from there at TDH.SYS.UPDATE
(`deserialize_handoff`). A new module that never runs SYS.UPDATE, or a module range that was
wiped, has no TDs: a failed update really loses them.

Modelling choices (inferred, documented):
- The real HV-0 handoff payload carries the KOT, WBT, TDMR table, module HKID and package-config
  bitmap; TD control structures (TDR/TDCS/TDVPS) stay in host memory. Here the TD registry itself
  is the payload (plus the package-config bitmap), so that preservation is checked, not assumed.
- MRTD is an extend chain, MRTD' = SHA-384(MRTD || record), over the same 128-byte records the
  real module hashes (a real module keeps a running SHA-384 context in TDCS and finalises it at
  MR.FINALIZE); a 48-byte value is what the handoff can carry.
- Not modelled: TDCS/TDVPS pages (TDH.MNG.ADDCX, TDH.VP.ADDCX), TD keys (TDH.MNG.KEY.CONFIG),
  Secure EPT pages (TDH.MEM.SEPT.ADD), PAMT and TDMRs, TD teardown. MNG.CREATE leaves a TD ready
  for MNG.INIT.
- A module refuses to grow its TD state past what its handoff area can hold (TDX_OPERAND_INVALID
  on the growing operand): real modules size their handoff pages for their maximum state.
- The TD-build erratum (spec-linux.md §9): an update while a TD is being built (OP_STATE
  INITIALIZED: PAGE.ADD / MR.EXTEND / MR.FINALIZE still to come) corrupts its measurement. Modelled
  deterministically: TDH.SYS.UPDATE restores such a TD with a scrambled MRTD (`scramble_mrtd`), so
  a build that spans an update ends with a wrong MRTD. Update Compatibility (FEATURES0 bit 47 with
  SYS.SHUTDOWN RCX bit 16) lets the shutdown refuse instead.
- TDH.VP.ENTER does a tiny deterministic piece of guest work (increments the u64 at offset 0 of the
  TD's lowest-GPA private page), spends `TdxModule.vp_enter_steps` scheduler steps "in the guest"
  with the LP busy, and exits as if the guest did TDG.VP.VMCALL (RAX = exit reason 77, TDCALL).
"""

from __future__ import annotations

import hashlib
import struct
from dataclasses import dataclass, field
from enum import IntEnum
from typing import TYPE_CHECKING

from tdxseam.formats.leaves import TDH_MR_EXTEND_CHUNK, TdxLeaf
from tdxseam.formats.status import OPERAND_R8, OPERAND_RCX, OPERAND_RDX, TdxStatus
from tdxseam.platform.cpu import Cpu, Regs
from tdxseam.platform.memory import PAGE_SIZE

if TYPE_CHECKING:
    from tdxseam.platform.memory import PhysMem
    from tdxseam.seam.firmware import SeamFirmware
    from tdxseam.seam.module import TdxModule

OPERAND_R9 = 9
TD_PARAMS_SIZE = 1024
TD_PARAMS_ALIGN = 1024
EXIT_REASON_TDCALL = 77
GPA_LEVEL_MASK = 0x7  # bits 2:0 of the GPA operand: mapping level, 0 = 4 KiB
GPA_MAX = 1 << 52




class OpState(IntEnum):
    UNINITIALIZED = 0
    INITIALIZED = 1  # TD build in progress: PAGE.ADD / MR.EXTEND allowed
    RUNNABLE = 2  # finalized: MRTD frozen, vCPUs may run


class VcpuState(IntEnum):
    UNINITIALIZED = 0  # created by TDH.VP.CREATE
    READY = 1  # TDH.VP.INIT done


# bound once: the leaves compare with them at every call, and on Python 3.11 a member looked up on
# its enum class costs some 0.1 us (EnumType.__getattr__ stops the lookup's specialisation)
OP_UNINITIALIZED, OP_INITIALIZED, OP_RUNNABLE = OpState
VCPU_UNINITIALIZED, VCPU_READY = VcpuState
TDX_SUCCESS = TdxStatus.TDX_SUCCESS


@dataclass
class Vcpu:
    tdvpr_pa: int
    index: int
    state: VcpuState = VCPU_UNINITIALIZED
    init_rcx: int = 0
    entries: int = 0


@dataclass
class Td:
    tdr_pa: int
    hkid: int
    op_state: OpState = OP_UNINITIALIZED
    attributes: int = 0
    max_vcpus: int = 0
    mrtd: bytes = bytes(48)
    pages: dict[int, int] = field(default_factory=dict)  # GPA -> HPA of the private page
    vcpus: dict[int, Vcpu] = field(default_factory=dict)  # TDVPR PA -> vCPU

    @property
    def in_build(self) -> bool:
        """Update-sensitive: MNG.INIT done, MR.FINALIZE not yet (PAGE.ADD/MR.EXTEND in flight)."""
        return self.op_state == OP_INITIALIZED


def _record(tag: bytes, gpa: int) -> bytes:
    """The 128-byte measurement record: ASCII tag padded to 16 bytes, then the GPA, then zeros."""
    return tag.ljust(16, b"\0") + gpa.to_bytes(8, "little") + bytes(128 - 24)


def extend_mrtd(mrtd: bytes, *chunks: bytes) -> bytes:
    return hashlib.sha384(mrtd + b"".join(chunks)).digest()


def scramble_mrtd(mrtd: bytes) -> bytes:
    """What the TD-build erratum does to a build measurement carried across an update."""
    return hashlib.sha384(b"build context lost across a module update" + mrtd).digest()


class TdRegistry:
    """The TDs one module instance knows, and which host pages they own (the PAMT's job)."""

    def __init__(self) -> None:
        self.tds: dict[int, Td] = {}
        self.owner: dict[int, int] = {}  # HPA -> TDR PA, for TDR, TDVPR and private pages

    def __len__(self) -> int:
        return len(self.tds)

    def any_in_build(self) -> bool:
        return any(td.in_build for td in self.tds.values())

    def hkid_used(self, hkid: int) -> bool:
        return any(td.hkid == hkid for td in self.tds.values())

    def vcpu(self, tdvpr_pa: int) -> tuple[Td, Vcpu] | None:
        tdr = self.owner.get(tdvpr_pa)
        td = self.tds.get(tdr) if tdr is not None else None
        if td is None or tdvpr_pa not in td.vcpus:
            return None
        return td, td.vcpus[tdvpr_pa]

    def add_td(self, td: Td) -> None:
        self.tds[td.tdr_pa] = td
        self.owner[td.tdr_pa] = td.tdr_pa
        for hpa in td.pages.values():
            self.owner[hpa] = td.tdr_pa
        for pa in td.vcpus:
            self.owner[pa] = td.tdr_pa

    # ---- the handoff payload -------------------------------------------------------------------

    def serialized_size(self) -> int:
        return _HEAD.size + sum(
            _TD.size + _PAGE.size * len(td.pages) + _VCPU.size * len(td.vcpus) for td in self.tds.values()
        )


# Handoff payload of this model, HV 0 (see the module docstring).
HANDOFF_MAGIC = b"TDXSEAM0"
_HEAD = struct.Struct("<8sHHIQ")  # magic, hv, reserved, number of TDs, package-config bitmap
_TD = struct.Struct("<QHBBQHHII48s")  # tdr, hkid, op_state, res, attributes, max_vcpus, nvcpus, npages, res, mrtd
_PAGE = struct.Struct("<QQ")  # gpa, hpa
_VCPU = struct.Struct("<QBBHIQQ")  # tdvpr, state, res, index, res, entries, init_rcx


class HandoffDataError(ValueError):
    """The handoff payload cannot be read back (wrong version, truncated, inconsistent)."""


def serialize_handoff(hv: int, tds: TdRegistry, packages: set[int]) -> bytes:
    out = bytearray(_HEAD.pack(HANDOFF_MAGIC, hv, 0, len(tds.tds), sum(1 << p for p in packages)))
    for td in sorted(tds.tds.values(), key=lambda t: t.tdr_pa):
        out += _TD.pack(td.tdr_pa, td.hkid, td.op_state, 0, td.attributes, td.max_vcpus,
                        len(td.vcpus), len(td.pages), 0, td.mrtd)
        for gpa in sorted(td.pages):
            out += _PAGE.pack(gpa, td.pages[gpa])
        for pa in sorted(td.vcpus):
            v = td.vcpus[pa]
            out += _VCPU.pack(v.tdvpr_pa, v.state, 0, v.index, 0, v.entries, v.init_rcx)
    return bytes(out)


def deserialize_handoff(hv: int, data: bytes) -> tuple[TdRegistry, set[int]]:
    """Rebuild the registry; HandoffDataError if the bytes are not a payload of version `hv`."""
    try:
        magic, got_hv, _res, ntds, pkgs = _HEAD.unpack_from(data, 0)
        if magic != HANDOFF_MAGIC or got_hv != hv:
            raise HandoffDataError(f"not a version-{hv} handoff payload")
        off = _HEAD.size
        reg = TdRegistry()
        for _ in range(ntds):
            tdr, hkid, op, _r, attrs, maxv, nv, np_, _r2, mrtd = _TD.unpack_from(data, off)
            off += _TD.size
            td = Td(tdr, hkid, OpState(op), attrs, maxv, mrtd)
            for _ in range(np_):
                gpa, hpa = _PAGE.unpack_from(data, off)
                off += _PAGE.size
                td.pages[gpa] = hpa
            for _ in range(nv):
                pa, st, _r, idx, _r2, entries, init_rcx = _VCPU.unpack_from(data, off)
                off += _VCPU.size
                td.vcpus[pa] = Vcpu(pa, idx, VcpuState(st), init_rcx, entries)
            reg.add_td(td)
        if off != len(data) and bytes(data[off:]) != bytes(len(data) - off):  # zero padding is fine
            raise HandoffDataError(f"{len(data) - off} trailing bytes")
    except (struct.error, ValueError) as exc:
        if isinstance(exc, HandoffDataError):
            raise
        raise HandoffDataError(str(exc)) from None
    return reg, {p for p in range(64) if pkgs >> p & 1}


# ---- the leaves ------------------------------------------------------------------------------------


def _err(regs: Regs, status: int, operand: int = 0) -> None:
    regs.rax = int(status) | operand


def _hpa_ok(mod: TdxModule, pa: int) -> bool:
    """A 4 KiB-aligned host PA inside physical memory and outside SEAMRR."""
    return pa % PAGE_SIZE == 0 and 0 <= pa < mod.machine.mem.max_pa and not mod.fw.in_seamrr(pa)


def _td_of(mod: TdxModule, regs: Regs, pa: int, operand: int) -> Td | None:
    """The TD whose TDR page is `pa`, or set RAX to the operand error and return None."""
    if not _hpa_ok(mod, pa):
        _err(regs, TdxStatus.TDX_OPERAND_INVALID, operand)
        return None
    td = mod.tds.tds.get(pa)
    if td is None:
        _err(regs, TdxStatus.TDX_PAGE_METADATA_INCORRECT, operand)
    return td


def _free_page(mod: TdxModule, regs: Regs, pa: int, operand: int) -> bool:
    if not _hpa_ok(mod, pa):
        _err(regs, TdxStatus.TDX_OPERAND_INVALID, operand)
        return False
    if pa in mod.tds.owner:
        _err(regs, TdxStatus.TDX_PAGE_METADATA_INCORRECT, operand)
        return False
    return True


def _room(mod: TdxModule, regs: Regs, extra: int, operand: int) -> bool:
    if mod.tds.serialized_size() + extra > mod.handoff_capacity():
        _err(regs, TdxStatus.TDX_OPERAND_INVALID, operand)
        return False
    return True


def tdh_mng_create(mod: TdxModule, cpu: Cpu, regs: Regs) -> None:
    """RCX = TDR page HPA, RDX = HKID."""
    tdr, hkid = regs.rcx, regs.rdx
    if not _free_page(mod, regs, tdr, OPERAND_RCX):
        return
    if not 1 <= hkid <= mod.machine.num_private_hkids:
        return _err(regs, TdxStatus.TDX_OPERAND_INVALID, OPERAND_RDX)
    if mod.tds.hkid_used(hkid):
        return _err(regs, TdxStatus.TDX_HKID_NOT_FREE)
    if not _room(mod, regs, _TD.size, OPERAND_RCX):
        return
    mod.tds.add_td(Td(tdr, hkid))
    regs.rax = TDX_SUCCESS


def tdh_mng_init(mod: TdxModule, cpu: Cpu, regs: Regs) -> None:
    """RCX = TDR, RDX = HPA of TD_PARAMS (1 KiB-aligned: attributes @0, max_vcpus u16 @16)."""
    td = _td_of(mod, regs, regs.rcx, OPERAND_RCX)
    if td is None:
        return
    pa = regs.rdx
    if pa % TD_PARAMS_ALIGN or not 0 <= pa < mod.machine.mem.max_pa or mod.fw.in_seamrr(pa):
        return _err(regs, TdxStatus.TDX_OPERAND_INVALID, OPERAND_RDX)
    if td.op_state != OP_UNINITIALIZED and mod.enabled("td_op_state"):
        return _err(regs, TdxStatus.TDX_OP_STATE_INCORRECT)
    params = mod.machine.mem.read(pa, TD_PARAMS_SIZE)
    attributes = int.from_bytes(params[0:8], "little")
    max_vcpus = int.from_bytes(params[16:18], "little")
    if max_vcpus == 0:
        return _err(regs, TdxStatus.TDX_OPERAND_INVALID, 68)  # OPERAND_ID_MAX_VCPUS
    td.attributes, td.max_vcpus = attributes, max_vcpus
    td.mrtd = bytes(48)
    td.op_state = OP_INITIALIZED
    regs.rax = TDX_SUCCESS


def tdh_vp_create(mod: TdxModule, cpu: Cpu, regs: Regs) -> None:
    """RCX = TDVPR page HPA, RDX = TDR."""
    td = _td_of(mod, regs, regs.rdx, OPERAND_RDX)
    if td is None:
        return
    if not _free_page(mod, regs, regs.rcx, OPERAND_RCX):
        return
    if td.op_state == OP_UNINITIALIZED and mod.enabled("td_op_state"):
        return _err(regs, TdxStatus.TDX_OP_STATE_INCORRECT)
    if len(td.vcpus) >= td.max_vcpus:
        return _err(regs, TdxStatus.TDX_MAX_VCPUS_EXCEEDED)
    if not _room(mod, regs, _VCPU.size, OPERAND_RCX):
        return
    td.vcpus[regs.rcx] = Vcpu(regs.rcx, len(td.vcpus))
    mod.tds.owner[regs.rcx] = td.tdr_pa
    regs.rax = TDX_SUCCESS


def _vcpu_of(mod: TdxModule, regs: Regs) -> tuple[Td, Vcpu] | None:
    """The vCPU whose TDVPR is in RCX, or None with RAX set to why not."""
    found = mod.tds.vcpu(regs.rcx)
    if found is None:
        _err(regs, TdxStatus.TDX_PAGE_METADATA_INCORRECT if _hpa_ok(mod, regs.rcx)
             else TdxStatus.TDX_OPERAND_INVALID, OPERAND_RCX)
    return found


def tdh_vp_init(mod: TdxModule, cpu: Cpu, regs: Regs) -> None:
    """RCX = TDVPR, RDX = the guest's initial RCX."""
    found = _vcpu_of(mod, regs)
    if found is None:
        return
    _td, vcpu = found
    if vcpu.state != VCPU_UNINITIALIZED and mod.enabled("vcpu_state"):
        return _err(regs, TdxStatus.TDX_VCPU_STATE_INCORRECT)
    vcpu.init_rcx = regs.rdx
    vcpu.state = VCPU_READY
    regs.rax = TDX_SUCCESS


def _gpa_ok(gpa: int) -> bool:
    return gpa & GPA_LEVEL_MASK == 0 and gpa % PAGE_SIZE == 0 and gpa < GPA_MAX


def tdh_mem_page_add(mod: TdxModule, cpu: Cpu, regs: Regs) -> None:
    """RCX = GPA (bits 2:0 level, 4 KiB only), RDX = TDR, R8 = target HPA, R9 = source HPA.

    Copies the source page into the TD's new private page and extends MRTD with the GPA (the
    contents are measured only by TDH.MR.EXTEND, as in TDX). Only during the build.
    """
    gpa = regs.rcx
    if not _gpa_ok(gpa):
        return _err(regs, TdxStatus.TDX_OPERAND_INVALID, OPERAND_RCX)
    td = _td_of(mod, regs, regs.rdx, OPERAND_RDX)
    if td is None:
        return
    if td.op_state != OP_INITIALIZED and mod.enabled("td_op_state"):
        return _err(regs, TdxStatus.TDX_OP_STATE_INCORRECT)
    if not _free_page(mod, regs, regs.r8, OPERAND_R8):
        return
    src = regs.r9
    if not _hpa_ok(mod, src) or src == regs.r8:
        return _err(regs, TdxStatus.TDX_OPERAND_INVALID, OPERAND_R9)
    if gpa in td.pages:
        return _err(regs, TdxStatus.TDX_EPT_ENTRY_NOT_FREE)
    if not _room(mod, regs, _PAGE.size, OPERAND_R8):
        return
    mem = mod.machine.mem
    mem.write(regs.r8, mem.read(src, PAGE_SIZE))
    td.pages[gpa] = regs.r8
    mod.tds.owner[regs.r8] = td.tdr_pa
    td.mrtd = extend_mrtd(td.mrtd, _record(b"MEM.PAGE.ADD", gpa))
    regs.rax = TDX_SUCCESS


def tdh_mr_extend(mod: TdxModule, cpu: Cpu, regs: Regs) -> None:
    """RCX = GPA of a 256-byte chunk of an added page, RDX = TDR: measure its contents."""
    gpa = regs.rcx
    if gpa % TDH_MR_EXTEND_CHUNK or gpa >= GPA_MAX:
        return _err(regs, TdxStatus.TDX_OPERAND_INVALID, OPERAND_RCX)
    td = _td_of(mod, regs, regs.rdx, OPERAND_RDX)
    if td is None:
        return
    if td.op_state != OP_INITIALIZED and mod.enabled("td_op_state"):
        return _err(regs, TdxStatus.TDX_OP_STATE_INCORRECT)
    page = gpa & ~(PAGE_SIZE - 1)
    hpa = td.pages.get(page)
    if hpa is None:
        return _err(regs, TdxStatus.TDX_EPT_WALK_FAILED)
    chunk = mod.machine.mem.read(hpa + (gpa - page), TDH_MR_EXTEND_CHUNK)
    td.mrtd = extend_mrtd(td.mrtd, _record(b"MR.EXTEND", gpa), chunk)
    regs.rax = TDX_SUCCESS


def tdh_mr_finalize(mod: TdxModule, cpu: Cpu, regs: Regs) -> None:
    """RCX = TDR: the build ends, MRTD is final, vCPUs may run."""
    td = _td_of(mod, regs, regs.rcx, OPERAND_RCX)
    if td is None:
        return
    if td.op_state != OP_INITIALIZED and mod.enabled("td_op_state"):
        return _err(regs, TdxStatus.TDX_OP_STATE_INCORRECT)
    td.op_state = OP_RUNNABLE
    regs.rax = TDX_SUCCESS


def tdh_vp_enter(mod: TdxModule, cpu: Cpu, regs: Regs) -> None:
    """RCX = TDVPR: run the vCPU until it exits (see the module docstring for the guest work)."""
    found = _vcpu_of(mod, regs)
    if found is None:
        return
    td, vcpu = found
    if td.op_state != OP_RUNNABLE and mod.enabled("td_op_state"):
        return _err(regs, TdxStatus.TDX_OP_STATE_INCORRECT)
    if vcpu.state != VCPU_READY and mod.enabled("vcpu_state"):
        return _err(regs, TdxStatus.TDX_VCPU_STATE_INCORRECT)
    # the guest's work, done at once so no update can see it half-done
    vcpu.entries += 1
    counter = 0
    if td.pages:
        hpa = td.pages[min(td.pages)]
        mem = mod.machine.mem
        counter = (int.from_bytes(mem.read(hpa, 8), "little") + 1) & ((1 << 64) - 1)
        mem.write(hpa, counter.to_bytes(8, "little"))
    # the guest keeps the LP for a while (lp_is_busy stays set: SHUTDOWN elsewhere sees it)
    for _ in range(mod.vp_enter_steps):
        mod.machine.sched.preempt()
    regs.rax = EXIT_REASON_TDCALL
    regs.rcx = 0
    regs.r10 = 0  # TDG.VP.VMCALL
    regs.r11 = counter


TD_LEAVES = {
    TdxLeaf.TDH_VP_ENTER: tdh_vp_enter,
    TdxLeaf.TDH_MEM_PAGE_ADD: tdh_mem_page_add,
    TdxLeaf.TDH_MNG_CREATE: tdh_mng_create,
    TdxLeaf.TDH_VP_CREATE: tdh_vp_create,
    TdxLeaf.TDH_MR_EXTEND: tdh_mr_extend,
    TdxLeaf.TDH_MR_FINALIZE: tdh_mr_finalize,
    TdxLeaf.TDH_MNG_INIT: tdh_mng_init,
    TdxLeaf.TDH_VP_INIT: tdh_vp_init,
}


# ---- checking preservation (pure: reads state, changes nothing) -----------------------------------


@dataclass(frozen=True)
class TdSnapshot:
    tdr_pa: int
    hkid: int
    op_state: int
    attributes: int
    max_vcpus: int
    mrtd: bytes
    pages: tuple[tuple[int, int, bytes], ...]  # (GPA, HPA, contents)
    vcpus: tuple[tuple[int, int, int, int], ...]  # (TDVPR, index, state, entries)


def td_snapshot(fw: SeamFirmware) -> dict[int, TdSnapshot]:
    """The TDs the host can use right now, keyed by TDR PA.

    Empty when no module is reachable (SEAM_READY = 0, no module, or a module not in SYS_READY:
    shut down, or freshly installed and not yet updated): such TDs cannot run, whatever the old
    module object still holds.
    """
    mod = fw.module
    if mod is None or not fw.seamextend.seam_ready or not mod.ready:
        return {}
    return snapshot_registry(mod.tds, fw.machine.mem)


def snapshot_registry(tds: TdRegistry, mem: PhysMem) -> dict[int, TdSnapshot]:
    out = {}
    for tdr, td in sorted(tds.tds.items()):
        # the contents themselves: comparing them is cheaper than hashing them, and exact
        pages = tuple((gpa, hpa, mem.read(hpa, PAGE_SIZE)) for gpa, hpa in sorted(td.pages.items()))
        vcpus = tuple((v.tdvpr_pa, v.index, int(v.state), v.entries)
                      for _pa, v in sorted(td.vcpus.items()))
        out[tdr] = TdSnapshot(tdr, td.hkid, int(td.op_state), td.attributes, td.max_vcpus,
                              td.mrtd, pages, vcpus)
    return out


def compare_tds(before: dict[int, TdSnapshot], after: dict[int, TdSnapshot]) -> list[str]:
    """Differences between two snapshots, one line each; empty means every TD was preserved."""
    out = []
    for tdr in sorted(set(before) | set(after)):
        b, a = before.get(tdr), after.get(tdr)
        if a is None:
            out.append(f"TD 0x{tdr:x}: lost")
            continue
        if b is None:
            out.append(f"TD 0x{tdr:x}: appeared")
            continue
        for name in ("hkid", "op_state", "attributes", "max_vcpus", "mrtd", "vcpus"):
            if getattr(a, name) != getattr(b, name):
                out.append(f"TD 0x{tdr:x}: {name} changed")
        if a.pages != b.pages:
            bp = {g: (h, d) for g, h, d in b.pages}
            ap = {g: (h, d) for g, h, d in a.pages}
            for gpa in sorted(set(bp) | set(ap)):
                if bp.get(gpa) != ap.get(gpa):
                    what = "lost" if gpa not in ap else "added" if gpa not in bp else "changed"
                    out.append(f"TD 0x{tdr:x}: page GPA 0x{gpa:x} {what}")
    return out
