"""What reaches the terminal: file-borne strings escaped, one JSON document per --json run (errors
included), one JSON type per key across commands, a stale mount named as such."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from _tool_host import make_root
from _cli import run
from tdxseam.cli import exits
from tdxseam.formats import testsign

RED_LIE = "\x1b[31mFAKE: all checks passed\x1b[0m\x1b]0;owned\x07\r"


def _catalog(tmp_path: Path, extra_key: str | None = None) -> Path:
    cat = tmp_path / "cat"
    (cat / "joined_files" / "1.5").mkdir(parents=True)
    (cat / "joined_files" / "1.5" / "tdx_module_1.5.20.blob").write_bytes(testsign.make_blob("1.5.20"))
    rel = {"version": "1.5.20", "min_module_version_for_td_preserving": "1.5.00",
           "min_seamldr_versions": ["1.5.00"], "tdx_feature0": "0x1", "strict_compat_versions": []}
    if extra_key is not None:
        rel[extra_key] = 1
    (cat / "mapping_file.json").write_text(json.dumps(
        {"Header": {"Copyright": "c", "Info": "i", "Version": "1.0"}, "tdx_module_releases": [rel]}))
    return cat


def test_escape_keeps_text_and_shows_controls():
    from tdxseam.cli.output import escape

    assert escape("ok: 1.5.20 → fine\n\ttab") == "ok: 1.5.20 → fine\n\ttab"
    assert escape(RED_LIE) == "\\x1b[31mFAKE: all checks passed\\x1b[0m\\x1b]0;owned\\x07\\x0d"
    assert escape("\u202eevil\x9b") == "\\u202eevil\\x9b"


def test_mapping_key_with_escape_sequences_reaches_the_terminal_escaped(capsys, tmp_path):
    cat = _catalog(tmp_path, RED_LIE)
    root = make_root(tmp_path / "root")
    pem = tmp_path / "k.pem"
    pem.write_bytes(testsign.public_key_pem())
    code, out, err = run(capsys, "plan", "--catalog", str(cat), "--sysfs-root", str(root), "--trust-key", str(pem))
    assert code == exits.OK, err
    assert "\\x1b[31mFAKE: all checks passed" in out  # the warning is shown, made harmless
    for ch in "\x1b\x07\r":
        assert ch not in out and ch not in err


def test_error_lines_are_escaped_too(capsys, tmp_path):
    bad = tmp_path / ("x" + RED_LIE + ".blob")
    code, out, err = run(capsys, "verify", str(bad))
    assert code == exits.BAD_INPUT and "\x1b" not in err and "\\x1b[31m" in err


def _one_doc(out: str) -> dict:
    doc = json.loads(out)  # raises on nothing or on two documents
    assert isinstance(doc, dict)
    return doc


@pytest.mark.parametrize("argv,code", [
    (["plan", "--json", "--catalog", "{cat}", "--sysfs-root", "{tmp}"], exits.HOST_UNREADABLE),
    (["verify", "--json", "{tmp}/none.blob"], exits.BAD_INPUT),
    (["update", "--json", "--dry-run", "--catalog", "{tmp}/nocat", "--sysfs-root", "{tmp}"], exits.BAD_INPUT),
    (["history", "--json", "--last", "-1"], exits.USAGE),
    (["sim", "run", "--json", "--cpus", "0"], exits.USAGE),
    (["stress", "--json", "--calls", "x"], exits.USAGE),
])
def test_json_errors_are_one_document_on_stdout(capsys, tmp_path, argv, code):
    cat = _catalog(tmp_path)
    argv = [a.format(tmp=tmp_path, cat=cat) for a in argv]
    got, out, err = run(capsys, *argv)
    doc = _one_doc(out)
    assert got == code and doc["ok"] is False and doc["exit"] == code
    assert isinstance(doc["error"], str) and doc["error"] in err


def test_stale_fuse_mount_is_named(capsys, tmp_path, monkeypatch):
    """A FUSE server that died leaves its mount answering ENOTCONN; that is not "not a TDX host"."""
    root = make_root(tmp_path / "root")

    def dead(real):  # every look under the mount fails as on a mount whose server is gone
        def call(path, *a, **kw):
            if isinstance(path, (str, os.PathLike)) and os.fspath(path).startswith(str(root)):
                raise OSError(errno.ENOTCONN, "Transport endpoint is not connected", os.fspath(path))
            return real(path, *a, **kw)
        return call

    monkeypatch.setattr(os, "stat", dead(os.stat))
    monkeypatch.setattr(os, "open", dead(os.open))
    code, out, err = run(capsys, "plan", "--json", "--catalog", str(_catalog(tmp_path)), "--sysfs-root", str(root))
    doc = _one_doc(out)
    assert code == exits.HOST_UNREADABLE and "stale FUSE mount" in doc["error"] and "ENOTCONN" in doc["error"]
    assert "not a TDX host" not in doc["error"]


def _types(doc, acc: dict[str, set[str]]) -> None:
    if isinstance(doc, dict):
        for k, v in doc.items():
            if v is not None:
                acc.setdefault(k, set()).add(type(v).__name__)
            if k not in ("upload_files", "errors", "violation_kinds", "sources", "coverage"):  # maps: their keys are data
                _types(v, acc)
    elif isinstance(doc, list):
        for v in doc:
            _types(v, acc)


def test_one_json_type_per_key_across_commands(capsys, tmp_path):
    cat = _catalog(tmp_path)
    root = make_root(tmp_path / "root")
    pem = tmp_path / "k.pem"
    pem.write_bytes(testsign.public_key_pem())
    blob = cat / "joined_files" / "1.5" / "tdx_module_1.5.20.blob"
    runs = [
        ["info", "--json", "--cpus", "2"],
        ["stress", "--json", "--cpus", "2", "--calls", "2"],
        ["sim", "run", "--json", "--seed", "3"],
        ["sim", "campaign", "--json", "--runs", "2", "--jobs", "1"],
        ["verify", "--json", "--trust-key", str(pem), str(blob)],
        ["mrseam", "--json", "--trust-key", str(pem), str(blob)],
        ["plan", "--json", "--catalog", str(cat), "--sysfs-root", str(root), "--trust-key", str(pem)],
        ["update", "--json", "--dry-run", "--catalog", str(cat), "--sysfs-root", str(root), "--trust-key", str(pem)],
        ["convert", "--json", str(blob), str(tmp_path / "out.img")],
        ["history", "--json", "--history", str(tmp_path / "h.jsonl")],
        ["demo", "--json", "--synthetic", "--cpus", "2", "--tds", "1"],
        ["plan", "--json", "--catalog", str(cat), "--sysfs-root", str(tmp_path)],  # an error document
    ]
    acc: dict[str, set[str]] = {}
    for argv in runs:
        _, out, err = run(capsys, *argv)
        _types(json.loads(out), acc)
    mixed = {k: v for k, v in acc.items() if len(v) > 1}
    assert not mixed, mixed
