"""The one reader and the one writer (formats.files), and every command that goes through them.

Inputs: a device, a FIFO or a directory is refused with a named error (exit 3) instead of being
read without end, waited on, or crashing; a file larger than its format can be is named. Outputs:
a device node, a FIFO or a symbolic link at OUT is refused and left exactly as it was, even with
--force; a new file honours the umask. Runs go through a subprocess with a memory cap and a
timeout, so the old behaviour (reading /dev/zero until memory runs out, blocking on a FIFO)
fails the test instead of taking the machine down.
"""

from __future__ import annotations

import os
import resource
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tdxseam.cli import exits
from tdxseam.formats import testsign

REPO = Path(__file__).resolve().parent.parent


def _limits() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))  # 1 GiB: /dev/zero cannot eat the host


def cli(*argv: str, timeout: float = 60, cwd: Path | None = None) -> subprocess.CompletedProcess:
    try:
        return subprocess.run([sys.executable, "-m", "tdxseam.cli", *argv], capture_output=True, text=True,
                              timeout=timeout, preexec_fn=_limits, cwd=cwd,
                              env={**os.environ, "TDXSEAM_DEBUG": ""})
    except subprocess.TimeoutExpired:
        pytest.fail(f"tdxseam {' '.join(argv)} still running after {timeout} s (blocked on its input?)")


def one_line(r: subprocess.CompletedProcess, code: int, *words: str) -> None:
    lines = r.stderr.strip().splitlines()
    assert r.returncode == code, (r.returncode, r.stderr)
    assert len(lines) == 1 and lines[0].startswith("tdxseam: error: "), r.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


@pytest.fixture
def blob(tmp_path) -> Path:
    p = tmp_path / "tdx_module_1.5.20.blob"
    p.write_bytes(testsign.make_blob("1.5.20"))
    return p


# -- reading -------------------------------------------------------------------------------------------


def test_verify_dev_zero_is_refused_not_read_forever():
    one_line(cli("verify", "/dev/zero", timeout=30), exits.BAD_INPUT, "/dev/zero", "character device")


def test_verify_fifo_is_refused_without_blocking(tmp_path):
    fifo = tmp_path / "tdx_module_1.5.20.blob"
    os.mkfifo(fifo)
    one_line(cli("verify", str(fifo), timeout=30), exits.BAD_INPUT, "FIFO", "not a regular file")


def test_too_large_file_is_named_from_what_was_read(tmp_path):
    big = tmp_path / "tdx_module_1.5.20.blob"
    with open(big, "wb") as f:  # sparse: 17 MiB on paper, nothing on disk
        f.truncate((16 << 20) + 4096)
    one_line(cli("verify", str(big)), exits.BAD_INPUT, "larger than a TDX module file can be")


def test_sigstruct_path_that_is_a_directory_is_bad_input(tmp_path):
    (tmp_path / "tdx_module_1.5.20.sigstruct").mkdir()
    (tmp_path / "tdx_module_1.5.20.bin").write_bytes(b"\x7fELF" + bytes(8188))
    one_line(cli("verify", str(tmp_path / "tdx_module_1.5.20.bin")), exits.BAD_INPUT, "a directory")
    (tmp_path / "m.so").write_bytes(b"\x7fELF" + bytes(8188))
    (tmp_path / "m.so.sigstruct").mkdir()
    one_line(cli("emulate", "--mount", str(tmp_path), "--module", str(tmp_path / "m.so")), exits.BAD_INPUT,
             "m.so.sigstruct", "a directory")


def test_read_file_bounds_and_kinds(tmp_path):
    from tdxseam.formats.files import FileError, read_file

    p = tmp_path / "f"
    p.write_bytes(b"x" * 10)
    assert read_file(p, 10) == b"x" * 10
    with pytest.raises(FileError) as ei:
        read_file(p, 9, "a nine-byte thing")
    assert ei.value.code == "too_large" and "a nine-byte thing" in str(ei.value)
    with pytest.raises(FileError) as ei:
        read_file(tmp_path, 10)
    assert ei.value.code == "not_regular"
    with pytest.raises(FileError) as ei:
        read_file(tmp_path / "none", 10)
    assert ei.value.code == "missing"


# -- catalogs: an unreadable directory is an error, not an empty one ------------------------------------


def _catalog(tmp_path: Path) -> Path:
    cat = tmp_path / "cat"
    (cat / "joined_files" / "1.5").mkdir(parents=True)
    (cat / "joined_files" / "1.5" / "tdx_module_1.5.20.blob").write_bytes(testsign.make_blob("1.5.20"))
    (cat / "mapping_file.json").write_text(
        '{"Header": {"Copyright": "c", "Info": "i", "Version": "1.0"}, "tdx_module_releases": ['
        '{"version": "1.5.20", "min_module_version_for_td_preserving": "1.5.00", '
        '"min_seamldr_versions": ["1.5.00"], "tdx_feature0": "0x1", "strict_compat_versions": []}]}')
    return cat


