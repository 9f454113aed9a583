"""Fake sysfs roots as plain directories, for the operator tool's tests before (and beside) the
emulated host: the files and texts of spec-linux §7, nothing behind them."""

from __future__ import annotations

from pathlib import Path

TDX_HOST = "sys/devices/faux/tdx_host"


def cpuinfo_text(family: int = 6, model: int = 0x8F, stepping: int = 8, cpus: int = 4) -> str:
    blocks = []
    for i in range(cpus):
        blocks.append(
            f"processor\t: {i}\nvendor_id\t: GenuineIntel\ncpu family\t: {family}\nmodel\t\t: {model}\n"
            f"model name\t: Intel(R) Xeon(R) Test CPU\nstepping\t: {stepping}\nphysical id\t: 0\n"
        )
    return "\n".join(blocks) + "\n"


def make_root(root: Path, *, version: str = "1.5.06", seamldr: str = "1.5.00", remaining: int | str = 5,
              layout: str | None = "tdx_module", cpu: tuple[int, int, int] = (6, 0x8F, 8),
              online: str = "0-3", present: str = "0-3", status: str = "idle") -> Path:
    """A host root: tdx_host attributes, the upload directory of `layout`, cpuinfo, cpu lists."""
    def put(rel: str, text: str) -> None:
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)

    put(f"{TDX_HOST}/version", f"{version}\n")
    if layout == "tdx_module":
        put(f"{TDX_HOST}/seamldr_version", f"{seamldr}\n")
        put(f"{TDX_HOST}/num_remaining_updates", f"{remaining}\n")
        up = "sys/class/firmware/tdx_module"
    elif layout == "seamldr_upload":
        put(f"{TDX_HOST}/seamldr/version", f"{seamldr}\n")
        put(f"{TDX_HOST}/seamldr/num_remaining_updates", f"{remaining}\n")
        up = "sys/class/firmware/seamldr_upload"
    else:
        up = None
    if up:
        put(f"{up}/loading", "0\n")
        put(f"{up}/data", "")
        put(f"{up}/status", f"{status}\n")
        put(f"{up}/error", "")
        put(f"{up}/remaining_size", "0\n")
        put(f"{up}/cancel", "")
    put("proc/cpuinfo", cpuinfo_text(*cpu))
    put("sys/devices/system/cpu/online", f"{online}\n")
    put("sys/devices/system/cpu/present", f"{present}\n")
    return root


# -- the emulated host's tree, in-process ------------------------------------------------------------


def tree_root_class():
    """A SysfsRoot serving files from an in-process `tdxseam.sysfs` tree (imported lazily, so the
    plain-directory tests run even where the emulator cannot)."""
    import errno
    import os

    from tdxseam.tool.hostinfo import SysfsRoot

    class TreeRoot(SysfsRoot):
        """The tool's file operations mapped one to one onto the tree's open/read/write/release."""

        def __init__(self, tree, cred=None) -> None:
            super().__init__("/")
            self.tree = tree
            self.kw = {} if cred is None else {"cred": cred}
            self.writes: list[int] = []  # sizes of data write() calls, for tests

        def _abs(self, rel: str) -> str:
            return "/" + rel.lstrip("/")

        def exists(self, rel: str) -> bool:
            return self.tree.exists(self._abs(rel), **self.kw)

        def is_dir(self, rel: str) -> bool:
            try:
                return self.tree.stat(self._abs(rel), **self.kw).is_dir
            except OSError:
                return False

        def read_text(self, rel: str) -> str:
            return self.tree.read(self._abs(rel), 0, 65536, **self.kw).decode("utf-8", "replace")

        def read_all(self, rel: str) -> str:
            return self.tree.read_file(self._abs(rel), **self.kw).decode("utf-8", "replace")

        def pread(self, rel: str, size: int, offset: int) -> bytes:
            """One read(2) of `size` bytes at `offset` (the msr device's interface)."""
            return self.tree.read(self._abs(rel), offset, size, **self.kw)
        def read_bytes(self, rel: str, limit: int) -> bytes:
            out = b""
            while len(out) < limit:
                b = self.tree.read(self._abs(rel), len(out), min(4096, limit - len(out)), **self.kw)
                if not b:
                    break
                out += b
            return out

        def write_text(self, rel: str, text: str) -> None:
            fd = self.open_write(rel)
            try:
                data = text.encode()
                if self.write(fd, memoryview(data)) != len(data):
                    raise OSError(errno.EIO, "short write")
            finally:
                self.close(fd)

        def open_write(self, rel: str) -> int:
            fh = self.tree.open(self._abs(rel), os.O_WRONLY, **self.kw)
            self._pos = getattr(self, "_pos", {})
            self._pos[fh] = 0
            return fh

        def write(self, fd: int, data: memoryview) -> int:
            n = self.tree.write_fh(fd, self._pos[fd], bytes(data))
            self._pos[fd] += n
            self.writes.append(n)
            return n

        def close(self, fd: int) -> None:
            self._pos.pop(fd, None)
            self.tree.release(fd)

    return TreeRoot


