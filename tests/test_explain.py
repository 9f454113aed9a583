"""`tdxseam explain`: every published code and leaf is named, and the kernel-log blocks the emulated
kernel prints for a failure at each SEAMCALL of boot and of the update are explained with the right
leaf, status and errno (the CPUID case decoded from the register lines)."""

from __future__ import annotations

import errno
import json

import pytest

from tdxseam.cli import main
from tdxseam.formats.leaves import LEAF_SOURCES, SeamldrLeaf, TdxLeaf
from tdxseam.formats.metadata import MdField
from tdxseam.formats.status import SeamldrStatus, TdxStatus
from tdxseam.formats.status_table import KERNEL_NAMES, KERNEL_SW_STATUSES, TDX_MODULE_STATUSES
from tdxseam.formats.testsign import make_image
from tdxseam.formats.version import ModuleVersion
from tdxseam.host import BootError, DeclaredModule, EmulatedHost
from tdxseam.kernel.seamcall import seamcall_prerr_ret
from tdxseam.kernel.seamldr import seamldr_install_module
from tdxseam.kernel.tdx import tdx_get_sysinfo
from tdxseam.platform.cpu import Regs
from tdxseam.seam.faults import FaultPlan, install_fault_plan
from tdxseam.tool.explain import escape, explain_args, explain_log, explain_value

EIO = {"value": -errno.EIO, "name": "EIO"}
BAD = int(TdxStatus.TDX_OPERAND_INVALID) | 1  # operand RCX
CPUID_STATUS = 0xC000_0900_0000_0000  # TDX_INCORRECT_CPUID_VALUE
# what tdh_sys_init.c leaves in the output registers for CPUID(7, 0): leaf | subleaf << 32, the
# verify mask (EAX|EBX<<32, ECX|EDX<<32) and the required value, same layout
CPUID_OUT = {"rcx": 0x0000_0000_0000_0007, "rdx": 0x0000_0010_0000_0000, "r8": 0x0000_0000_0000_0001,
             "r9": 0x0000_0010_0000_0000, "r10": 0x0000_0000_0000_0001}


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    with pytest.raises(SystemExit) as e:
        main(list(argv))
    return e.value.code, capsys.readouterr().out


# ---- the tables ----------------------------------------------------------------------------------


def test_every_published_status_and_leaf_is_named_by_explain(capsys):
    statuses = [(n, v) for n, v, _ in TDX_MODULE_STATUSES]
    statuses += [(n, v) for v, n in KERNEL_NAMES.items()]
    statuses += [(n, v) for n, v, _ in KERNEL_SW_STATUSES]
    statuses += [(s.name, int(s)) for s in SeamldrStatus]
    leaves = [(n.name, int(n)) for n in SeamldrLeaf] + [(TdxLeaf(v).name, v) for v in LEAF_SOURCES]
    assert len(TDX_MODULE_STATUSES) >= 260 and len(leaves) >= 100
    argv = [f"status=0x{v:x}" for _, v in statuses] + [f"leaf=0x{v:x}" for _, v in leaves]
    code, out = run_cli(capsys, "explain", "--json", *argv)
    doc = json.loads(out)
    assert code == 0 and doc["unknown"] == 0 and doc["items"] == len(argv)
    got = doc["explained"]
    for (name, value), item in zip(statuses, got[:len(statuses)]):
        names = {item["status"]["name"], *item["status"]["aliases"]}
        if value == 0:
            names |= {"TDX_SUCCESS", "PSEAMLDR_SUCCESS"}
        assert name in names, (name, hex(value), item["status"])
        assert item["known"] and item["status"]["sources"]
    for (name, value), item in zip(leaves, got[len(statuses):]):
        assert item["leaf"]["name"] == name and item["leaf"]["sources"], (name, value)
        assert item["leaf"]["firmware"] == ("P-SEAMLDR" if value >> 63 else "TDX module")


