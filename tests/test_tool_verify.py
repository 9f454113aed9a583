"""tdxseam verify / mrseam machinery: Intel's real releases, every named failure, test keys.

Intel's files are read from the `intel_dir` fixture and mutated in memory only (never written).
"""

from __future__ import annotations

import struct
from functools import lru_cache
from pathlib import Path

import pytest

from _releases import forget_releases
from tdxseam.formats import testsign
from tdxseam.formats.version import ModuleVersion
from tdxseam.formats.image import build_v1, build_v2
from tdxseam.tool.catalog import load_module_file, load_module_files, module_from_bytes
from tdxseam.tool.mrseam import measurement_json
from tdxseam.tool.verify import TrustedKeys, VerifyOptions, verify_module

# Intel's published MRSEAM values (intel/tdx-module README table; 2.0.05 from SHA-384 of its .bin),
# copied here on purpose rather than imported from tdxseam.formats.releases.
PUBLISHED_MRSEAM = {
    "1.5.01": "9790d89a10210ec6968a773cee2ca05b5aa97309f36727a968527be4606fc19e6f73acce350946c9d46a9bf7a63f8430",
    "1.5.05": "1cc6a17ab799e9a693fac7536be61c12ee1e0fabada82d0c999e08ccee2aa86de77b0870f558c570e7ffe55d6d47fa04",
    "1.5.06": "5b38e33a6487958b72c3c12a938eaa5e3fd4510c51aeeab58c7d5ecee41d7c436489d6c8e4f92f160b7cad34207b00c1",
    "1.5.08": "49b66faa451d19ebbdbe89371b8daf2b65aa3984ec90110343e9e2eec116af08850fa20e3b1aa9a874d77a65380ee7e6",
    "1.5.09": "bfb360ac8e6233a1bca1433caf7382d95c165b4a77fb00bf1435e5a08f300cdfead5ee68461afd9b6c728dce7534602d",
    "1.5.13": "27b67e0b20508f0acfb8a99df4283a7c86ae569d85d556a91d4eb20e56b5d42d5e65b31a3a6996e8e461f104f32fdeec",
    "2.0.02": "685f891ea5c20e8fa27b151bf34bf3b50fbaf7143cc53662727cbdb167c0ad8385f1f6f3571539a91e104a1c96d75e04",
    "2.0.04": "64cae497e0c6221176fe8d3bc9d0cf25b4c97bb24cc16499f77102451f15bb24249f1aa3e5d3bf8897be74ad6c84e648",
    "2.0.05": "6f65e570e3bc418d2576f31aada40f7f7ce1ea810f964aa9bc70066a89ac1fc6e0d6b76d3f86a16405172b2c3e078528",
}
SEAMSVN = {"1.5.01": (1, 4), "1.5.05": (1, 5), "1.5.06": (1, 6), "1.5.08": (1, 7), "1.5.09": (1, 8),
           "1.5.13": (1, 10), "2.0.02": (3, 3), "2.0.04": (3, 4), "2.0.05": (3, 4)}
SIGSTRUCT = 0x1000  # offset of the sigstruct in a v1 blob
MODULE = 0x2000


def blob_path(intel_dir: Path, version: str) -> Path:
    line = version.rsplit(".", 1)[0]
    return intel_dir / "joined_files" / line / f"tdx_module_{version}.blob"


@lru_cache(maxsize=None)
def _blob(path: str) -> bytes:
    return Path(path).read_bytes()


def blob(intel_dir: Path, version: str) -> bytes:
    return _blob(str(blob_path(intel_dir, version)))


def flip(data: bytes, offset: int, bit: int = 0) -> bytes:
    out = bytearray(data)
    out[offset] ^= 1 << bit
    return bytes(out)


def verify_bytes(data: bytes, name: str = "tdx_module_1.5.06.blob", **kw):
    return verify_module(module_from_bytes(data, name), VerifyOptions(**kw))


# -- Intel's releases -------------------------------------------------------------------------------


@pytest.mark.parametrize("version", sorted(PUBLISHED_MRSEAM))
def test_every_release_verifies_with_published_mrseam(intel_dir, version):
    res = verify_module(load_module_file(blob_path(intel_dir, version)))
    assert res.ok, res.problems
    assert str(res.version) == version
    assert res.signing_key == "intel"
    m = measurement_json(res)
    assert m["mrseam"] == PUBLISHED_MRSEAM[version]
    assert m["mrsignerseam"] == "00" * 48
    major, minor = SEAMSVN[version]
    assert m["tee_tcb_svn"] == bytes([minor, major]).hex() + "00" * 14
    assert m["seamsvn"] == f"{major}.{minor}"
    j = res.to_json()
    assert {"file", "ok", "version", "problems"} <= j.keys() and j["ok"] is True and j["problems"] == []
    # 2.0 sigstructs declare their version; 1.5 builds state theirs in the binary, the update
    # number in the file name; TDX_FEATURES0 from the catalog's mapping file
    assert res.version_source == ("sigstruct" if version.startswith("2.") else "binary")
    assert j["identity"]["sources"]["update"] == ("sigstruct" if version.startswith("2.") else "file-name")
    assert j["identity"]["sources"]["tdx_features0"] == "mapping"


