"""The same files through a real FUSE mount, driven by real processes: `tdxseam emulate --mount`
in the background, a POSIX shell doing what the kernel documentation says, an unprivileged user,
an independent Python client, and termination signals in the middle of an update."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tdxseam.formats import testsign
from tdxseam.sysfs.fuse import fuse_unavailable_reason, is_mounted

REASON = fuse_unavailable_reason()
pytestmark = pytest.mark.skipif(REASON is not None, reason=f"FUSE tests need a usable FUSE: {REASON}")

HERE = Path(__file__).resolve().parent
CLIENT = HERE / "clients" / "fw_upload_client.py"
HOST = "sys/devices/faux/tdx_host"
FW = "sys/class/firmware/tdx_module"


# A trivial filesystem: tells "this environment cannot mount FUSE" (a container without the
# privilege, say) apart from a failure of tdxseam's own mount.
_PROBE = r"""
import errno, stat, sys
import mfusepy

class Probe(mfusepy.Operations):
    use_ns = True

    def getattr(self, path, fh=None):
        if path == "/":
            return {"st_mode": stat.S_IFDIR | 0o755, "st_nlink": 2}
        raise mfusepy.FuseOSError(errno.ENOENT)

    def init(self, path):
        print("mounted", flush=True)

mfusepy.FUSE(Probe(), sys.argv[1], foreground=True)
"""


@pytest.fixture(scope="module", autouse=True)
def fuse_mounts_here():
    mnt = Path(tempfile.mkdtemp(prefix="tdxseam-probe-"))
    proc = subprocess.Popen([sys.executable, "-c", _PROBE, str(mnt)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        r, _, _ = select.select([proc.stdout], [], [], 15)
        line = proc.stdout.readline() if r else ""
        if line.strip() != "mounted":
            proc.kill()
            err = proc.communicate()[1].strip().splitlines()
            pytest.skip(f"FUSE tests need to mount FUSE here, which fails: {err[-1] if err else 'no answer'}")
    finally:
        if is_mounted(str(mnt)):
            subprocess.run(["fusermount3", "-u", str(mnt)], check=False)
        if proc.poll() is None:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        mnt.rmdir()


def tdxseam_cmd() -> list[str]:
    script = Path(sys.executable).parent / "tdxseam"
    return [str(script)] if script.exists() else [sys.executable, "-m", "tdxseam.cli"]


class Emulator:
    """`tdxseam emulate --mount DIR --json ...` as a background process."""

    def __init__(self, mnt: Path, *args: str) -> None:
        self.mnt = mnt
        self.proc = subprocess.Popen([*tdxseam_cmd(), "emulate", "--mount", str(mnt), "--json", *args],
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.ready = self._line(timeout=30)
        assert self.ready and self.ready["event"] == "ready", self.ready
        assert is_mounted(str(mnt))

    def _line(self, timeout: float) -> dict | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r, _, _ = select.select([self.proc.stdout], [], [], 0.1)
            if r:
                line = self.proc.stdout.readline()
                if not line:
                    break
                return json.loads(line)
            if self.proc.poll() is not None:
                break
        err = self.proc.stderr.read() if self.proc.poll() is not None else ""
        raise AssertionError(f"no line from the emulator (exit {self.proc.poll()}): {err}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> dict:
        """Signal it, wait for it to exit; its last line is the final state."""
        self.proc.send_signal(sig)
        out, err = self.proc.communicate(timeout=timeout)
        self.stderr = err
        assert self.proc.returncode == 0, (self.proc.returncode, err)
        final = json.loads(out.strip().splitlines()[-1])
        assert final["event"] == "stopped"
        assert not is_mounted(str(self.mnt))
        return final

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        if is_mounted(str(self.mnt)):
            subprocess.run(["fusermount3", "-u", "-z", str(self.mnt)], check=False)


@pytest.fixture
def start():
    """Start emulators at fresh mount points that every user can reach (pytest's own temporary
    directories are private to the user running the tests)."""
    started: list[Emulator] = []
    dirs: list[Path] = []

    def go(*args: str) -> Emulator:
        mnt = Path(tempfile.mkdtemp(prefix="tdxseam-root-"))
        mnt.chmod(0o755)
        dirs.append(mnt)
        e = Emulator(mnt, *args)
        started.append(e)
        return e

    yield go
    for e in started:
        e.kill()
    for d in dirs:
        try:
            d.rmdir()
        except OSError:
            pass


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("images")
    out = {"good": d / "tdx_module_1.5.08.img", "blob": d / "tdx_module_1.5.08.blob"}
    out["good"].write_bytes(testsign.make_image("1.5.08"))
    out["blob"].write_bytes(testsign.make_blob("1.5.08"))
    return out


def sh(script: str, *args: str, prefix: tuple[str, ...] = (),
       timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([*prefix, "/bin/sh", "-c", script, "sh", *args], capture_output=True, text=True,
                          timeout=timeout)


# What a new user types after reading the kernel documentation.
USER_SCRIPT = r"""
D="$1"; IMAGE="$2"
F="$D/sys/class/firmware/tdx_module"
cat "$D/sys/devices/faux/tdx_host/version"
echo 1 > "$F/loading"
cat "$IMAGE" > "$F/data"
echo 0 > "$F/loading"
n=0
while [ "$(cat "$F/status")" != idle ]; do
    n=$((n + 1)); [ "$n" -lt 3000 ] || { echo "status stuck: $(cat "$F/status")"; exit 9; }
    sleep 0.01