def test_renamed_code_carries_both_names_and_every_source():
    (item,) = explain_value("0x8000051200000000")
    assert item.status["name"] == "TDX_UPDATE_COMPAT_SENSITIVE"
    assert item.status["aliases"] == ["TDX_UPDATE_COMPATIBILITY_SENSITIVE"]
    (connect,) = explain_value("0xC0000F0000000000")
    assert connect.status["name"] == "TDX_IOMMU_INVALID_STATE" and connect.status["sources"] == "2.0"


def test_unknown_status_says_so_and_shows_every_field(capsys):
    (item,) = explain_value("status=0xc000057700000003".split("=")[1], "status")
    assert not item.known and item.status["name"] == "TDX_UNKNOWN_CLASS_0x05_0x77"
    assert (item.status["class"], item.status["detail_l1"], item.status["detail_l2"]) == (5, 0x77, "0x3")
    assert item.status["non_recoverable"] and item.status["operand"] == "RBX"
    code, out = run_cli(capsys, "explain", "status=0xc000057700000003")
    assert code == 1 and "UNKNOWN: in no published table" in out and "details L1 0x77, L2 0x3" in out


def test_field_ids_are_decoded():
    (item,) = explain_value("0x9900000300000503")
    assert item.kind == "field" and item.field["name"] == "td_conf.cpuid_config_values[1][1]"
    assert (item.field["class"], item.field["element_size"], item.field["field_code"]) == (0x19, 8, 0x503)
    (item,) = explain_value(f"0x{int(MdField.MODULE_HV):x}")
    assert item.field["name"] == "handoff.module_hv" and item.field["element_size"] == 2


def test_input_strings_are_escaped(capsys):
    evil = "virt/tdx: SEAMCALL (0x0000000000000021) failed: 0xc000010000000001 \x1b[2J\x07"
    (item,) = explain_log(evil)
    assert "\x1b" not in item.text and "\\x1b[2J\\x07" in item.text
    assert escape("ok\u202e") == "ok\\u202e"
    code, out = run_cli(capsys, "explain", evil)
    assert code == 0 and "\x1b" not in out


# ---- boot failures from the emulated kernel ------------------------------------------------------


def boot_log(plan: FaultPlan) -> str:
    with pytest.raises(BootError) as e:
        EmulatedHost(4, seed=3, trace=False, boot_faults=plan)
    return e.value.dmesg


BOOT_POINTS = [
    # (leaf, cpu, nth, field id a TDH.SYS.RD reads)
    (TdxLeaf.TDH_SYS_INIT, None, 1, None),
    (TdxLeaf.TDH_SYS_LP_INIT, 0, 1, None),
    (TdxLeaf.TDH_SYS_LP_INIT, 3, 1, None),
    (TdxLeaf.TDH_SYS_CONFIG, None, 1, None),
    (TdxLeaf.TDH_SYS_KEY_CONFIG, None, 1, None),
    (TdxLeaf.TDH_SYS_TDMR_INIT, None, 1, None),
    (TdxLeaf.TDH_SYS_RD, None, 1, MdField.MAJOR_VERSION),
    (TdxLeaf.TDH_SYS_RD, None, 2, MdField.MINOR_VERSION),
    (TdxLeaf.TDH_SYS_RD, None, 3, MdField.UPDATE_VERSION),
    (TdxLeaf.TDH_SYS_RD, None, 4, MdField.TDX_FEATURES0),
]


