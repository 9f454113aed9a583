"""The real-firmware engine as an identity source: plugged in as a callable, tested with a fake."""

from __future__ import annotations

import json
import os
import sys
import types

import pytest

from tdxseam import probe as P
from tdxseam.formats import testsign
from tdxseam.formats.identity import IdentityError, Source, resolve_identity
from tdxseam.formats.sigstruct import Sigstruct
from tdxseam.formats.version import ModuleVersion
from tdxseam.tool.catalog import module_from_bytes
from tdxseam.tool.verify import VerifyOptions, verify_module


class FakeEngine:
    """`probe_module(module_bin, sigstruct, lps)` as the engine offers it; counts its runs."""

    def __init__(self, version="1.5.16", build=869, date=20250219, features=0x226F1F0FBF, fail=None):
        self.v, self.build, self.date, self.features, self.fail = ModuleVersion.parse(version), build, date, features, fail
        self.runs = 0

    def __call__(self, module_bin: bytes, sigstruct: bytes, lps: int = 4):
        self.runs += 1
        if self.fail:
            raise RuntimeError(self.fail)
        v = self.v
        return types.SimpleNamespace(version=str(v), major=v.major, minor=v.minor, update=v.update, internal=0,
                                     build_num=self.build, build_date=self.date, tdx_features0=self.features,
                                     ok=True, error=None)


def _renamed():
    s, m = testsign.make_module("1.5.16", build=869, date=20250219, identity="immediates")
    return s, m, module_from_bytes(testsign.make_blob("1.5.16", build=869, date=20250219, identity="immediates"),
                                   "module.blob")


def test_the_engine_identifies_a_renamed_file():
    engine = FakeEngine()
    probe = P.make_probe(engine)
    s, m, mf = _renamed()
    trusted = (testsign.signing_key().key_hash,)
    without = verify_module(mf, VerifyOptions(trusted))
    assert without.codes == ["identity.unknown"]  # the files alone cannot tell
    res = verify_module(mf, VerifyOptions(trusted, probe=probe))
    assert res.ok and res.version == ModuleVersion(1, 5, 16) and res.version_source == "firmware"
    assert res.identity.tdx_features0 == 0x226F1F0FBF
    verify_module(mf, VerifyOptions(trusted, probe=probe))
    assert engine.runs == 1  # cached by content


def test_the_engine_is_checked_against_the_files():
    s, m, _ = _renamed()
    probe = P.make_probe(FakeEngine(build=870))
    with pytest.raises(IdentityError, match="build number"):
        resolve_identity(Sigstruct.from_bytes(s), m, probe=probe)


def test_an_engine_that_fails_is_a_note_not_a_source():
    s, m, _ = _renamed()
    probe = P.make_probe(FakeEngine(fail="cannot emulate VMREAD"))
    ident = resolve_identity(Sigstruct.from_bytes(s), m, probe=probe, name="tdx_module_1.5.16.bin")
    assert ident.source is Source.BINARY and "cannot emulate VMREAD" in ident.notes[0]


def test_modes(monkeypatch):
    monkeypatch.setitem(sys.modules, "tdxseam.seam.real.probe", None)  # not importable
    assert P.firmware_probe("auto") is None and P.firmware_probe("off") is None
    with pytest.raises(P.ProbeUnavailable, match="unicorn and capstone"):
        P.firmware_probe("on")
    engine = FakeEngine()
    monkeypatch.setitem(sys.modules, "tdxseam.seam.real.probe", types.SimpleNamespace(probe_module=engine))
    assert P.firmware_probe("off") is None
    probe = P.firmware_probe("auto")
    s, m, _ = _renamed()
    assert probe(s, m).build_num == 869 and engine.runs == 1
    monkeypatch.setenv(P.PROBE_ENV, "off")
    assert P.firmware_probe() is None


def test_demo_with_the_engine_boots_what_it_says(tmp_path):
    """The emulated platform is told what the engine found: the renamed file installs as 1.5.16."""
    from tdxseam.demo import run_demo

    f = tmp_path / "module.blob"
    f.write_bytes(testsign.make_blob("1.5.16", build=869, date=20250219, identity="immediates"))
    r = run_demo(cpus=4, tds=2, from_="1.5.06", to=str(f), synthetic=True, probe=P.make_probe(FakeEngine()))
    assert r.ok and r.version_after == "1.5.16" and r.tds_preserved == 2
    assert r.to_identity["summary"] == "1.5.16 build 869 (2025-02-19): identity from the module's own TDH.SYS.RD answers"


def test_the_real_engine_names_a_renamed_intel_release(intel_dir, tmp_path, capsys):
    """Source one for real: Intel's 1.5.13 renamed `module.blob` states no update number in its
    files, but the binary, run by the engine, says what it is; with the engine off the same file
    needs --module-version."""
    pytest.importorskip("unicorn")
    pytest.importorskip("capstone")
    from tdxseam.cli import main

    renamed = tmp_path / "module.blob"
    renamed.write_bytes((intel_dir / "joined_files" / "1.5" / "tdx_module_1.5.13.blob").read_bytes())
    for mode, code in (("on", 0), ("off", 3)):
        os.environ[P.PROBE_ENV] = mode
        try:
            with pytest.raises(SystemExit) as e:
                main(["verify", "--json", str(renamed)])
        finally:
            os.environ[P.PROBE_ENV] = "off"
        out, err = capsys.readouterr()
        assert e.value.code == code, err
        if mode == "on":
            doc = json.loads(out)
            ident = doc[0]["identity"]
            assert ident["version"] == "1.5.13" and ident["build_num"] == 864
            assert ident["sources"]["update"] == "firmware"
        else:
            assert "--module-version" in (err + out)