@pytest.mark.parametrize("version", ["1.5.06", "2.0.04"])
def test_separate_files_verify_as_a_pair(intel_dir, version):
    line = version.rsplit(".", 1)[0]
    d = intel_dir / "separate_files" / line / version
    # either half names the pair; both given count once
    files = load_module_files([str(d / f"tdx_module_{version}.bin"), str(d / f"tdx_module_{version}.sigstruct")])
    assert len(files) == 1 and files[0].format == "pair"
    res = verify_module(files[0])
    assert res.ok and str(res.version) == version
    assert measurement_json(res)["mrseam"] == PUBLISHED_MRSEAM[version]
    via_sig = verify_module(load_module_file(d / f"tdx_module_{version}.sigstruct"))
    assert via_sig.ok and via_sig.sig == res.sig


def test_converted_v2_image_verifies_and_keeps_mrseam(intel_dir):
    data = blob(intel_dir, "1.5.08")
    v2 = build_v2(data[SIGSTRUCT:SIGSTRUCT + 2048], data[MODULE:])
    res = verify_bytes(v2, "tdx_module_1.5.08.img")
    assert res.ok and res.file.format == "v2"
    assert res.sig.seamhash.hex() == PUBLISHED_MRSEAM["1.5.08"]


# -- one-bit changes are caught and named ------------------------------------------------------------

# (offset in the sigstruct, codes that must appear); every signed field plus the unsigned key
SIGSTRUCT_FLIPS = [
    (0x000, {"header_type", "signature"}),
    (0x00C, {"module_type", "signature"}),
    (0x00F, {"debug", "signature"}),  # bit 31 of module_type: debug-signed
    (0x014, {"signature"}),  # date
    (0x050, {"reserved0", "signature"}),
    (0x080, {"key_hash", "signature"}),  # modulus: unsigned, but pinned
    (0x1FF, {"key_hash", "signature"}),
    (0x200, {"exponent"}),  # unsigned; the signature is checked with e = 65537 regardless
    (0x204, {"signature"}),  # the signature itself
    (0x384, {"signature", "seamhash"}),  # SEAMHASH no longer matches the module
    (0x3B4, {"signature"}),  # seamsvn
    (0x3BE, {"signature", "entry"}),  # rip_offset vs the ELF entry point
    (0x3E0, {"signature"}),  # gdt_idt_offset (bit 0: also misaligned)
    (0x3F0, {"reserved3", "signature"}),
    (0x400, {"signature"}),  # cpuid_table_size
    (0x404, {"signature"}),  # first CPUID entry
    (0x7FF, {"signature"}),  # last byte
]


@pytest.mark.parametrize("off,codes", SIGSTRUCT_FLIPS, ids=[f"0x{o:03x}" for o, _ in SIGSTRUCT_FLIPS])
def test_sigstruct_bit_flip_named(intel_dir, off, codes):
    bad = flip(blob(intel_dir, "1.5.06"), SIGSTRUCT + off, 7 if off == 0x00F else 0)
    res = verify_bytes(bad)
    got = set(res.codes)
    assert not res.ok
    assert "v1.checksum" in got  # the blob's u16 sum catches it first
    assert codes <= got, (codes, res.problems)


@pytest.mark.parametrize("where", [0, 0x18, 4096, 200_000, -1])
def test_module_bit_flip_named(intel_dir, where):
    data = blob(intel_dir, "1.5.13")
    off = MODULE + where if where >= 0 else len(data) - 1
    res = verify_bytes(flip(data, off, 3), "tdx_module_1.5.13.blob")
    assert {"v1.checksum", "seamhash"} <= set(res.codes), res.problems
    assert "signature" not in res.codes  # the sigstruct is intact; only the module changed
    msg = next(p.message for p in res.problems if p.code == "seamhash")
    assert "SHA-384 of the module" in msg


def test_flip_in_v2_image_named(intel_dir):
    data = blob(intel_dir, "2.0.05")
    v2 = build_v2(data[SIGSTRUCT:SIGSTRUCT + 2048], data[MODULE:])
    res = verify_bytes(flip(v2, 8192 + 1000), "tdx_module_2.0.05.img")
    assert {"v2.checksum", "seamhash"} <= set(res.codes)
    res = verify_bytes(flip(v2, 4096 + 0x3B4), "tdx_module_2.0.05.img")
    assert {"v2.checksum", "signature"} <= set(res.codes)


