"""Driving the SEAM side through the real door, for the test_seam_* files.

Every SEAMCALL here is issued by a task on a simulated CPU (`host.run_on`), with platform `Regs`,
exactly as the kernel would; nothing calls the P-SEAMLDR or the module directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache

from tdxseam.formats.leaves import SeamldrLeaf, TdxLeaf
from tdxseam.formats.seamextend import SeamExtend
from tdxseam.formats.seamldr_params import SEAMLDR_SCENARIO_LOAD, SEAMLDR_SCENARIO_UPDATE, SeamldrParams
from tdxseam.formats.sigstruct import Sigstruct
from tdxseam.formats.status import SeamldrStatus, TdxStatus
from tdxseam.formats.testsign import make_module, sign_sigstruct
from tdxseam.formats.version import ModuleVersion
from tdxseam.host import EmulatedHost
from tdxseam.platform.cpu import Regs, SeamcallEnd
from tdxseam.formats.metadata import MdField

PAGE = 4096
INSTALL = SeamldrLeaf.P_SEAMLDR_INSTALL
SUCCESS = 0


def host(cpus: int = 4, **kw) -> EmulatedHost:
    kw.setdefault("trace", False)
    return EmulatedHost(cpus, **kw)


@lru_cache(maxsize=64)
def synth(version: str = "1.5.08", **kw) -> tuple[bytes, bytes]:
    """A test-signed synthetic module (cached: signing costs a few milliseconds)."""
    return make_module(version, **kw)


def resign(sig: bytes, **changes) -> bytes:
    """The sigstruct with fields changed and signed again with the test key."""
    return sign_sigstruct(Sigstruct.from_bytes(sig).replace(**changes)).to_bytes()


# ---- SEAMCALLs ----------------------------------------------------------------------------------


def call(h: EmulatedHost, cpu: int, rax: int, **regs: int) -> tuple[SeamcallEnd, Regs]:
    r = Regs(rax=rax, **regs)
    end = h.run_on(cpu, lambda: h.machine.cpus[cpu].seamcall(r))
    return end, r


def rax(h: EmulatedHost, cpu: int, leaf: int, **regs: int) -> int:
    """RAX after the call; VMfailInvalid as the kernel's software value."""
    end, r = call(h, cpu, leaf, **regs)
    if end is SeamcallEnd.VMFAILINVALID:
        return TdxStatus.TDX_SEAMCALL_VMFAILINVALID
    assert end is SeamcallEnd.SEAMRET, end
    return r.rax


def rd(h: EmulatedHost, field: int, cpu: int = 0) -> tuple[int, int]:
    end, r = call(h, cpu, TdxLeaf.TDH_SYS_RD, rdx=field)
    if end is not SeamcallEnd.SEAMRET:
        return TdxStatus.TDX_SEAMCALL_VMFAILINVALID, 0
    return r.rax, r.r8


def version(h: EmulatedHost) -> ModuleVersion | None:
    out = []
    for f in (MdField.MAJOR_VERSION, MdField.MINOR_VERSION, MdField.UPDATE_VERSION):
        st, v = rd(h, f)
        if st:
            return None
        out.append(v)
    return ModuleVersion(*out)


# ---- staging an install -------------------------------------------------------------------------


@dataclass
class Staged:
    params_pa: int
    sig_pa: int
    page_pas: list[int] = field(default_factory=list)


