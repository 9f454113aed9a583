"""Golden values and cached readers shared by the tests of `tdxseam.formats`.

The golden values are copied from spec-formats §11 on purpose (not imported from
`tdxseam.formats.releases`), so a wrong value in the package cannot make its own test pass.
Intel's files are read from the `intel_dir` fixture only, never copied into the repo.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from tdxseam.formats import testsign


@dataclass(frozen=True)
class Golden:
    version: str
    bin_size: int
    date: int
    build: int
    seamsvn: int
    cpuids: tuple[int, ...]
    mrseam: str
    blob_size: int
    v1_checksum: int
    v2_checksum: int
    v2_sha384: str
    rip_offset: int
    gdt_idt_offset: int
    fault_wrapper_offset: int
    global_data_pages: int
    handoff_pages: int
    reserved3_head: str
    tdx_feature0: int  # fixture mapping copy


GOLDEN: tuple[Golden, ...] = (
    Golden("1.5.01", 417792, 0x20231008, 595, 0x104, (0x806F8, 0xC06F0),
           "9790d89a10210ec6968a773cee2ca05b5aa97309f36727a968527be4606fc19e6f73acce350946c9d46a9bf7a63f8430",
           425984, 0xD229, 0x70C8,
           "86a42496bb2b28f9244acda77b08db95213116a4fc1b9624578bca35e542ae44dc24a55641a54d9042fa9aa9e52061bb",
           0x38E24, 0x5C000, 0x38F84, 21, 13, "0000000000000000", 0xF0FBF),
    Golden("1.5.05", 417792, 0x20240129, 698, 0x105, (0x806F8, 0xC06F0, 0xA06F0),
           "1cc6a17ab799e9a693fac7536be61c12ee1e0fabada82d0c999e08ccee2aa86de77b0870f558c570e7ffe55d6d47fa04",
           425984, 0x564C, 0xF4EB,
           "3db95855c0e00ec29ffabe4c1b675741cb92069009a46e2305150ce43a151a425c40b01d0b25a00fba2a70349dc6bc20",
           0x3922C, 0x5C000, 0x3938C, 21, 13, "0000000000000000", 0x61F0FBF),
    Golden("1.5.06", 413696, 0x20240407, 744, 0x106, (0x806F8, 0xC06F0, 0xA06F0),
           "5b38e33a6487958b72c3c12a938eaa5e3fd4510c51aeeab58c7d5ecee41d7c436489d6c8e4f92f160b7cad34207b00c1",
           421888, 0x06D5, 0x9575,
           "cadcf7c1ea5517f15068d920db7043701d224e274975c834477e48dfdcd4fb6fef648eb1065bda0f5e1300d4e3d71841",
           0x33B70, 0x5A000, 0x33CD0, 21, 13, "0000000000000000", 0x2E1F0FBF),
    Golden("1.5.08", 413696, 0x20240725, 784, 0x107, (0x806F8, 0xC06F0, 0xA06F0),
           "49b66faa451d19ebbdbe89371b8daf2b65aa3984ec90110343e9e2eec116af08850fa20e3b1aa9a874d77a65380ee7e6",
           421888, 0x86D5, 0x1575,
           "e617bbdd64634b23583dd6cfb75da1ec39a8fe6885082ca6766e0d76265ba4fde9cfe0aa18cc1c0d62c7f3cb52f25ad4",
           0x33D58, 0x5A000, 0x33EB8, 21, 13, "0000000000000000", 0x22E1F0FBF),
    Golden("1.5.09", 446464, 0x20240912, 813, 0x108, (0x806F8, 0xC06F0, 0xA06F0),
           "bfb360ac8e6233a1bca1433caf7382d95c165b4a77fb00bf1435e5a08f300cdfead5ee68461afd9b6c728dce7534602d",
           454656, 0x041D, 0x12B5,
           "ab809ac82597b0d184bf73baa77c6fee062b0a76f0a3067179877d7b7df51788c148a1b719c3ddba16bbf77f20fd2cbd",
           0x35320, 0x60000, 0x35480, 21, 13, "0000000000000000", 0x26F1F0FBF),
    Golden("1.5.13", 446464, 0x20250207, 864, 0x10A, (0x806F8, 0xC06F0, 0xA06F0),
           "27b67e0b20508f0acfb8a99df4283a7c86ae569d85d556a91d4eb20e56b5d42d5e65b31a3a6996e8e461f104f32fdeec",
           454656, 0x73EE, 0x8286,
           "966acf9e84e5346e676db63f9417ebe28997f5a77f70093dc062d61a464c315b5f503a8b11ed6358524ae4435f40c6e8",
           0x379DC, 0x4B000, 0x37B3C, 21, 13, "0000000000000000", 0x226F1F0FBF),
    Golden("2.0.02", 536576, 0x20240814, 786, 0x303, (0xA06D0,),
           "685f891ea5c20e8fa27b151bf34bf3b50fbaf7143cc53662727cbdb167c0ad8385f1f6f3571539a91e104a1c96d75e04",
           544768, 0xF5B6, 0x643A,
           "1d5346b37bae4e603b4af7370870e317088fea615e3072fbc4b47a2d025ccbb160d45c77719dd2d0b3f57092e0b7bdf1",
           0x47158, 0x76000, 0x472B8, 33, 24, "0200000212030000", 0x22E1F0FBF),
    Golden("2.0.04", 548864, 0x20250109, 859, 0x304, (0xA06D0, 0xA06E0),
           "64cae497e0c6221176fe8d3bc9d0cf25b4c97bb24cc16499f77102451f15bb24249f1aa3e5d3bf8897be74ad6c84e648",
           557056, 0xD97D, 0x77FE,
           "165067dd5ea6b9730b3dcab3bcb7e95f54712bc0f0e6d2251cd46d72e5ef66bfc0417a6668144075454f9ad32fbaafd4",
           0x4AB18, 0x78000, 0x4AC78, 33, 24, "040000025b030800", 0x12AF1F0FBF),
    Golden("2.0.05", 548864, 0x20250123, 863, 0x304, (0xA06D0, 0xA06E0),
           "6f65e570e3bc418d2576f31aada40f7f7ce1ea810f964aa9bc70066a89ac1fc6e0d6b76d3f86a16405172b2c3e078528",
           557056, 0x6208, 0x0089,
           "e3d4ff576e21354071a810225f5c4619e9bd08a6bb3480a86af119cd0a43430e8efd4b212151f1325a99927b5a2f856e",
           0x4AAF8, 0x78000, 0x4AC58, 33, 24, "050000025f030000", 0x226F3F0FBF),
)
GOLDEN_BY_VERSION = {g.version: g for g in GOLDEN}
VERSIONS = [g.version for g in GOLDEN]
SEPARATE = ["1.5.06", "2.0.04"]  # releases shipped as separate .bin + .sigstruct too

INTEL_KEY_HASH_HEX = (
    "c8572f548869a0beca19376b81c2dffc2a23b5a5f71da0b87579b43f408daa1a33bad9c149eb56c634f883737968a34c"
)


def line(version: str) -> str:
    return version.rsplit(".", 1)[0]


@lru_cache(maxsize=None)
def _read(path: Path) -> bytes:
    return path.read_bytes()


def blob(intel_dir: Path, version: str) -> bytes:
    return _read(intel_dir / "joined_files" / line(version) / f"tdx_module_{version}.blob")


def separate(intel_dir: Path, version: str) -> tuple[bytes, bytes]:
    folder = intel_dir / "separate_files" / line(version) / version
    stem = f"tdx_module_{version}"
    return _read(folder / f"{stem}.sigstruct"), _read(folder / f"{stem}.bin")


def parts(intel_dir: Path, version: str) -> tuple[bytes, bytes]:
    """(sigstruct, module) cut from the blob as spec-formats §0 says."""
    b = blob(intel_dir, version)
    return b[0x1000:0x1800], b[0x2000:]


@lru_cache(maxsize=None)
def synthetic(version: str = "1.5.08", style: str = "1.5", pages: int = 4) -> tuple[bytes, bytes]:
    return testsign.make_module(version, style=style, pages=pages)  # type: ignore[arg-type]


def flip(data: bytes, offset: int, bit: int = 0) -> bytes:
    out = bytearray(data)
    out[offset] ^= 1 << bit
    return bytes(out)
