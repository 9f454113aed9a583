"""Reading a host through its sysfs root: layouts, attributes, errors, CPU identification."""

from __future__ import annotations

import errno

import pytest

from _tool_host import TDX_HOST, cpuinfo_text, make_root
from tdxseam.tool.hostinfo import (
    Layout,
    SysfsRoot,
    cpuid_1_eax,
    parse_cpu_list,
    parse_cpuinfo,
    read_host,
    write_all,
)


@pytest.mark.parametrize("fms,eax", [
    ((6, 0x8F, 8), 0x806F8),  # Sapphire Rapids
    ((6, 0xCF, 0), 0xC06F0),  # Emerald Rapids
    ((6, 0xAF, 3), 0xA06F3),  # Sierra Forest
    ((6, 0xAD, 1), 0xA06D1),  # Granite Rapids
    ((6, 0xAE, 0), 0xA06E0),  # Granite Rapids-D
    ((15, 6, 5), 0xF65),  # family 0xF: no extended family, extended model used
    ((0x13, 0x01, 0), 0x400F10),  # family above 0xF goes to extended family
    ((5, 4, 3), 0x543),  # family < 6: model has no extended part
])
def test_cpuid_1_eax(fms, eax):
    assert cpuid_1_eax(*fms) == eax


def test_cpuid_1_eax_rejects_impossible():
    with pytest.raises(ValueError):
        cpuid_1_eax(6, 0x8F, 16)
    with pytest.raises(ValueError):
        cpuid_1_eax(5, 0x20, 0)


def test_parse_cpuinfo_distinct_and_robust():
    text = cpuinfo_text(6, 0x8F, 8, cpus=3) + cpuinfo_text(6, 0x8F, 6, cpus=1) + "garbage\n\nmodel : x\n"
    cpus = parse_cpuinfo(text)
    assert [c.cpuid_1_eax for c in cpus] == [0x806F8, 0x806F6]
    assert parse_cpuinfo("") == []


def test_parse_cpu_list():
    assert parse_cpu_list("0-3,8,10-11\n") == {0, 1, 2, 3, 8, 10, 11}
    assert parse_cpu_list("") == frozenset()
    with pytest.raises(ValueError):
        parse_cpu_list("3-1")


def test_merged_layout(tmp_path):
    h = read_host(make_root(tmp_path))
    assert h.layout is Layout.TDX_MODULE and h.image_format == "v2"
    assert h.upload_dir == "sys/class/firmware/tdx_module"
    assert str(h.version) == "1.5.06" and str(h.seamldr) == "1.5.00" and h.remaining_updates == 5
    assert h.cpu.cpuid_1_eax == 0x806F8 and h.all_cpus_online is True
    assert h.upload_status.value == "idle"
    j = h.to_json()
    assert j["layout"] == "tdx_module" and j["cpu"]["cpuid_1_eax"] == "0x806f8" and j["errors"] == {}


def test_old_seamldr_upload_layout(tmp_path):
    h = read_host(make_root(tmp_path, layout="seamldr_upload", seamldr="2.0.01"))
    assert h.layout is Layout.SEAMLDR_UPLOAD and h.image_format == "v1"
    assert h.seamldr_version.path == f"{TDX_HOST}/seamldr/version" and str(h.seamldr) == "2.0.01"


def test_device_path_without_class_link(tmp_path):
    root = make_root(tmp_path)
    (root / "sys/class/firmware/tdx_module").rename(root / TDX_HOST / "firmware")
    (root / TDX_HOST / "firmware").rename(root / TDX_HOST / "tdx_module_tmp")
    (root / TDX_HOST / "firmware").mkdir()
    (root / TDX_HOST / "tdx_module_tmp").rename(root / TDX_HOST / "firmware" / "tdx_module")
    h = read_host(root)
    assert h.layout is Layout.TDX_MODULE and h.upload_dir == f"{TDX_HOST}/firmware/tdx_module"


def test_no_runtime_update(tmp_path):
    h = read_host(make_root(tmp_path, layout=None))
    assert h.layout is None and h.image_format is None
    assert h.seamldr_version.error == "missing" and h.remaining_updates is None


def test_offline_cpus_and_missing_cpuinfo(tmp_path):
    root = make_root(tmp_path, online="0-2", present="0-3")
    (root / "proc/cpuinfo").unlink()
    h = read_host(root)
    assert h.all_cpus_online is False
    assert h.cpus == [] and h.cpuinfo_error == "missing"


class _ErrRoot(SysfsRoot):
    """Plain files, but chosen reads fail with an errno (ENXIO version, EACCES root-only files)."""

    def __init__(self, root, errors):
        super().__init__(root)
        self.errors = errors

    def read_text(self, rel):
        for suffix, code in self.errors.items():
            if rel.endswith(suffix):
                raise OSError(code, "injected")
        return super().read_text(rel)


def test_read_errors_are_kept_as_text(tmp_path):
    fs = _ErrRoot(make_root(tmp_path), {"/version": errno.ENXIO, "seamldr_version": errno.EACCES})
    h = read_host(fs)
    assert h.version is None and h.module_version.errno == errno.ENXIO
    assert h.module_version.error.startswith("ENXIO") and "failed update" in h.module_version.error
    assert "run as root" in h.seamldr_version.error


def test_write_all_handles_partial_writes():
    sizes: list[int] = []
    buf = bytearray()

    def short(fd, mv):
        n = min(len(mv), 1000)
        buf.extend(mv[:n])
        sizes.append(n)
        return n

    data = bytes(range(256)) * 40
    assert write_all(3, data, chunk=4096, write=short) == len(data)
    assert bytes(buf) == data and max(sizes) == 1000
    with pytest.raises(OSError) as ei:
        write_all(3, data, write=lambda fd, mv: 0)
    assert ei.value.errno == errno.EIO