# -- catalogs --------------------------------------------------------------------------------------


def write_mapping(path: Path, releases: list[dict], *, header: dict | None = None, **top) -> None:
    import json

    doc = {"Header": header or {"Copyright": "test", "Info": "test catalog", "Version": "1.0"},
           "tdx_module_releases": releases, **top}
    path.write_text(json.dumps(doc, indent=2))


def mapping_entry(version: str, td_floor: str, seamldrs: list[str], feature0: str | None = "0xF0FBF",
                  strict: list[str] | None = None, **extra) -> dict:
    e = {"version": version, "min_module_version_for_td_preserving": td_floor,
         "min_seamldr_versions": seamldrs}
    if feature0 is not None:
        e["tdx_feature0"] = feature0
    if strict is not None:
        e["strict_compat_versions"] = strict
    e.update(extra)
    return e


def synthetic_catalog(root: Path, modules: list[dict]) -> Path:
    """A catalog of test-signed modules. Each dict: version, td_floor, seamldrs, and optionally
    cpuids, debug, key, strict, feature0, separate (put in separate_files instead), no_mapping."""
    from tdxseam.formats import testsign

    root.mkdir(parents=True, exist_ok=True)
    entries = []
    for m in modules:
        v = m["version"]
        line = v.rsplit(".", 1)[0]
        kw = {k: m[k] for k in ("cpuids", "debug", "key", "svn") if k in m}
        if m.get("separate"):
            d = root / "separate_files" / line / v
            d.mkdir(parents=True, exist_ok=True)
            sig, mod = testsign.make_module(v, **kw)
            (d / f"tdx_module_{v}.sigstruct").write_bytes(sig)
            (d / f"tdx_module_{v}.bin").write_bytes(mod)
        else:
            d = root / "joined_files" / line
            d.mkdir(parents=True, exist_ok=True)
            (d / f"tdx_module_{v}.blob").write_bytes(testsign.make_blob(v, **kw))
        if not m.get("no_mapping"):
            entries.append(mapping_entry(v, m.get("td_floor", v), m.get("seamldrs", ["1.5.00"]),
                                         m.get("feature0", "0xF0FBF"), m.get("strict")))
    write_mapping(root / "mapping_file.json", entries)
    return root


def linked_intel_catalog(root: Path, intel_dir: Path, mapping_releases: list[dict] | None = None) -> Path:
    """A catalog whose blobs are symlinks to Intel's fixture files (never copies) and whose mapping
    file is given (e.g. the newer upstream copy with strict_compat_versions)."""
    import json

    root.mkdir(parents=True, exist_ok=True)
    for blob in sorted((intel_dir / "joined_files").glob("*/*.blob")):
        d = root / "joined_files" / blob.parent.name
        d.mkdir(parents=True, exist_ok=True)
        (d / blob.name).symlink_to(blob)
    if mapping_releases is None:
        mapping_releases = json.loads((intel_dir / "mapping_file.json").read_text())["tdx_module_releases"]
    write_mapping(root / "mapping_file.json", mapping_releases)
    return root


# spec-formats §10.3: the newer upstream copy's strict_compat_versions and changed tdx_feature0
UPSTREAM_STRICT = {"1.5.05": ["1.5.01"], "1.5.08": ["1.5.06"], "1.5.13": ["1.5.06", "1.5.08"],
                   "2.0.05": ["2.0.04"]}
