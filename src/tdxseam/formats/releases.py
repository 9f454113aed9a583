"""Intel's releases as published: test data and a cross-check, never a source of identity.

What a module is comes from its files (`formats.identity`); this table only lets identity refuse
an Intel-signed file that contradicts what Intel published (a file named 1.5.13 whose binary is
another build). A release it does not list is fine, and no code path needs it: tests remove
entries to show that every release is identified the same without them.
Values: spec-formats §10.3 (tdx_feature0 from the fixture mapping copy, which Intel later
changed for some releases: informational, not authoritative) and §11.1 (MRSEAM, build, SVN).
"""

from __future__ import annotations


from tdxseam.formats.record import record
from tdxseam.formats.version import ModuleVersion


@record(frozen=True)
class KnownRelease:
    version: ModuleVersion
    mrseam: bytes  # = SEAMHASH
    build: int
    tdx_features0: int
    seamsvn: int
    module_pages: int
    date: int  # sigstruct date, BCD yyyymmdd


def _r(v: str, mrseam: str, build: int, feat: int, svn: int, pages: int, date: int) -> KnownRelease:
    return KnownRelease(ModuleVersion.parse(v), bytes.fromhex(mrseam), build, feat, svn, pages, date)


KNOWN_RELEASES: tuple[KnownRelease, ...] = (
    _r("1.5.01", "9790d89a10210ec6968a773cee2ca05b5aa97309f36727a968527be4606fc19e6f73acce350946c9d46a9bf7a63f8430",
       595, 0xF0FBF, 0x104, 102, 0x20231008),
    _r("1.5.05", "1cc6a17ab799e9a693fac7536be61c12ee1e0fabada82d0c999e08ccee2aa86de77b0870f558c570e7ffe55d6d47fa04",
       698, 0x61F0FBF, 0x105, 102, 0x20240129),
    _r("1.5.06", "5b38e33a6487958b72c3c12a938eaa5e3fd4510c51aeeab58c7d5ecee41d7c436489d6c8e4f92f160b7cad34207b00c1",
       744, 0x2E1F0FBF, 0x106, 101, 0x20240407),
    _r("1.5.08", "49b66faa451d19ebbdbe89371b8daf2b65aa3984ec90110343e9e2eec116af08850fa20e3b1aa9a874d77a65380ee7e6",
       784, 0x22E1F0FBF, 0x107, 101, 0x20240725),
    _r("1.5.09", "bfb360ac8e6233a1bca1433caf7382d95c165b4a77fb00bf1435e5a08f300cdfead5ee68461afd9b6c728dce7534602d",
       813, 0x26F1F0FBF, 0x108, 109, 0x20240912),
    _r("1.5.13", "27b67e0b20508f0acfb8a99df4283a7c86ae569d85d556a91d4eb20e56b5d42d5e65b31a3a6996e8e461f104f32fdeec",
       864, 0x226F1F0FBF, 0x10A, 109, 0x20250207),
    _r("2.0.02", "685f891ea5c20e8fa27b151bf34bf3b50fbaf7143cc53662727cbdb167c0ad8385f1f6f3571539a91e104a1c96d75e04",
       786, 0x22E1F0FBF, 0x303, 131, 0x20240814),
    _r("2.0.04", "64cae497e0c6221176fe8d3bc9d0cf25b4c97bb24cc16499f77102451f15bb24249f1aa3e5d3bf8897be74ad6c84e648",
       859, 0x12AF1F0FBF, 0x304, 134, 0x20250109),
    _r("2.0.05", "6f65e570e3bc418d2576f31aada40f7f7ce1ea810f964aa9bc70066a89ac1fc6e0d6b76d3f86a16405172b2c3e078528",
       863, 0x226F3F0FBF, 0x304, 134, 0x20250123),
)

RELEASES_BY_SEAMHASH: dict[bytes, KnownRelease] = {r.mrseam: r for r in KNOWN_RELEASES}
RELEASES_BY_VERSION: dict[ModuleVersion, KnownRelease] = {r.version: r for r in KNOWN_RELEASES}


def known_release(seamhash: bytes) -> KnownRelease | None:
    return RELEASES_BY_SEAMHASH.get(bytes(seamhash))


def known_version(version: ModuleVersion) -> KnownRelease | None:
    return RELEASES_BY_VERSION.get(version)


# Test data, as the rest of this module: bytes of handoff data each release's TDH.SYS.SHUTDOWN
# writes, and the least its TDH.SYS.UPDATE reads (a release handed less stops in UPDATE: `ud2` in
# its minimum-size check). No code path reads it: the model learns a binary's size from the
# real-firmware engine (tdxseam.probe.measure_handoff); the tests hold the engine to these.
HANDOFF_DATA_SIZE: dict[ModuleVersion, int] = {
    **{ModuleVersion(1, 5, u): 53_386 for u in (1, 5, 6, 8, 9, 13)},
    ModuleVersion(2, 0, 2): 99_762,
    ModuleVersion(2, 0, 4): 101_810,
    ModuleVersion(2, 0, 5): 101_810,
}

# Test data: TDX_FEATURES0 as each binary answers TDH.SYS.RD (tdxseam firmware probe). The mapping
# file's tdx_feature0 (KnownRelease.tdx_features0) differs for 1.5.05 and the 2.0 releases.
TDX_FEATURES0_REPORTED: dict[ModuleVersion, int] = {
    ModuleVersion(1, 5, 1): 0xF0FBF, ModuleVersion(1, 5, 5): 0x1F0FBF,
    ModuleVersion(1, 5, 6): 0x2E1F0FBF, ModuleVersion(1, 5, 8): 0x22E1F0FBF,
    ModuleVersion(1, 5, 9): 0x26F1F0FBF, ModuleVersion(1, 5, 13): 0x226F1F0FBF,
    ModuleVersion(2, 0, 2): 0x22E1F07BF, ModuleVersion(2, 0, 4): 0x26F1F07BF,
    ModuleVersion(2, 0, 5): 0x26F1F07BF,
}
