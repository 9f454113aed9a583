"""Fault plans: injected at the door, matched by leaf, CPU and occurrence; specs parse or say why."""

from __future__ import annotations

import pytest

from tdxseam.formats.leaves import SeamldrLeaf, TdxLeaf
from tdxseam.formats.status import SeamldrStatus, TdxStatus
from tdxseam.host import EmulatedHost
from tdxseam.formats.metadata import MdField
from tdxseam.kernel.tdx import read_sys_metadata_field
from tdxseam.seam.faults import FaultPlan, FaultSpecError, install_fault_plan, parse_fault_spec


def test_spec_parsing():
    r = parse_fault_spec("P_SEAMLDR_INSTALL@3#2=EBADHASH")
    assert (r.leaf, r.cpu, r.nth, r.status) == (SeamldrLeaf.P_SEAMLDR_INSTALL, 3, 2, SeamldrStatus.EBADHASH)
    r = parse_fault_spec("tdh.sys.rd#*=vmfailinvalid")
    assert (r.leaf, r.cpu, r.nth, r.status) == (TdxLeaf.TDH_SYS_RD, None, None, "vmfailinvalid")
    assert parse_fault_spec("TDH_SYS_SHUTDOWN=0xc000010000000001").status == 0xC000010000000001


@pytest.mark.parametrize("bad", ["X=1", "P_SEAMLDR_INSTALL", "P_SEAMLDR_INSTALL@x=1",
                                 "TDH_SYS_INIT=NOPE", "TDH_SYS_INIT#0=EBADSIG", "TDH_SYS_INIT=0"])
def test_bad_specs_say_what_is_wrong(bad):
    with pytest.raises(FaultSpecError):
        parse_fault_spec(bad)


def test_plan_hits_only_the_nth_match_on_the_cpu():
    h = EmulatedHost(2, trace=False)
    plan = FaultPlan().add(TdxLeaf.TDH_SYS_RD, TdxStatus.TDX_SYS_BUSY, cpu=1, nth=2)
    install_fault_plan(h.fw, plan)
    k = h.kernel
    got = [h.run_on(c, read_sys_metadata_field, k, MdField.MINOR_VERSION)[0] for c in (0, 1, 1, 1)]
    assert got == [0, 0, -5, 0]  # cpu1's second read failed (-EIO), nothing else
    assert plan.fired == 1 and "cpu1" in plan.log[0]


def test_emulate_rejects_a_bad_fault_spec_in_one_line(tmp_path):
    import subprocess
    import sys

    r = subprocess.run([sys.executable, "-m", "tdxseam.cli", "emulate", "--mount", str(tmp_path),
                        "--fault", "P_SEAMLDR_INSTALL@9=EBADHASH", "--cpus", "4"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [
        "tdxseam: error: --fault 'P_SEAMLDR_INSTALL@9=EBADHASH': there is no cpu9 on a 4-CPU host"]