@pytest.mark.parametrize("leaf,cpu,nth,fid", BOOT_POINTS, ids=lambda p: getattr(p, "name", str(p)))
def test_boot_failure_block_is_explained(leaf, cpu, nth, fid):
    log = boot_log(FaultPlan().add(leaf, BAD, cpu=cpu, nth=nth))
    fails = [i for i in explain_log(log) if i.kind == "seamcall_failure"]
    assert len(fails) == 1, log
    f = fails[0]
    assert f.leaf["name"] == leaf.name and f.leaf["firmware"] == "TDX module"
    assert f.status["name"] == "TDX_OPERAND_INVALID" and f.status["operand"] == "RCX"
    assert f.errno == EIO and f.phase == "boot" and f.known
    if leaf == TdxLeaf.TDH_SYS_RD:
        # the kernel prints the output registers of a metadata read: RDX names the field
        assert f.registers is not None and set(f.registers) == {"RCX", "RDX", "R08", "R09", "R10", "R11"}
        assert f.field["field_id"] == f"0x{int(fid):016x}"
    else:
        assert f.registers is None
    msgs = [i.text for i in explain_log(log) if i.kind == "message"]
    assert "virt/tdx: BIOS enabled: private KeyID range [1, 64)" in msgs
    if leaf in (TdxLeaf.TDH_SYS_INIT, TdxLeaf.TDH_SYS_LP_INIT):
        assert not any("initialization failed" in m for m in msgs)  # cpu enabling failed first
    else:
        assert "virt/tdx: TDX-Module initialization failed (-5)" in msgs


def test_boot_without_a_module_prints_module_not_loaded():
    log = boot_log(FaultPlan().add(TdxLeaf.TDH_SYS_INIT, "vmfailinvalid"))
    items = explain_log(log)
    assert [i.kind for i in items] == ["message", "message"]  # -ENODEV is not printed as a SEAMCALL line
    assert items[1].text == "virt/tdx: module not loaded" and items[1].verdict == "error"
    assert "BIOS" in items[1].actions[0]


def test_cpuid_failure_decodes_leaf_and_masks_from_the_registers():
    plan = FaultPlan().add(TdxLeaf.TDH_SYS_INIT, CPUID_STATUS, outputs=CPUID_OUT)
    # upstream prints TDH.SYS.INIT failures without registers: the item says the leaf is not known
    (f,) = [i for i in explain_log(boot_log(plan)) if i.kind == "seamcall_failure"]
    assert f.status["name"] == "TDX_INCORRECT_CPUID_VALUE" and f.cpuid is None
    assert any("no output registers" in n for n in f.notes)
    # the kernel's register-printing path (seamcall_prerr_ret), fed by the same firmware outputs
    h = EmulatedHost(2, seed=1, trace=False)
    install_fault_plan(h.fw, FaultPlan().add(TdxLeaf.TDH_SYS_INIT, CPUID_STATUS, outputs=CPUID_OUT))
    assert h.run_on(0, seamcall_prerr_ret, h.kernel, "virt/tdx: ", int(TdxLeaf.TDH_SYS_INIT), Regs()) == -errno.EIO
    log = h.kernel.dmesg_dump()
    assert "RCX 0x0000000000000007 RDX 0x0000001000000000 R08 0x0000000000000001" in log
    (f,) = [i for i in explain_log(log) if i.kind == "seamcall_failure"]
    assert f.cpuid == {"leaf": "0x7", "subleaf": "0x0",
                       "mask": {"eax": "0x00000000", "ebx": "0x00000010", "ecx": "0x00000001", "edx": "0x00000000"},
                       "expected": {"eax": "0x00000000", "ebx": "0x00000010", "ecx": "0x00000001",
                                    "edx": "0x00000000"}}
    assert "leaf 0x7 subleaf 0x0: mask EAX 0x00000000 EBX 0x00000010" in f.render()


# ---- update failures from the emulated kernel ------------------------------------------------------