@pytest.mark.parametrize("unreadable", ["joined_files/1.5", "joined_files", "."])
def test_unreadable_catalog_directory_is_an_error(tmp_path, monkeypatch, unreadable):
    """As root, permission bits do not stop a listing; a listing that fails (NFS root squash, a
    dead FUSE mount, EIO) is simulated where the catalog lists directories."""
    from tdxseam.tool.catalog import load_catalog
    from tdxseam.tool.errors import ToolError

    cat = _catalog(tmp_path)
    assert [str(r.version) for r in load_catalog(cat).releases] == ["1.5.20"]
    bad = os.path.normpath(cat / unreadable)
    real = os.scandir

    def scandir(path="."):
        if os.path.normpath(os.fspath(path)) == bad:
            raise PermissionError(13, "Permission denied", os.fspath(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)
    with pytest.raises(ToolError) as ei:
        load_catalog(cat)
    assert "EACCES" in str(ei.value) or "Permission denied" in str(ei.value)


# -- writing -------------------------------------------------------------------------------------------


def _snapshot(p: Path) -> tuple:
    st = os.lstat(p)
    return (stat.S_IFMT(st.st_mode), stat.S_IMODE(st.st_mode), st.st_ino, st.st_rdev,
            os.readlink(p) if stat.S_ISLNK(st.st_mode) else None)


@pytest.mark.parametrize("kind", ["chardev", "fifo", "symlink"])
def test_convert_force_never_replaces_a_device_fifo_or_symlink(tmp_path, blob, kind):
    out = tmp_path / "out.img"
    target = tmp_path / "target"
    target.write_bytes(b"precious")
    if kind == "chardev":
        if os.geteuid() != 0:
            pytest.skip("mknod of a character device needs root")
        os.mknod(out, stat.S_IFCHR | 0o600, os.makedev(1, 3))  # a /dev/null twin
    elif kind == "fifo":
        os.mkfifo(out)
    else:
        out.symlink_to(target)
    before = _snapshot(out)
    r = cli("convert", "--force", str(blob), str(out), timeout=30)
    one_line(r, exits.USAGE, str(out), {"chardev": "character device", "fifo": "FIFO",
                                        "symlink": "symbolic link"}[kind], "left as it was")
    assert _snapshot(out) == before
    assert target.read_bytes() == b"precious"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary left


def test_convert_new_file_honours_the_umask(tmp_path, blob):
    from tdxseam.formats.files import write_file

    old = os.umask(0o027)
    try:
        write_file(tmp_path / "a", b"x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "a").st_mode) == 0o640
    out = tmp_path / "b.img"
    r = subprocess.run(["sh", "-c", f'umask 022 && exec "{sys.executable}" -m tdxseam.cli convert "{blob}" "{out}"'],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert stat.S_IMODE(os.stat(out).st_mode) == 0o644


def test_write_file_replaces_a_regular_file_keeping_its_mode(tmp_path):
    from tdxseam.formats.files import OutputRefused, write_file

    p = tmp_path / "f"
    p.write_bytes(b"old")
    os.chmod(p, 0o600)
    with pytest.raises(OutputRefused):
        write_file(p, b"new")
    write_file(p, b"new", replace=True)
    assert p.read_bytes() == b"new" and stat.S_IMODE(os.stat(p).st_mode) == 0o600


def test_convert_into_a_missing_directory_is_bad_input(tmp_path, blob):
    one_line(cli("convert", str(blob), str(tmp_path / "no" / "out.img")), exits.BAD_INPUT, "cannot write")
    (tmp_path / "file").write_text("")
    one_line(cli("convert", str(blob), str(tmp_path / "file" / "out.img")), exits.BAD_INPUT, "cannot write")


def test_append_and_lock_refuse_fifo_and_symlink(tmp_path):
    from tdxseam.formats.files import OutputRefused, append_line, open_lock

    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    link = tmp_path / "link"
    link.symlink_to(tmp_path / "elsewhere")
    for p in (fifo, link):
        with pytest.raises(OutputRefused):
            append_line(p, b"x\n")
        with pytest.raises(OutputRefused):
            open_lock(p)
    assert not (tmp_path / "elsewhere").exists()
    append_line(tmp_path / "log", b"a\n")
    append_line(tmp_path / "log", b"b\n")
    assert (tmp_path / "log").read_bytes() == b"a\nb\n"


def test_history_on_a_fifo_is_refused(tmp_path):
    fifo = tmp_path / "h"
    os.mkfifo(fifo)
    one_line(cli("history", "--history", str(fifo), timeout=30), exits.BAD_INPUT, "FIFO")


def test_scenario_and_trust_key_and_module_go_through_the_reader(tmp_path):
    one_line(cli("sim", "run", "--scenario", "/dev/zero", timeout=30), exits.BAD_INPUT, "character device")
    one_line(cli("verify", "--trust-key", "/dev/zero", "/dev/null", timeout=30), exits.BAD_INPUT,
             "--trust-key", "character device")
    empty = tmp_path / "empty.blob"
    empty.write_bytes(b"")
    one_line(cli("emulate", "--mount", str(tmp_path), "--module", str(empty), timeout=30), exits.BAD_INPUT,
             "empty")
    one_line(cli("emulate", "--mount", str(tmp_path), "--module", "/dev/zero", timeout=30), exits.BAD_INPUT,
             "character device")