def stage(h: EmulatedHost, sig: bytes, module: bytes, *, scenario: int = SEAMLDR_SCENARIO_UPDATE,
          edit=None, **overrides) -> Staged:
    """Put sigstruct and module pages in scattered host pages and build a SEAMLDR_PARAMS page.

    `overrides` set SeamldrParams fields; `edit(params)` may change it further in place.
    """
    mem = h.machine.mem
    sig_pa = mem.alloc_page()
    mem.write(sig_pa, sig)
    npages = -(-len(module) // PAGE)
    pas = []
    for i in range(npages):
        pa = mem.alloc_page()
        mem.write(pa, module[i * PAGE:(i + 1) * PAGE])
        pas.append(pa)
    p = SeamldrParams(version=0, scenario=scenario, sigstruct_pa=sig_pa, module_nr_pages=npages,
                      module_pages_pa=pas)
    for k, v in overrides.items():
        setattr(p, k, v)
    if edit is not None:
        edit(p)
    params_pa = mem.alloc_page()
    mem.write(params_pa, p.to_bytes())
    return Staged(params_pa, sig_pa, pas)


def install_on(h: EmulatedHost, params_pa: int, cpus=None, rcx_early: int | None = None) -> list[tuple[int, int]]:
    """SEAMLDR.INSTALL on `cpus` (default all), one after another: [(RAX, RDX)]."""
    cpus = range(h.machine.ncpus) if cpus is None else cpus
    out = []
    cpus = list(cpus)
    for i, c in enumerate(cpus):
        rcx = params_pa if rcx_early is None or i == len(cpus) - 1 else rcx_early
        end, r = call(h, c, INSTALL, rcx=rcx)
        assert end is SeamcallEnd.SEAMRET, end
        out.append((r.rax, r.rdx))
    return out


def install(h: EmulatedHost, sig: bytes, module: bytes, *, scenario: int = SEAMLDR_SCENARIO_UPDATE,
            edit=None, **overrides) -> tuple[int, int]:
    """A whole INSTALL session; returns the last LP's (RAX, RDX)."""
    st = stage(h, sig, module, scenario=scenario, edit=edit, **overrides)
    res = install_on(h, st.params_pa)
    assert all(r == (0, 0) for r in res[:-1]), res
    return res[-1]


def shutdown(h: EmulatedHost, cpu: int = 0, hv: int | None = None) -> int:
    if hv is None:
        st, hv = rd(h, MdField.MODULE_HV, cpu)
        assert st == 0, hex(st)
    return rax(h, cpu, TdxLeaf.TDH_SYS_SHUTDOWN, rcx=hv)


def init_lps(h: EmulatedHost) -> list[int]:
    """TDH.SYS.INIT once, then TDH.SYS.LP.INIT on every CPU: [statuses]."""
    out = [rax(h, 0, TdxLeaf.TDH_SYS_INIT)]
    out += [rax(h, c, TdxLeaf.TDH_SYS_LP_INIT) for c in range(h.machine.ncpus)]
    return out


def boot_config(h: EmulatedHost) -> list[int]:
    """The boot path after LP.INIT: SYS.CONFIG, KEY.CONFIG, TDMR.INIT on CPU 0."""
    return [rax(h, 0, leaf) for leaf in (TdxLeaf.TDH_SYS_CONFIG, TdxLeaf.TDH_SYS_KEY_CONFIG,
                                           TdxLeaf.TDH_SYS_TDMR_INIT)]


@dataclass
class UpdateOutcome:
    shutdown: int
    install: tuple[int, int] | None = None
    init: list[int] | None = None
    update: int | None = None

    @property
    def ok(self) -> bool:
        return (self.shutdown == 0 and self.install == (0, 0) and not any(self.init or [1])
                and self.update == 0)


def update(h: EmulatedHost, sig: bytes, module: bytes) -> UpdateOutcome:
    """The TD-preserving update the kernel performs, step by step, stopping at the first failure."""
    out = UpdateOutcome(shutdown(h))
    if out.shutdown:
        return out
    out.install = install(h, sig, module)
    if out.install != (0, 0):
        return out
    out.init = init_lps(h)
    if any(out.init):
        return out
    out.update = rax(h, 0, TdxLeaf.TDH_SYS_UPDATE)
    return out


def seamextend(h: EmulatedHost) -> SeamExtend:
    return h.fw.seamextend.copy()


# ---- TDs ----------------------------------------------------------------------------------------


@dataclass
class TdHandle:
    tdr: int
    hkid: int
    vcpus: list[int]
    pages: dict[int, int]  # GPA -> HPA


def td_params(h: EmulatedHost, max_vcpus: int = 4, attributes: int = 0) -> int:
    pa = h.machine.mem.alloc_page()
    h.machine.mem.write(pa, attributes.to_bytes(8, "little") + bytes(8) + max_vcpus.to_bytes(2, "little"))
    return pa


def page_with(h: EmulatedHost, data: bytes) -> int:
    pa = h.machine.mem.alloc_page()
    h.machine.mem.write(pa, data)
    return pa


def ok(status: int) -> None:
    assert status == 0, f"0x{status:016x}"


def build_td(h: EmulatedHost, hkid: int, *, npages: int = 2, nvcpus: int = 1, cpu: int = 0,
             finalize: bool = True, extend: bool = True, seed: int = 0) -> TdHandle:
    """TDH.MNG.CREATE, MNG.INIT, VP.CREATE/INIT, MEM.PAGE.ADD (+ MR.EXTEND), MR.FINALIZE."""
    mem = h.machine.mem
    tdr = mem.alloc_page()
    ok(rax(h, cpu, TdxLeaf.TDH_MNG_CREATE, rcx=tdr, rdx=hkid))
    ok(rax(h, cpu, TdxLeaf.TDH_MNG_INIT, rcx=tdr, rdx=td_params(h, max_vcpus=max(nvcpus, 1))))
    vcpus = []
    for i in range(nvcpus):
        tdvpr = mem.alloc_page()
        ok(rax(h, cpu, TdxLeaf.TDH_VP_CREATE, rcx=tdvpr, rdx=tdr))
        ok(rax(h, cpu, TdxLeaf.TDH_VP_INIT, rcx=tdvpr, rdx=0x1000 + i))
        vcpus.append(tdvpr)
    pages = {}
    for i in range(npages):
        gpa = 0x10_0000 + i * PAGE
        # bytes 0..7 stay zero: the guest's counter (TDH.VP.ENTER increments it in the first page)
        src = page_with(h, bytes(8) + bytes([(seed + i + hkid) & 0xFF]) * 56 + b"page %d of TD %d" % (i, hkid))
        target = mem.alloc_page()
        ok(rax(h, cpu, TdxLeaf.TDH_MEM_PAGE_ADD, rcx=gpa, rdx=tdr, r8=target, r9=src))
        if extend:
            for off in range(0, PAGE, 256):
                ok(rax(h, cpu, TdxLeaf.TDH_MR_EXTEND, rcx=gpa + off, rdx=tdr))
        pages[gpa] = target
    if finalize:
        ok(rax(h, cpu, TdxLeaf.TDH_MR_FINALIZE, rcx=tdr))
    return TdHandle(tdr, hkid, vcpus, pages)


def vp_enter(h: EmulatedHost, tdvpr: int, cpu: int = 0) -> Regs:
    end, r = call(h, cpu, TdxLeaf.TDH_VP_ENTER, rcx=tdvpr)
    assert end is SeamcallEnd.SEAMRET
    return r


__all__ = [
    "INSTALL", "PAGE", "SEAMLDR_SCENARIO_LOAD", "SEAMLDR_SCENARIO_UPDATE", "SUCCESS", "SeamldrStatus",
    "TdxStatus", "UpdateOutcome", "boot_config", "build_td", "call", "host", "init_lps", "install",
    "install_on", "rax", "rd", "resign", "seamextend", "shutdown", "stage", "synth", "update",
    "version", "vp_enter",
]