def update_points(cpus: int):
    yield "RD(MODULE_HV)", TdxLeaf.TDH_SYS_RD, 0, 1, BAD
    yield "SHUTDOWN", TdxLeaf.TDH_SYS_SHUTDOWN, 0, 1, BAD
    for c in range(cpus):
        yield f"INSTALL@{c}", SeamldrLeaf.P_SEAMLDR_INSTALL, c, 1, int(SeamldrStatus.EBADHASH)
    yield "SYS.INIT", TdxLeaf.TDH_SYS_INIT, None, 1, BAD
    for c in range(cpus):
        yield f"LP.INIT@{c}", TdxLeaf.TDH_SYS_LP_INIT, c, 1, BAD
    yield "SYS.UPDATE", TdxLeaf.TDH_SYS_UPDATE, 0, 1, int(TdxStatus.TDX_SYS_INVALID_HANDOFF)
    yield "RD(version)", TdxLeaf.TDH_SYS_RD, 0, 2, BAD


@pytest.mark.parametrize("label,leaf,cpu,nth,status", list(update_points(3)), ids=lambda p: str(p))
def test_update_failure_block_is_explained(label, leaf, cpu, nth, status):
    h = EmulatedHost(3, seed=11, trace=False, module=DeclaredModule(ModuleVersion(1, 5, 6)))
    install_fault_plan(h.fw, FaultPlan().add(leaf, status, cpu=cpu, nth=nth))
    ret = h.run_on(0, seamldr_install_module, h.kernel, make_image("1.5.08"))
    log = h.kernel.dmesg_dump()
    items = explain_log(log)
    fails = [i for i in items if i.kind == "seamcall_failure"]
    assert len(fails) == 1, log
    f = fails[0]
    assert f.leaf["name"] == leaf.name and f.errno == EIO and f.known
    assert f.status["value"] == f"0x{status:016x}"
    assert f.leaf["firmware"] == ("P-SEAMLDR" if leaf == SeamldrLeaf.P_SEAMLDR_INSTALL else "TDX module")
    assert f.phase == "runtime"
    lost = tdx_get_sysinfo(h.kernel) is None
    if label.startswith("RD("):
        assert ret == 0 and f.field is not None and f.registers is not None
        assert any(i.kind == "message" and i.verdict == "warn" for i in items)  # the WARN is explained too
    elif label == "SHUTDOWN":
        assert ret == -errno.EIO and not lost and "old module still runs" in f.consequence
    else:
        assert ret == -errno.EIO and lost and "TDs are lost" in f.consequence and "reboot" in f.consequence
    if leaf == SeamldrLeaf.P_SEAMLDR_INSTALL:
        assert f.status["name"] == "EBADHASH" and "verify" in f.actions[0]


def test_cli_reads_a_log_on_stdin(capsys, monkeypatch):
    import io

    log = boot_log(FaultPlan().add(TdxLeaf.TDH_SYS_CONFIG, BAD))
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(log.encode())))
    code, out = run_cli(capsys, "explain", "--json")
    doc = json.loads(out)
    assert code == 0 and doc["failures"] == 1
    assert doc["explained"][1]["leaf"]["name"] == "TDH_SYS_CONFIG"
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(b"nothing to see\n")))
    code, out = run_cli(capsys, "explain")
    assert code == 1 and "no TDX status" in out


def test_unknown_tdx_lines_are_shown_but_do_not_count_as_unknown_codes(capsys):
    log = "virt/tdx: 262144 KB allocated for PAMT\nvirt/tdx: something new\nkvm: unrelated\n"
    items = explain_log(log)
    assert [(i.verdict, i.known) for i in items] == [("info", True), ("unknown", False)]
    code, out = run_cli(capsys, "explain", "--json", *log.splitlines())
    assert code == 0 and json.loads(out)["unknown"] == 0


def test_words_and_names():
    (item,) = explain_args(["TDH.SYS.SHUTDOWN"])
    assert item.leaf["value"] == "0x0000000000000034" and "old module still runs" in item.consequence
    (item,) = explain_args(["EBADSIG"])
    assert item.status["family"] == "seamldr" and item.errno == EIO
    # a P-SEAMLDR leaf number that is also a P-SEAMLDR status: both readings
    kinds = [i.kind for i in explain_args(["0x8000000000000000"])]
    assert kinds == ["status", "leaf"]