def test_header_flips_named(intel_dir):
    data = blob(intel_dir, "1.5.01")
    assert "v1.version" in verify_bytes(flip(data, 0), "tdx_module_1.5.01.blob").codes
    assert "v1.magic" in verify_bytes(flip(data, 9), "tdx_module_1.5.01.blob").codes
    assert "v1.length" in verify_bytes(flip(data, 0x10), "tdx_module_1.5.01.blob").codes
    assert "v1.reserved" in verify_bytes(flip(data, 0x800), "tdx_module_1.5.01.blob").codes
    # the checksum field alone: everything else still verifies
    only = verify_bytes(flip(data, 2), "tdx_module_1.5.01.blob")
    assert only.codes == ["v1.checksum"]


def test_wrong_file_name_is_an_identity_conflict(intel_dir, monkeypatch):
    res = verify_bytes(blob(intel_dir, "1.5.09"), "tdx_module_1.5.13.blob")
    assert res.codes == ["identity.conflict"] and res.identity_problem is res.problems[0]
    assert "1.5.09 build 813" in res.problems[0].message and "1.5.13" in res.problems[0].message
    assert res.version is None  # never a silent pick
    # a 2.0 release says what it is in its sigstruct: refused without any release data
    forget_releases(monkeypatch)
    res = verify_bytes(blob(intel_dir, "2.0.04"), "tdx_module_2.0.05.blob")
    assert res.codes == ["identity.conflict"]
    assert "the sigstruct says 2.0.04 build 859, the file name says 2.0.05" in res.problems[0].message


def test_a_renamed_1_5_release_needs_its_version(intel_dir):
    res = verify_bytes(blob(intel_dir, "1.5.13"), "module.blob")
    assert res.codes == ["identity.unknown"] and "--module-version 1.5.NN" in res.problems[0].message
    res = verify_bytes(blob(intel_dir, "1.5.13"), "module.blob", module_version=ModuleVersion(1, 5, 13))
    assert res.ok and res.identity.describe().startswith("1.5.13 build 864 (2025-02-07): build constants")


def test_truncated_and_garbage_files():
    assert verify_bytes(b"").codes == ["format"]
    assert verify_bytes(b"\0" * 10000, "x.blob").codes == ["format"]
    res = verify_bytes(b"\x00\x01" + b"\0" * 6 + b"TDX-BLOB" + b"\0" * 100, "x.blob")
    assert not res.ok and res.codes[0].startswith("v1.")


# -- synthetic modules and test keys -----------------------------------------------------------------


def _write(tmp: Path, name: str, data: bytes) -> Path:
    p = tmp / name
    p.write_bytes(data)
    return p


def test_test_key_needs_trust_key(tmp_path):
    p = _write(tmp_path, "tdx_module_1.5.20.blob", testsign.make_blob("1.5.20"))
    res = verify_module(load_module_file(p))
    assert res.codes == ["key_hash"] and res.signing_key == "untrusted"
    pem = _write(tmp_path, "test.pem", testsign.public_key_pem())
    keys = TrustedKeys.from_pem_files([str(pem)])
    res = verify_module(load_module_file(p), VerifyOptions(tuple(keys.hashes)))
    assert res.ok and res.signing_key == "trusted" and str(res.version) == "1.5.20"
    assert res.version_source == "synthetic"


def test_other_key_and_debug(tmp_path):
    trusted = (testsign.signing_key().key_hash,)
    other = testsign.signing_key(testsign.OTHER_SEED)
    res = verify_module(load_module_file(_write(tmp_path, "a.blob", testsign.make_blob(key=other))),
                        VerifyOptions(trusted))
    assert res.codes == ["key_hash"]
    dbg = load_module_file(_write(tmp_path, "b.img", testsign.make_image(debug=True)))
    res = verify_module(dbg, VerifyOptions(trusted))
    assert res.codes == ["debug"] and res.sig.is_debug
    assert verify_module(dbg, VerifyOptions(trusted, allow_debug=True)).ok


def test_pair_problems(tmp_path):
    sig, mod = testsign.make_module()
    _write(tmp_path, "m.bin", mod)
    res = verify_module(load_module_file(tmp_path / "m.bin"))
    assert res.codes == ["format"]  # no sigstruct beside it
    _write(tmp_path, "m.sigstruct", sig[:100])
    assert "pair.sigstruct_length" in verify_module(load_module_file(tmp_path / "m.bin")).codes
    _write(tmp_path, "n.sigstruct", sig)
    assert verify_module(load_module_file(tmp_path / "n.sigstruct")).codes[0] == "pair.missing_module"


def test_bad_trust_key_file(tmp_path):
    from tdxseam.tool.errors import ToolError

    with pytest.raises(ToolError, match="not a PEM"):
        TrustedKeys.from_pem_files([str(_write(tmp_path, "k.pem", b"nope"))])
    with pytest.raises(ToolError, match="cannot read"):
        TrustedKeys.from_pem_files([str(tmp_path / "missing.pem")])


def test_ok_blob_built_from_parts_matches_intel(intel_dir):
    data = blob(intel_dir, "1.5.06")
    assert build_v1(data[SIGSTRUCT:SIGSTRUCT + 2048], data[MODULE:]) == data
    assert struct.unpack_from("<I", data, 4)[0] == MODULE
