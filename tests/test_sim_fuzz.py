"""Fuzzing at the boundaries: every parser, and every file written through the sysfs tree.

Nothing may escape but the error each boundary names: `FormatError` subclasses from the format
parsers, `FaultSpecError`, `ScenarioError`, `HandoffDataError` (fixed-size structures given the wrong size
raise `FormatError` too), and from the sysfs tree an `OSError` carrying the kernel's errno.
Behind the tree the emulated kernel must never raise, deadlock or run away (`runtime.errors`).
"""

from __future__ import annotations

import errno
import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tdxseam.formats.errors import FormatError
from tdxseam.formats.testsign import make_image

FUZZ = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SLOW = settings(max_examples=25, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

_IMAGE = make_image("1.5.08")


def _mutate(base: bytes, edits: list[tuple[int, int]], cut: int | None) -> bytes:
    b = bytearray(base)
    for off, val in edits:
        b[off % len(b)] = val
    return bytes(b[:cut] if cut is not None else b)


_edits = st.lists(st.tuples(st.integers(0, 1 << 20), st.integers(0, 255)), max_size=6)
_cut = st.one_of(st.none(), st.integers(0, len(_IMAGE) + 100))


# ---- format parsers --------------------------------------------------------------------------------


@FUZZ
@given(_edits, _cut, st.booleans())
def test_image_parsers_raise_only_format_errors(edits, cut, random_tail):
    from tdxseam.formats.image import detect, extract, kernel_check_v2, parse_v1, parse_v2, v1_to_v2

    data = _mutate(_IMAGE, edits, cut) + (b"\xff" * 7 if random_tail else b"")
    for fn in (parse_v1, parse_v2, extract, v1_to_v2, detect):
        try:
            fn(data)
        except FormatError:
            pass
    reject = kernel_check_v2(data)  # the kernel's own check answers, never raises
    assert reject is None or reject.errno > 0


@FUZZ
@given(st.binary(min_size=0, max_size=2100), st.binary(max_size=300))
def test_sigstruct_parse_check_and_identity(data, module):
    from tdxseam.formats.identity import IdentityError, resolve_identity
    from tdxseam.formats.sigstruct import SIGSTRUCT_SIZE, Sigstruct, check_sigstruct, verify_signature

    try:
        sig = Sigstruct.from_bytes(data)
    except FormatError:
        assert len(data) != SIGSTRUCT_SIZE
        data = data[:SIGSTRUCT_SIZE].ljust(SIGSTRUCT_SIZE, b"\0")
        sig = Sigstruct.from_bytes(data)
    assert isinstance(verify_signature(sig), bool)
    problems = check_sigstruct(sig, module_size=4096, platform_cpuids=[0x806F8], current_svn=0x105)
    assert problems  # an arbitrary sigstruct is never acceptable
    try:
        resolve_identity(sig, module)
    except IdentityError as e:  # named: the version unknown or contradictory
        assert e.code in ("unknown", "conflict")


@pytest.mark.parametrize("name", ["seamldr_info", "seamldr_params", "seamextend"])
@FUZZ
@given(data=st.binary(max_size=4200))
def test_fixed_size_structures(name, data):
    from tdxseam.formats.seamextend import SEAMEXTEND_SIZE, SeamExtend
    from tdxseam.formats.seamldr_info import SEAMLDR_INFO_SIZE, SeamldrInfo
    from tdxseam.formats.seamldr_params import SEAMLDR_PARAMS_SIZE, SeamldrParams

    cls, size = {"seamldr_info": (SeamldrInfo, SEAMLDR_INFO_SIZE),
                 "seamldr_params": (SeamldrParams, SEAMLDR_PARAMS_SIZE),
                 "seamextend": (SeamExtend, SEAMEXTEND_SIZE)}[name]
    exact = data[:size].ljust(size, b"\0")
    assert cls.from_bytes(exact).to_bytes() == exact  # any bytes of the right size round-trip
    if len(data) != size:
        from tdxseam.formats.errors import FormatError

        with pytest.raises(FormatError, match="bytes, expected"):
            cls.from_bytes(data)


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
                     lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
                     max_leaves=20)


@FUZZ
@given(st.one_of(_json, st.binary(max_size=200), st.text(max_size=200)))
def test_mapping_parser(doc):
    from tdxseam.formats.errors import MappingError
    from tdxseam.formats.mapping import parse_mapping

    text = doc if isinstance(doc, (bytes, str)) else json.dumps(doc)
    try:
        parse_mapping(text)
    except MappingError:
        pass


@FUZZ
@given(st.one_of(st.text(max_size=30), st.from_regex(r"\A\d{1,7}\.\d{1,7}\.\d{1,7}\s?\Z")))
def test_version_parser(text):
    from tdxseam.formats.errors import VersionError
    from tdxseam.formats.version import ModuleVersion

    try:
        v = ModuleVersion.parse(text)
    except VersionError:
        return
    assert ModuleVersion.parse(str(v)) == v


@FUZZ
@given(st.one_of(st.text(max_size=60),
                 st.from_regex(r"\A(TDH_SYS_[A-Z_]{2,10}|P_SEAMLDR_[A-Z]{4,8})(@\d{1,3})?(#(\d{1,3}|\*))?=[\w\d]{1,20}\Z")))
