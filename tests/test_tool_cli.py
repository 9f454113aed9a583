"""The CLI of the operator tool: JSON shapes, exit codes, one-line errors, lazy imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from _tool_host import make_root
from _cli import run
from tdxseam.cli import exits
from tdxseam.formats import testsign

REPO = Path(__file__).resolve().parent.parent


def one_line_error(err: str) -> bool:
    lines = err.strip().splitlines()
    return len(lines) == 1 and lines[0].startswith("tdxseam: error: ") and "Traceback" not in err


# -- JSON shapes (docs/operator-tool.md) -------------------------------------------------------------


def test_verify_json(capsys, intel_dir):
    blobs = sorted(str(p) for p in (intel_dir / "joined_files").glob("*/*.blob"))
    code, out, _ = run(capsys, "verify", "--json", *blobs)
    rows = json.loads(out)
    assert code == 0 and len(rows) == 9
    for r in rows:
        assert set(r) == {"file", "ok", "version", "problems", "format", "version_source", "signing_key",
                          "debug", "seamsvn", "cpuids", "date", "mrseam", "notes", "identity"}
        assert r["ok"] is True and r["problems"] == [] and r["signing_key"] == "intel"


def test_verify_failure_exit_and_problem_objects(capsys, tmp_path):
    bad = bytearray(testsign.make_blob("1.5.20"))
    bad[0x3000] ^= 0x10
    p = tmp_path / "tdx_module_1.5.20.blob"
    p.write_bytes(bytes(bad))
    pem = tmp_path / "k.pem"
    pem.write_bytes(testsign.public_key_pem())
    code, out, _ = run(capsys, "verify", "--json", "--trust-key", str(pem), str(p))
    r = json.loads(out)[0]
    assert code == exits.FAILED and r["ok"] is False
    assert [x["code"] for x in r["problems"]] == ["v1.checksum", "seamhash"]
    code, out, _ = run(capsys, "verify", "--trust-key", str(pem), str(p))
    assert code == 1 and "FAIL" in out and "seamhash:" in out


def test_mrseam_json(capsys, intel_dir):
    f = intel_dir / "joined_files" / "2.0" / "tdx_module_2.0.04.blob"
    code, out, _ = run(capsys, "mrseam", "--json", str(f))
    r = json.loads(out)[0]
    assert code == 0
    assert {"file", "version", "mrseam", "mrsignerseam", "tee_tcb_svn"} <= set(r)
    assert r["mrseam"].startswith("64cae497e0c6") and r["mrsignerseam"] == "0" * 96
    assert r["tee_tcb_svn"] == "0403" + "0" * 28 and r["version"] == "2.0.04"


def test_mrseam_of_failing_file_is_marked(capsys, tmp_path):
    p = tmp_path / "x.img"
    p.write_bytes(testsign.make_image("1.5.20"))  # test key, not trusted
    code, out, err = run(capsys, "mrseam", str(p))
    assert code == exits.FAILED and "FAILS VERIFICATION" in out and one_line_error(err)


def test_plan_json_and_exit_codes(capsys, tmp_path, intel_dir):
    root = make_root(tmp_path / "h")
    code, out, _ = run(capsys, "plan", "--json", "--catalog", str(intel_dir), "--sysfs-root", str(root))
    p = json.loads(out)
    assert code == 0
    assert set(p) == {"outcome", "message", "selected", "best", "target", "host", "host_checks", "catalog",
                      "releases", "intel", "notes"}
    assert p["outcome"] == "update" and p["selected"]["version"] == "1.5.13"
    assert set(p["releases"][0]) == {"version", "file", "format", "verdict", "reasons", "checks", "mrseam",
                                     "seamsvn", "identity"}
    assert set(p["releases"][0]["checks"][0]) == {"name", "ok", "rule", "reason"}
    assert set(p["intel"]) == {"selected_version", "outcome", "skipped", "comparison"}
    for version, expected in (("1.5.13", exits.UP_TO_DATE),):
        code, _, _ = run(capsys, "plan", "--catalog", str(intel_dir), "--sysfs-root",
                         str(make_root(tmp_path / version, version=version)))
        assert code == expected
    code, out, _ = run(capsys, "plan", "--catalog", str(intel_dir), "--sysfs-root",
                       str(make_root(tmp_path / "z", remaining=0)))
    assert code == exits.BLOCKED and "* 1.5.13    blocked" in out


def test_plan_verbose_lists_passing_checks(capsys, tmp_path, intel_dir):
    root = make_root(tmp_path / "h")
    code, out, _ = run(capsys, "plan", "-v", "--catalog", str(intel_dir), "--sysfs-root", str(root))
    assert code == 0 and "ok td_floor [intel]" in out and "ok verify [strict]" in out


def test_update_json_dry_run_and_history(capsys, tmp_path, intel_dir, monkeypatch):
    root = make_root(tmp_path / "h")
    monkeypatch.setenv("TDXSEAM_HISTORY", str(tmp_path / "hist.jsonl"))
    code, out, _ = run(capsys, "update", "--dry-run", "--json", "--catalog", str(intel_dir),
                       "--sysfs-root", str(root))
    r = json.loads(out)
    assert code == 0 and r["outcome"] == "dry_run" and r["dry_run"] is True
    assert set(r) >= {"outcome", "message", "from_version", "to_version", "file", "image_format", "image_size",
                      "image_sha384", "mrseam", "upload", "version_after", "num_remaining_updates_before",
                      "num_remaining_updates_after", "duration_s", "history", "plan"}
    assert r["to_version"] == "1.5.13" and r["image_format"] == "v2" and r["upload"] is None
    assert (root / "sys/class/firmware/tdx_module/data").read_bytes() == b""
    # a plain directory has no kernel behind it: the upload "succeeds" but version stays 1.5.06
    code, out, _ = run(capsys, "update", "--yes", "--json", "--timeout", "2", "--catalog", str(intel_dir),
                       "--sysfs-root", str(root))
    assert code == exits.VERSION_MISMATCH and json.loads(out)["outcome"] == "version_mismatch"
    code, out, _ = run(capsys, "history", "--json")
    recs = json.loads(out)
    assert code == 0 and [x["outcome"] for x in recs] == ["version_mismatch"]
    assert {"time", "root", "from_version", "to_version", "outcome", "image_sha384", "v"} <= set(recs[0])
    code, out, _ = run(capsys, "history")
    assert code == 0 and "version_mismatch" in out and "1.5.06 -> 1.5.13" in out


def test_history_tolerates_torn_lines(capsys, tmp_path):
    h = tmp_path / "h.jsonl"
    h.write_text('{"outcome": "updated", "time": "t"}\n{"torn\n[1]\n')
    code, out, err = run(capsys, "history", "--json", "--history", str(h))
    assert code == 0 and len(json.loads(out)) == 1 and "skipped 2 malformed" in err
    code, out, _ = run(capsys, "history", "--history", str(tmp_path / "none.jsonl"))
    assert code == 0 and "no updates recorded" in out


def test_convert_json(capsys, tmp_path, intel_dir):
    src = intel_dir / "joined_files" / "1.5" / "tdx_module_1.5.06.blob"
    code, out, _ = run(capsys, "convert", "--json", str(src), str(tmp_path / "o.img"))
    r = json.loads(out)
    assert code == 0 and set(r) == {"source", "source_format", "output", "output_format", "size", "sha384"}
    assert r["sha384"].startswith("cadcf7c1ea55")


# -- every error: one line, a documented code, no traceback --------------------------------------------


@pytest.fixture()
def env(tmp_path, intel_dir):
    root = make_root(tmp_path / "root")
    junk = tmp_path / "junk.blob"
    junk.write_bytes(b"junk")
    badmap = tmp_path / "badcat"
    badmap.mkdir()
    (badmap / "mapping_file.json").write_text("{")
    return {"root": str(root), "cat": str(intel_dir), "junk": str(junk), "badmap": str(badmap),
            "tmp": str(tmp_path), "blob": str(intel_dir / "joined_files/1.5/tdx_module_1.5.06.blob")}


ERROR_CASES = [
    (["verify"], exits.USAGE),
    (["verify", "{tmp}/missing.blob"], exits.BAD_INPUT),
    (["verify", "{tmp}"], exits.BAD_INPUT),
    (["verify", "--trust-key", "{junk}", "{blob}"], exits.BAD_INPUT),
    (["verify", "--bogus"], exits.USAGE),
    (["mrseam", "{tmp}/missing"], exits.BAD_INPUT),
    (["plan", "--sysfs-root", "{root}"], exits.USAGE),
    (["plan", "--catalog", "{tmp}/nope", "--sysfs-root", "{root}"], exits.BAD_INPUT),
    (["plan", "--catalog", "{badmap}", "--sysfs-root", "{root}"], exits.BAD_INPUT),
    (["plan", "--catalog", "{cat}", "--sysfs-root", "{tmp}"], exits.HOST_UNREADABLE),
    (["update", "--catalog", "{cat}", "--sysfs-root", "{root}"], exits.USAGE),  # no --yes, no tty
    (["update", "--json", "--catalog", "{cat}", "--sysfs-root", "{root}"], exits.USAGE),
    (["update", "--yes", "--timeout", "0", "--catalog", "{cat}", "--sysfs-root", "{root}"], exits.USAGE),
    (["update", "9.9.99", "--yes", "--catalog", "{cat}", "--sysfs-root", "{root}"], exits.BAD_INPUT),
    (["update", "not-a-version", "--yes", "--catalog", "{cat}", "--sysfs-root", "{root}"], exits.BAD_INPUT),
    (["update", "9.9.99", "--yes", "--sysfs-root", "{root}"], exits.USAGE),
    (["update", "--yes", "--catalog", "{cat}", "--sysfs-root", "{tmp}"], exits.HOST_UNREADABLE),
    (["convert", "{junk}", "{tmp}/o.img"], exits.BAD_INPUT),
    (["convert", "{blob}", "{tmp}/o.img", "--format", "v9"], exits.USAGE),
    (["convert", "{blob}", "{tmp}"], exits.USAGE),
    (["history", "--history", "{tmp}"], exits.BAD_INPUT),
    (["history", "--last", "-1"], exits.USAGE),
    (["info", "--cpus", "x"], exits.USAGE),
    (["nosuchcommand"], exits.USAGE),
]


@pytest.mark.parametrize("argv,code", ERROR_CASES, ids=[" ".join(a[:2]) + f" {c}" for a, c in ERROR_CASES])
def test_errors_are_one_line(capsys, env, argv, code, monkeypatch):
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False, raising=False)
    got, out, err = run(capsys, *[a.format(**env) for a in argv])
    assert got == code, (out, err)
    assert one_line_error(err), err


def test_internal_error_is_one_line(capsys, env, monkeypatch):
    import tdxseam.tool.plan as plan_mod

    def boom(*a, **k):
        raise RuntimeError("simulated bug\nsecond line")

    monkeypatch.setattr(plan_mod, "make_plan", boom)
    code, _, err = run(capsys, "plan", "--catalog", env["cat"], "--sysfs-root", env["root"])
    assert code == exits.INTERNAL and one_line_error(err) and "TDXSEAM_DEBUG" in err


def test_outcome_errors_are_one_line(capsys, env, tmp_path):
    root = make_root(tmp_path / "z", remaining=0)
    code, out, err = run(capsys, "update", "--yes", "--catalog", env["cat"], "--sysfs-root", str(root))
    assert code == exits.BLOCKED and err.strip().startswith("tdxseam: ") and len(err.strip().splitlines()) == 1


def test_subprocess_errors_have_no_traceback(env):
    for argv in (["verify", env["junk"]], ["plan", "--catalog", env["cat"], "--sysfs-root", env["tmp"]]):
        r = subprocess.run([sys.executable, "-m", "tdxseam.cli", *argv], capture_output=True, text=True,
                           timeout=60, cwd=REPO)
        assert r.returncode != 0 and "Traceback" not in r.stderr
        assert len(r.stderr.strip().splitlines()) <= 1 or r.returncode == exits.FAILED


# -- start-up: --help loads no heavy machinery -----------------------------------------------------------


def test_help_imports_nothing_heavy():
    code = ("import sys\nfrom tdxseam.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('rich', 'cryptography', 'greenlet')"
            " or m.startswith(('tdxseam.tool', 'tdxseam.host', 'tdxseam.kernel', 'tdxseam.sysfs',"
            " 'tdxseam.formats', 'tdxseam.seam')))\n"
            "print('HEAVY=' + ','.join(heavy))\n")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO,
                       env={**os.environ, "COLUMNS": "100"})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines()[-1] == "HEAVY=", r.stdout
    assert "Commands:" in r.stdout and "verify" in r.stdout and "plan" in r.stdout
