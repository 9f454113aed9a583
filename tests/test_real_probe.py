"""The real-firmware engine boots each of Intel's releases and reads back what the binary says.

The expected identities below are written out here from Intel's release notes; the engine never
sees them (it has no table: every value comes from the module's own TDH.SYS.RD answers).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

pytest.importorskip("unicorn")
pytest.importorskip("capstone")

from tdxseam.formats.version import ModuleVersion
from tdxseam.formats.releases import HANDOFF_DATA_SIZE, TDX_FEATURES0_REPORTED
from tdxseam.formats.image import extract  # noqa: E402
from tdxseam.formats.status import TdxStatus  # noqa: E402
from tdxseam.seam.real.probe import probe_module  # noqa: E402

KNOWN = {  # version: (build number, build date, internal version)
    "1.5.01": (595, 20231008, 0), "1.5.05": (698, 20240129, 0), "1.5.06": (744, 20240407, 0),
    "1.5.08": (784, 20240725, 4), "1.5.09": (813, 20240912, 0), "1.5.13": (864, 20250207, 0),
    "2.0.02": (786, 20240814, 0), "2.0.04": (859, 20250109, 8), "2.0.05": (863, 20250123, 0),
}


def blob(intel_dir, version: str) -> bytes:
    return (intel_dir / "joined_files" / version[:3] / f"tdx_module_{version}.blob").read_bytes()


@pytest.fixture(scope="module")
def probed(intel_dir, tmp_path_factory):
    """Every release copied to DIR/N/x.blob (a name that says nothing) and probed in one command."""
    root = tmp_path_factory.mktemp("probe")
    files = []
    for i, v in enumerate(KNOWN):
        d = root / str(i)
        d.mkdir()
        (d / "x.blob").write_bytes(blob(intel_dir, v))
        files.append(str(d / "x.blob"))
    proc = subprocess.run([sys.executable, "-m", "tdxseam.cli", "firmware", "probe", "--json", *files],
                          capture_output=True, text=True, timeout=300)
    return proc, dict(zip(KNOWN, json.loads(proc.stdout)))


def test_probe_reports_each_release_as_the_binary_says(probed):
    proc, out = probed
    assert proc.returncode == 0, proc.stderr
    for version, (build, date, _internal) in KNOWN.items():
        r = out[version]
        assert r["ok"] and r["error"] is None, r
        assert (r["version"], r["build_num"], r["build_date"]) == (version, build, date)
        assert r["module_hv"] == 0 and r["min_update_hv"] == 0 and r["no_downgrade"] == 0
        assert int(r["tdx_features0"], 16) & 0x2  # TD-preserving update supported
        assert int(r["tdx_features0"], 16) == TDX_FEATURES0_REPORTED[ModuleVersion.parse(version)]
        assert r["handoff_size"] == HANDOFF_DATA_SIZE[ModuleVersion.parse(version)]
        assert r["instructions"] > 10_000
        assert set(r) == {"file", "ok", "version", "build_num", "build_date", "tdx_features0",
                          "module_hv", "min_update_hv", "no_downgrade", "handoff_size", "instructions",
                          "seconds", "error"}


@pytest.mark.parametrize("version", ["1.5.08", "2.0.04"])
def test_probe_api_reports_the_internal_version_too(intel_dir, version):
    parts = extract(blob(intel_dir, version), what=version)
    r = probe_module(parts.module, parts.sigstruct, lps=4)
    assert (r.version, r.build_num, r.build_date, r.internal) == (version, *KNOWN[version])


def test_probe_api_runs_sys_init_and_lp_init_on_every_lp(intel_dir):
    parts = extract(blob(intel_dir, "2.0.04"), what="2.0.04")
    r = probe_module(parts.module, parts.sigstruct, lps=4)
    assert r.ok, r.error
    assert (r.major, r.minor, r.update, r.internal) == (2, 0, 4, 8)
    assert [(leaf, lp) for leaf, lp, _ in r.calls[:5]] == [
        ("TDH_SYS_INIT", 0), ("TDH_SYS_LP_INIT", 0), ("TDH_SYS_LP_INIT", 1),
        ("TDH_SYS_LP_INIT", 2), ("TDH_SYS_LP_INIT", 3)]
    assert all(rax == TdxStatus.TDX_SUCCESS for _, _, rax in r.calls)
    assert [leaf for leaf, _, _ in r.calls[5:]] == ["TDH_SYS_RD"] * 10


def test_a_required_cpuid_value_cleared_makes_the_module_refuse(intel_dir):
    parts = extract(blob(intel_dir, "1.5.06"), what="1.5.06")
    r = probe_module(parts.module, parts.sigstruct, cleared=frozenset({"cpuid:0x7.0x0"}))
    assert not r.ok
    leaf, lp, rax = r.calls[-1]
    assert (leaf, rax) == ("TDH_SYS_INIT", TdxStatus.TDX_INCORRECT_CPUID_VALUE)
    assert "RCX=0x7 " in r.error  # leaf 7, subleaf 0: the module names the leaf it rejects


def test_a_required_msr_cleared_makes_the_module_refuse(intel_dir):
    parts = extract(blob(intel_dir, "2.0.05"), what="2.0.05")
    r = probe_module(parts.module, parts.sigstruct, cleared=frozenset({"msr:0x982"}))
    assert not r.ok
    assert r.calls[-1][2] == TdxStatus.TDX_INCORRECT_MSR_VALUE | 0x982  # IA32_TME_ACTIVATE


def test_a_value_the_platform_model_lacks_is_a_named_error(intel_dir):
    parts = extract(blob(intel_dir, "1.5.06"), what="1.5.06")
    r = probe_module(parts.module, parts.sigstruct, removed=frozenset({"msr:0x87"}))
    assert not r.ok
    assert "platform model has no MSR 0x87" in r.error
    assert "rdmsr" in r.error and "module code +0x" in r.error


def _data_after_init(parts, seed: int) -> bytes:
    """The module's data region after SYS.INIT and LP.INIT: it holds what RDRAND gave (the
    stack canary, the per-LP random seeds)."""
    import hashlib

    from tdxseam.platform.cpu import Regs
    from tdxseam.seam.real.probe import probe_machine

    machine, fw, _ = probe_machine(parts.sigstruct, parts.module, 4, seed=seed)
    for leaf, cpu in [(33, 0)] + [(35, c) for c in range(4)]:
        regs = Regs(rax=leaf)
        machine.cpus[cpu].seamcall(regs)
        assert regs.rax == 0
    eng = fw.module.engine
    lay = eng.layout
    return hashlib.sha256(bytes(eng.uc.mem_read(lay.data_pa, lay.data_size))).digest()


def test_rdrand_comes_from_the_seed(intel_dir):
    parts = extract(blob(intel_dir, "1.5.06"), what="1.5.06")
    a, b, c = (_data_after_init(parts, s) for s in (7, 7, 8))
    assert a == b and a != c


def test_probe_bad_file_is_one_line_exit_3(tmp_path):
    bad = tmp_path / "junk.blob"
    bad.write_bytes(b"not a module")
    proc = subprocess.run([sys.executable, "-m", "tdxseam.cli", "firmware", "probe", str(bad)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3
    assert "junk.blob" in proc.stdout and "Traceback" not in proc.stderr


def test_without_the_engine_packages_the_command_names_the_extra(tmp_path):
    code = ("import sys; sys.modules['unicorn'] = None; from tdxseam.cli import main; "
            "main(['firmware', 'probe', 'x.blob'])")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                          cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "tdxseam: error: the real-firmware engine needs unicorn: pip install 'tdxseam[real]'"]


def test_probe_module_import_fails_without_the_packages():
    code = ("import sys; sys.modules['capstone'] = None\n"
            "try:\n import tdxseam.seam.real.probe\nexcept ImportError as e: print('IE', e)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert proc.stdout.startswith("IE ") and "tdxseam[real]" in proc.stdout


def test_a_runaway_module_is_a_named_error(intel_dir):
    """The instruction budget of one SEAMCALL: SYS.INIT needs ~8k instructions; give it 1,000."""
    from tdxseam.platform.cpu import Regs
    from tdxseam.seam.real.errors import BudgetExceeded
    from tdxseam.seam.real.probe import probe_machine

    parts = extract(blob(intel_dir, "1.5.06"), what="1.5.06")
    machine, fw, _ = probe_machine(parts.sigstruct, parts.module, 4)
    fw.module.budget = 1_000
    with pytest.raises(BudgetExceeded, match=r"TDH_SYS_INIT ran past its budget of 1,000 instructions"):
        machine.cpus[0].seamcall(Regs(rax=33))


def test_elf_errors_are_named():
    from tdxseam.seam.real import elf

    with pytest.raises(elf.ElfError, match="not an ELF64 image"):
        elf.sections(b"MZ" + bytes(100))
    with pytest.raises(elf.ElfError, match="out of bounds"):
        elf.sections(b"\x7fELF\x02" + bytes(59))


@pytest.mark.parametrize("lps", [1, 6])
def test_topology_follows_the_machine(intel_dir, lps):
    """One LP, or a package that is not a power of two: the CPUID topology still satisfies the
    module (one LP once failed with TDX_INVALID_WBINVD_SCOPE: no SMT level)."""
    parts = extract(blob(intel_dir, "2.0.05"), what="2.0.05")
    r = probe_module(parts.module, parts.sigstruct, lps=lps)
    assert r.ok, r.error
    assert sum(1 for leaf, _, _ in r.calls if leaf == "TDH_SYS_LP_INIT") == lps