def test_fault_spec_parser(text):
    from tdxseam.seam.faults import FaultSpecError, parse_fault_spec

    try:
        r = parse_fault_spec(text)
    except FaultSpecError:
        return
    assert r.leaf is not None and (r.nth is None or r.nth >= 1)


@FUZZ
@given(st.integers(0, 3), st.binary(max_size=400))
def test_handoff_payload_parser(hv, data):
    from tdxseam.seam.layout import HandoffHeader
    from tdxseam.seam.td import HandoffDataError, deserialize_handoff

    try:
        deserialize_handoff(hv, data)
    except HandoffDataError:
        pass
    HandoffHeader.from_bytes(data[:8].ljust(8, b"\0"))


@FUZZ
@given(st.text(max_size=40))
def test_kernel_string_helpers_and_cpu_lists(text):
    from tdxseam.kernel.firmware_upload import kstrtobool, simple_strtol
    from tdxseam.tool.hostinfo import parse_cpu_list, parse_cpuinfo

    assert isinstance(simple_strtol(text), int)
    assert kstrtobool(text) in (True, False, None)
    parse_cpuinfo(text)
    try:
        parse_cpu_list(text)
    except ValueError:
        pass


@FUZZ
@given(st.one_of(_json.map(json.dumps), st.binary(max_size=100), st.text(max_size=100),
                 st.fixed_dictionaries({"seed": st.integers(-5, 5), "cpus": st.integers(-2, 9)},
                                       optional={"tds": st.lists(st.dictionaries(st.sampled_from(["cpu", "vcpus", "x"]), st.integers(-1, 9)), max_size=2),
                                                 "faults": st.lists(st.text(max_size=10), max_size=2),
                                                 "updates": st.lists(st.fixed_dictionaries({"to": st.text(max_size=8)}), max_size=2)}
                                       ).map(json.dumps)))
def test_scenario_files(text):
    from tdxseam.sim.scenario import Scenario, ScenarioError

    try:
        Scenario.loads(text)
    except ScenarioError:
        pass


# ---- every file written through the sysfs tree --------------------------------------------------------


@pytest.fixture(scope="module")
def emu():
    from tdxseam.sysfs import Emulation

    e = Emulation(cpus=2, seed=5)
    yield e
    e.close(drain=False)


def _files(emu) -> list[str]:
    return [p for p, st_ in emu.tree.walk() if not st_.is_dir and not st_.is_link] + [
        "/sys/class/firmware/tdx_module/loading", "/sys/devices/faux/tdx_host/nonexistent", "/sys"]


_ERRNOS = {errno.EACCES, errno.EPERM, errno.EINVAL, errno.ENODEV, errno.EBUSY, errno.ENOENT, errno.EIO,
           errno.EISDIR, errno.ENOMEM, errno.ENOTDIR, errno.ENXIO}


def _no_model_errors(emu) -> None:
    assert emu.runtime.errors == [], emu.runtime.errors


@SLOW
@given(data=st.data())
def test_sysfs_writes_answer_with_a_count_or_an_errno(emu, data):
    from tdxseam.sysfs.tree import Cred

    path = data.draw(st.sampled_from(_files(emu)))
    payload = data.draw(st.one_of(st.binary(max_size=5000), st.sampled_from([b"1\n", b"0\n", b"-1", b"1", b"y", b"on"])))
    offset = data.draw(st.integers(-3, 70000))
    cred = data.draw(st.sampled_from([Cred.root(), Cred.user(), Cred.root().without(17)]))
    whole = data.draw(st.booleans())
    try:
        n = emu.tree.write_file(path, payload, cred) if whole else emu.tree.write(path, offset, payload, cred)
    except OSError as e:
        assert e.errno in _ERRNOS, (path, e)
    else:
        assert isinstance(n, int) and 0 <= n <= len(payload)
    emu.settle()
    _no_model_errors(emu)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(edits=_edits, cut=_cut, seed=st.integers(0, 3))
def test_sysfs_upload_of_mutated_images(edits, cut, seed):
    """echo 1 > loading; cat image > data; echo 0 > loading, with a damaged image, on a fresh host:
    the update is refused or fails as the kernel says, every file still answers, nothing breaks."""
    from tdxseam.sysfs import Emulation

    image = _mutate(_IMAGE, edits, cut)
    with Emulation(cpus=2, seed=seed) as emu:
        _upload(emu, image)


def _upload(emu, image: bytes) -> None:
    from tdxseam.sysfs.tree import TDX_HOST, TDX_MODULE

    t = emu.tree
    try:
        t.write_text(f"{TDX_MODULE}/loading", "1\n")
        if image:
            t.write_file(f"{TDX_MODULE}/data", image)
        t.write_text(f"{TDX_MODULE}/loading", "0\n")
    except OSError as e:
        assert e.errno in _ERRNOS, e
    emu.settle()
    assert t.read_text(f"{TDX_MODULE}/status") == "idle\n"
    err = t.read_text(f"{TDX_MODULE}/error")
    assert err in ("", "transferring:firmware-invalid\n", "transferring:device-busy\n",
                   "transferring:read-write-error\n"), err
    try:
        t.read_text(f"{TDX_HOST}/version")
    except OSError as e:
        assert e.errno == errno.ENXIO  # a failed update leaves no module
    assert t.read_text(f"{TDX_HOST}/seamldr_version").count(".") == 2
    _no_model_errors(emu)
