"""Module identity from the files: how long each source takes, per release.

    .venv/bin/python bench/bench_identity.py [--runs N]

For each of Intel's fixture releases (or synthetic modules when they are absent), the median of N
runs (milliseconds) of: finding the build constants in the binary (both forms searched), and the
whole `resolve_identity` (file name, mapping row, release-data cross-check); the form that matched;
and, as the ratio that matters, identity time over SHA-384 of the same module (which every
verify and install pays anyway).
"""

from __future__ import annotations

import argparse
import hashlib
import statistics
import sys
import time


def median_ms(fn, runs: int) -> float:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        out.append((time.perf_counter() - t) * 1000)
    return statistics.median(out)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    from tdxseam.formats import testsign
    from tdxseam.formats.buildinfo import find_build_constants
    from tdxseam.formats.identity import resolve_identity
    from tdxseam.formats.image import extract
    from tdxseam.formats.mapping import load_mapping
    from tdxseam.formats.sigstruct import Sigstruct

    from tdxseam.demo import find_intel_catalog

    d = find_intel_catalog()
    items = []
    if d is not None:
        mapping = load_mapping(d / "mapping_file.json")
        for f in sorted(d.glob("joined_files/*/*.blob")):
            p = extract(f.read_bytes())
            items.append((f.name, Sigstruct.from_bytes(p.sigstruct), p.module))
    else:
        mapping = None
        print("(Intel's releases not found: synthetic modules)")
        for form in ("immediates", "rodata"):
            s, m = testsign.make_module("1.5.16", build=869, date=20250219, identity=form, pages=100)
            items.append((f"tdx_module_1.5.16.bin ({form})", Sigstruct.from_bytes(s), m))
    print(f"{'file':28} {'KiB':>5} {'form':>10} {'constants':>10} {'identity':>9} {'sha384':>7} {'ratio':>6}")
    for name, sig, module in items:
        c = find_build_constants(module)
        t_c = median_ms(lambda: find_build_constants(module), args.runs)
        t_i = median_ms(lambda: resolve_identity(sig, module, name=name, mapping=mapping), args.runs)
        t_h = median_ms(lambda: hashlib.sha384(module).digest(), args.runs)
        print(f"{name:28} {len(module) // 1024:5} {c.form if c else '-':>10} {t_c:8.2f}ms {t_i:7.2f}ms "
              f"{t_h:5.2f}ms {t_i / t_h:5.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