done
echo "error=[$(cat "$F/error")]"
cat "$D/sys/devices/faux/tdx_host/version"
"""


def test_a_new_user_updates_the_module_with_a_shell(start, images):
    emu = start("--cpus", "4", "--tds", "2")
    assert emu.ready["module_version"] == "1.5.06"
    r = sh(USER_SCRIPT, str(emu.mnt), str(images["good"]))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["1.5.06", "error=[]", "1.5.08"], r.stdout + r.stderr
    remaining = sh('cat "$1/sys/class/firmware/tdx_module/remaining_size"', str(emu.mnt)).stdout
    assert remaining == "0\n"
    final = emu.stop()
    assert final["module_version"] == "1.5.08"
    assert final["last_upload"] == "ok"
    assert final["uploads"] == 1
    assert final["tds"] == 2 and "td_problems" not in final  # preserved by the update
    assert "model_errors" not in final


def test_a_bad_image_reads_firmware_invalid_and_changes_nothing(start, images):
    emu = start("--cpus", "4", "--tds", "2")
    assert emu.ready["tds"] == 2
    before = emu.ready["num_remaining_updates"]
    r = sh(USER_SCRIPT, str(emu.mnt), str(images["blob"]))
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == ["1.5.06", "error=[transferring:firmware-invalid]", "1.5.06"], r.stdout
    size = sh('cat "$1/sys/class/firmware/tdx_module/remaining_size"', str(emu.mnt)).stdout
    assert size == f"{images['blob'].stat().st_size}\n"
    final = emu.stop()
    assert final["module_version"] == "1.5.06"
    assert final["num_remaining_updates"] == before
    assert final["last_upload"] == "transferring:firmware-invalid"
    assert final["tds"] == 2 and "td_problems" not in final  # TDs intact


@pytest.mark.skipif(os.geteuid() != 0, reason="switching to another user needs root")
def test_an_unprivileged_user_is_refused_where_the_kernel_refuses(start, images):
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed")
    emu = start("--cpus", "2")
    d = str(emu.mnt)
    nobody = ("setpriv", "--reuid=65534", "--regid=65534", "--clear-groups")
    r = sh('cat "$1/sys/devices/faux/tdx_host/version"; cat "$1/sys/class/firmware/tdx_module/status"',
           d, prefix=nobody)
    assert (r.returncode, r.stdout) == (0, "1.5.06\nidle\n"), r.stderr
    for script in ('cat "$1/sys/devices/faux/tdx_host/seamldr_version"',
                   'cat "$1/sys/devices/faux/tdx_host/num_remaining_updates"',
                   'echo 1 > "$1/sys/class/firmware/tdx_module/loading"',
                   'cat "$2" > "$1/sys/class/firmware/tdx_module/data"',
                   'echo 1 > "$1/sys/class/firmware/tdx_module/cancel"'):
        r = sh(script, d, str(images["good"]), prefix=nobody)
        assert r.returncode != 0 and "Permission denied" in r.stderr, (script, r.stderr)
    # root without CAP_SYS_RAWIO: `loading` works, `data` refuses with EPERM
    no_rawio = ("setpriv", "--inh-caps=-sys_rawio", "--bounding-set=-sys_rawio")
    r = sh('echo 1 > "$1/sys/class/firmware/tdx_module/loading" && '
           'cat "$2" > "$1/sys/class/firmware/tdx_module/data"', d, str(images["good"]), prefix=no_rawio)
    assert r.returncode != 0 and "Operation not permitted" in r.stderr, r.stderr
    # the kernel's refusals for root too
    r = sh('echo 1 > "$1/sys/devices/faux/tdx_host/version"', d)
    assert "Permission denied" in r.stderr
    r = sh('cat "$1/sys/class/firmware/tdx_module/cancel"', d)
    assert "Permission denied" in r.stderr
    r = sh('echo x > "$1/proc/cpuinfo"', d)
    assert "I/O error" in r.stderr or "Input/output error" in r.stderr, r.stderr  # dash / bash
    r = sh('mkdir "$1/sys/x"', d)
    assert "Operation not permitted" in r.stderr
    r = sh('ls -l "$1/sys/class/firmware/tdx_module/" "$1/sys/devices/faux/tdx_host/"', d)
    listing = r.stdout
    for line, mode in (("cancel", "--w-------"), ("data", "-rw-r--r--"), ("error", "-r--r--r--"),
                       ("loading", "-rw-r--r--"), ("seamldr_version", "-r--------"),
                       ("num_remaining_updates", "-r--------"), ("version", "-r--r--r--")):
        lines = listing.splitlines()
        assert any(ln.startswith(mode) and ln.endswith(" " + line) for ln in lines), (line, listing)
    emu.stop()


def test_an_independent_python_client_runs_a_whole_update(start, images):
    source = CLIENT.read_text()
    assert "tdxseam" not in source.replace("knows nothing of tdxseam", "")  # only the kernel's files
    emu = start("--cpus", "4")
    r = subprocess.run([sys.executable, "-I", str(CLIENT), str(emu.mnt), str(images["good"])],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    out = json.loads(r.stdout)
    assert out["version_before"] == "1.5.06"
    assert out["version_after"] == "1.5.08"
    assert out["error"] == ""
    assert out["remaining_size"] == 0
    assert out["cpus"] == 4
    assert out["num_remaining_updates_after"] == out["num_remaining_updates"] - 1
    assert out["statuses"][-1] == "idle"
    # the same client against a bad image: the kernel's error, nothing else changed
    r = subprocess.run([sys.executable, "-I", str(CLIENT), str(emu.mnt), str(images["blob"])],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 1, r.stdout + r.stderr
    out = json.loads(r.stdout)
    assert out["error"] == "transferring:firmware-invalid"
    assert out["version_after"] == "1.5.08"
    emu.stop()


def test_a_killed_writer_then_a_clean_update(start, images):
    emu = start("--cpus", "2")
    d = str(emu.mnt)
    # a writer that dies after one page, leaving `loading` at 1 and a partial buffer
    writer = subprocess.Popen([sys.executable, "-I", "-c",
                               "import os, sys, time\n"
                               "open(sys.argv[1] + '/loading', 'w').write('1')\n"
                               "fd = os.open(sys.argv[1] + '/data', os.O_WRONLY)\n"
                               "os.write(fd, open(sys.argv[2], 'rb').read(4096))\n"
                               "print('written', flush=True)\n"
                               "time.sleep(60)\n", f"{d}/{FW}", str(images["good"])],
                              stdout=subprocess.PIPE, text=True)
    assert writer.stdout.readline().strip() == "written"
    writer.kill()
    writer.wait()
    assert sh('cat "$1/sys/class/firmware/tdx_module/loading"', d).stdout == "1\n"
    assert sh('wc -c < "$1/sys/class/firmware/tdx_module/data"', d).stdout.strip() == "4096"
    r = sh(USER_SCRIPT, d, str(images["good"]))
    assert r.stdout.splitlines() == ["1.5.06", "error=[]", "1.5.08"], r.stdout + r.stderr
    emu.stop()


def test_sigterm_during_an_update_finishes_it_and_unmounts(start, images):
    # --step-delay paces background kernel work, so the update is still running at the signal
    emu = start("--cpus", "4", "--step-delay", "0.02")
    d = str(emu.mnt)
    # something keeps a file open on the mount: the unmount must still happen (lazily)
    holder = subprocess.Popen(["/bin/sh", "-c", f'exec 3< "{d}/{FW}/status"; sleep 60'])
    try:
        r = sh('F="$1/sys/class/firmware/tdx_module"; echo 1 > "$F/loading" && cat "$2" > "$F/data" '
               '&& echo 0 > "$F/loading" && cat "$F/status"', d, str(images["good"]))
        assert r.returncode == 0, r.stderr
        assert r.stdout.strip() in ("receiving", "preparing", "transferring"), r.stdout
        t0 = time.monotonic()
        final = emu.stop(signal.SIGTERM)
        assert time.monotonic() - t0 < 20
    finally:
        holder.kill()
        holder.wait()
    # the update that was running when the signal came ran to its end: never half a lockstep
    assert final["signal"] == "SIGTERM"
    assert final["update_in_flight"] is True
    assert final["last_upload"] == "ok"
    assert final["module_version"] == "1.5.08"


def test_intel_release_files_as_the_merged_kernel_takes_them(start, intel_dir, tmp_path):
    """Intel's signed 1.5 releases, on a host trusting Intel's key only: the v1 blob Intel ships
    is refused (the merged kernel takes v2 images only), the same release converted to v2 loads."""
    from tdxseam.formats.image import v1_to_v2

    blobs = intel_dir / "joined_files" / "1.5"
    emu = start("--cpus", "4", "--module", str(blobs / "tdx_module_1.5.06.blob"), "--intel-key-only",
                "--tds", "2")
    assert emu.ready["module_version"] == "1.5.06"
    v2 = tmp_path / "tdx_module_1.5.08.img"
    v2.write_bytes(v1_to_v2((blobs / "tdx_module_1.5.08.blob").read_bytes()))
    r = sh(USER_SCRIPT, str(emu.mnt), str(blobs / "tdx_module_1.5.08.blob"))
    assert r.stdout.splitlines() == ["1.5.06", "error=[transferring:firmware-invalid]", "1.5.06"], r.stdout
    r = sh(USER_SCRIPT, str(emu.mnt), str(v2))
    assert r.stdout.splitlines() == ["1.5.06", "error=[]", "1.5.08"], r.stdout + r.stderr
    final = emu.stop()
    assert final["tds"] == 2 and "td_problems" not in final


def test_sigint_when_idle(start):
    emu = start("--cpus", "2", "--erratum")
    assert emu.ready["runtime_update"] is False
    assert not (emu.mnt / FW).exists()
    assert sorted(os.listdir(emu.mnt / HOST)) == ["version"]
    assert "seamret_invd_vmcs" in (emu.mnt / "proc/cpuinfo").read_text()
    final = emu.stop(signal.SIGINT)
    assert final["signal"] == "SIGINT"


def test_doctor_and_explain_read_the_mounted_host_like_a_real_one(start, images):
    """The emulated kernel's log is served at DIR/var/log/dmesg; doctor finds it by itself."""
    emu = start("--cpus", "4", "--tds", "1", "--fault", "P_SEAMLDR_INSTALL@2=EBADHASH")
    doc = json.loads(subprocess.run([*tdxseam_cmd(), "doctor", "--sysfs-root", str(emu.mnt), "--json"],
                                    capture_output=True, text=True, timeout=60).stdout)
    assert doc["ok"] and doc["kernel_log"]["source"] == "/var/log/dmesg"
    # SEAMRR and the KeyID split through the mounted /dev/cpu/0/msr (pread of 8 bytes)
    assert {c["name"]: c["verdict"] for c in doc["checks"]}["seamrr"] == "ok"
    assert doc["checks"][10]["details"]["tdx_keyids"] == 63
    r = sh(USER_SCRIPT, str(emu.mnt), str(images["good"]))
    assert "error=[transferring:firmware-invalid]" in r.stdout, r.stdout + r.stderr
    p = subprocess.run([*tdxseam_cmd(), "doctor", "--sysfs-root", str(emu.mnt), "--json"],
                       capture_output=True, text=True, timeout=60)
    doc = json.loads(p.stdout)
    assert p.returncode == 1 and not doc["ok"]
    verdicts = {c["name"]: c["verdict"] for c in doc["checks"]}
    assert verdicts["module"] == "fail" and verdicts["kernel_log"] == "fail"
    log = (emu.mnt / "var/log/dmesg").read_text()
    assert "seamldr: SEAMCALL (0x8000000000000001) failed: 0x8000000000020001" in log
    p = subprocess.run([*tdxseam_cmd(), "explain", "--json", "-"], input=log, capture_output=True, text=True,
                       timeout=60)
    (fail,) = [i for i in json.loads(p.stdout)["explained"] if i["kind"] == "seamcall_failure"]
    assert (fail["leaf"]["name"], fail["status"]["name"], fail["errno"]["name"]) == \
        ("P_SEAMLDR_INSTALL", "EBADHASH", "EIO")
    emu.stop()


def test_emulate_json_types_and_no_libfuse_warning(start):
    """`--json` gives one type per key: ints as ints, null plus `<key>_error` for what cannot be
    read; and libfuse says nothing of its own thread defaults on stderr."""
    emu = start("--cpus", "2")
    r = emu.ready
    assert isinstance(r["num_remaining_updates"], int) and r["num_remaining_updates"] > 0
    assert r["module_version"] == "1.5.06" and r["module_version_error"] is None
    assert r["seamldr_version_error"] is None and r["num_remaining_updates_error"] is None
    emu.stop()
    assert "max threads" not in emu.stderr and "Ignoring" not in emu.stderr, emu.stderr


def test_a_stale_mount_is_named_as_such(start, tmp_path):
    """A killed emulator leaves its mount answering ENOTCONN: plan says so, not "not a TDX host"."""
    from tdxseam.sysfs.fuse import unmount

    cat = tmp_path / "cat"
    cat.mkdir()
    (cat / "mapping_file.json").write_text('{"Header": {"Copyright": "c", "Info": "i", "Version": "1.0"}, '
                                           '"tdx_module_releases": []}')
    emu = start("--cpus", "2")
    emu.proc.kill()
    emu.proc.wait(timeout=30)
    try:
        r = subprocess.run([*tdxseam_cmd(), "plan", "--json", "--sysfs-root", str(emu.mnt), "--catalog",
                            str(cat)], capture_output=True, text=True, timeout=60)
        doc = json.loads(r.stdout)
        assert r.returncode == 17 and doc["exit"] == 17, r.stderr
        assert "stale FUSE mount" in doc["error"] and "ENOTCONN" in doc["error"]
    finally:
        unmount(str(emu.mnt))
