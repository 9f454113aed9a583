"""Fuzz targets: every parser, and the operator tool's commands on mutated files.

One set of properties, two ways to run them:
- `tests/test_fuzz.py` (part of `make test`): each property a bounded number of examples,
  derandomized (the conftest profile);
- `make fuzz` (`tests/fuzz.py --seconds N --seed S`): the same properties round after round until
  the time is up, each round seeded from S, then the counts below.

What must hold, whatever the input:
- a parser raises only its named error (a `FormatError` subclass, `ScenarioError`);
- a command run in-process through `tdxseam.cli.main` ends with a documented exit code, never 70
  (our bug), with no traceback, and `plan`'s start-up fast path answers exactly as the typer
  command line does;
- a changed signed byte is never accepted: when the sigstruct or the module pages a host would
  load differ from the signed original, `verify`, `mrseam` and `plan` refuse the file (even with
  the container's checksum made valid again, so the signature and SEAMHASH are what is tested).

COUNTS keeps, per process: runs (per target and in all), exit_70, tracebacks, accepted_changes and
unnamed_errors. A property that sees one of the last four also fails, so hypothesis shrinks it and
prints the example.
"""

from __future__ import annotations

import contextlib
import io
import json
import sys
import tempfile
from collections import Counter
from pathlib import Path

from hypothesis import strategies as st

from tdxseam.formats import testsign
from tdxseam.formats.errors import FormatError
from tdxseam.formats.image import (
    V1_SIGSTRUCT_OFFSET,
    parse_v1,
    parse_v2,
    v1_to_v2,
    with_checksum,
)
from tdxseam.formats.page import PAGE_SIZE, pad_to_pages
from tdxseam.formats.sigstruct import SIGSTRUCT_SIZE

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _tool_host import make_root  # noqa: E402

COUNTS: Counter = Counter()
BAD = ("exit_70", "tracebacks", "accepted_changes", "unnamed_errors")

# documented exit codes (README "Exit codes", docs/operator-tool.md)
DOCUMENTED_EXITS = {0, 1, 2, 3, 4, 10, 11, 12, 13, 14, 15, 16, 17, 18, 130}

VERSION = "1.5.20"  # a synthetic release signed with the test key, newer than the host's 1.5.06
BLOB = testsign.make_blob(VERSION)
IMAGE = v1_to_v2(BLOB)
PEM = testsign.public_key_pem()
MAPPING = {
    "Header": {"Copyright": "test", "Info": "fuzz", "Version": "1.0"},
    "tdx_module_releases": [{
        "version": VERSION, "min_module_version_for_td_preserving": "1.5.01",
        "min_seamldr_versions": ["1.5.00", "2.0.00"], "tdx_feature0": "0x226F1F0FBF"}],
}


def loaded(data: bytes) -> tuple[bytes, bytes] | None:
    """What a host would load from a v1 blob or v2 image: (sigstruct, module pages), or None if
    the container does not parse."""
    try:
        if data[:2] == b"\x00\x01":
            c = parse_v1(data)
        else:
            c = parse_v2(data)
    except FormatError:
        return None
    return bytes(c.sigstruct), pad_to_pages(bytes(c.module))


ORIGINAL = loaded(BLOB)
assert ORIGINAL is not None and ORIGINAL == loaded(IMAGE)


def changed(data: bytes) -> bool:
    """True if the sigstruct or module a host would load from `data` is not the signed original
    (bytes that no host loads, such as the container header, do not count)."""
    got = loaded(data)
    return got is not None and got != ORIGINAL


# -- strategies ---------------------------------------------------------------------------------------

_MODULE_AT = 2 * PAGE_SIZE  # testsign blobs put the module right after the sigstruct page


def _offsets(size: int) -> st.SearchStrategy[int]:
    """Anywhere, with weight on the header, the sigstruct's signed parts and the module."""
    return st.one_of(
        st.integers(0, size - 1),
        st.integers(0, 0x40),
        st.integers(V1_SIGSTRUCT_OFFSET, V1_SIGSTRUCT_OFFSET + SIGSTRUCT_SIZE - 1),
        st.integers(_MODULE_AT, min(size - 1, _MODULE_AT + 2 * PAGE_SIZE)),
    )


@st.composite
def mutated(draw, base: bytes | None = None) -> bytes:
    """A container with a few bytes changed, maybe cut short or extended, and maybe with its
    checksum made valid again."""
    data = bytearray(draw(st.sampled_from([BLOB, IMAGE])) if base is None else base)
    for _ in range(draw(st.integers(0, 4))):
        off = draw(_offsets(len(data)))
        data[off] = draw(st.integers(0, 255)) if draw(st.booleans()) else data[off] ^ (1 << draw(st.integers(0, 7)))
    how = draw(st.sampled_from(["keep", "cut", "extend", "page"]))
    if how == "cut":
        data = data[: draw(st.integers(0, len(data)))]
    elif how == "extend":
        data += draw(st.binary(min_size=1, max_size=64))
    elif how == "page":
        data += bytes(PAGE_SIZE)
    out = bytes(data)
    if len(out) >= 4 and draw(st.booleans()):
        out = with_checksum(out)
    return out


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=12),
                     lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
                     max_leaves=12)


_versions = st.one_of(
    st.from_regex(r"\A[+-]?\d{1,25}\.[+-]?\d{1,25}\.[+-]?\d{1,25}\Z"),
    st.sampled_from(["1.5.06 ", " 1.5.6", "1.5", "1.5.6.7", "1..5", "١.٥.٠٦", "1_0.5.06", "0x1.5.06",
                     "1.5.06\n", "1.5.\u00b2", "", "1.5.6e3", "1.5.-0"]),
    st.text(max_size=12))


@st.composite
def mapping_texts(draw) -> bytes:
    """mapping_file.json: the valid one with a value replaced, or raw bytes, or a mangled text."""
    kind = draw(st.sampled_from(["value", "version", "bytes", "text"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    doc = json.loads(json.dumps(MAPPING))
    rel = doc["tdx_module_releases"][0]
    if kind == "version":
        field = draw(st.sampled_from(["version", "min_module_version_for_td_preserving", "min_seamldr_versions",
                                      "strict_compat_versions", "tdx_feature0"]))
        v = draw(_versions)
        rel[field] = [v] if field.endswith("versions") else v
        return json.dumps(doc).encode()
    if kind == "value":
        key = draw(st.sampled_from(sorted(rel) + ["extra"]))
        rel[key] = draw(_json)
        if draw(st.booleans()):
            doc[draw(st.sampled_from(["Header", "tdx_module_releases"]))] = draw(_json)
        return json.dumps(doc).encode()
    text = bytearray(json.dumps(doc).encode())
    for _ in range(draw(st.integers(1, 4))):
        text[draw(st.integers(0, len(text) - 1))] = draw(st.integers(0, 255))
    return bytes(text)


# -- running the command line in-process -----------------------------------------------------------------


def run_cli(args: list[str], *, slow: bool = False) -> tuple[int, str, str]:
    """`tdxseam ARGS` through main(), in this process: (exit code, stdout, stderr). `slow` turns
    the start-up fast path off, so the typer command line reads the arguments."""
    from tdxseam.cli import fastpath, main

    out, err = io.StringIO(), io.StringIO()
    saved = fastpath.fast_command
    if slow:
        fastpath.fast_command = lambda a: None
    code: int
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(list(args))
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except BaseException as e:  # main() must never let anything out
                COUNTS["tracebacks"] += 1
                raise AssertionError(f"main({args}) raised {type(e).__name__}: {e}") from e
    finally:
        fastpath.fast_command = saved
    return code, out.getvalue(), err.getvalue()


def _judge(args: list[str], code: int, err: str) -> None:
    if code == 70:
        COUNTS["exit_70"] += 1
    if "Traceback" in err:
        COUNTS["tracebacks"] += 1
    assert code != 70, f"exit 70 from {args}: {err}"
    assert "Traceback" not in err, err
    assert code in DOCUMENTED_EXITS, f"undocumented exit {code} from {args}: {err}"


def _accepted(what: str, ok: bool, data: bytes) -> None:
    if ok and changed(data):
        COUNTS["accepted_changes"] += 1
        raise AssertionError(f"{what} accepted a changed signed byte")


# -- properties ---------------------------------------------------------------------------------------


def _count(target: str) -> None:
    COUNTS["runs"] += 1
    COUNTS[f"runs.{target}"] += 1


def _named_only(what: str, fn, *args, named: type[Exception] = FormatError):  # noqa: ANN001
    """(True, fn(*args)), or (False, None) when fn raised its named error; any other exception is
    counted and fails the property."""
    try:
        return True, fn(*args)
    except named:
        return False, None
    except Exception as e:
        COUNTS["unnamed_errors"] += 1
        raise AssertionError(f"{what} raised {type(e).__name__}: {e}") from e


def prop_v1_blob(data: bytes) -> None:
    """The v1 parser raises only FormatError; what it accepts, it accepts only whole."""
    _count("v1_blob")
    _named_only("parse_v1", parse_v1, data)


def prop_v2_image(data: bytes) -> None:
    _count("v2_image")
    from tdxseam.formats.image import extract, kernel_check_v2

    _named_only("v2 parser", lambda: (parse_v2(data), extract(data)))
    rej = kernel_check_v2(data)
    assert rej is None or rej.errno > 0


def prop_sigstruct(data: bytes) -> None:
    """Sigstruct parsing and the loader's checks raise only FormatError; a sigstruct that is not
    the signed original byte for byte never passes the signature check with a trusted key."""
    _count("sigstruct")
    from tdxseam.formats.sigstruct import Sigstruct, check_sigstruct, verify_signature

    sig_bytes = data[V1_SIGSTRUCT_OFFSET: V1_SIGSTRUCT_OFFSET + SIGSTRUCT_SIZE]

    def checks() -> tuple[list, bool]:
        sig = Sigstruct.from_bytes(sig_bytes)
        return (check_sigstruct(sig, module_size=len(ORIGINAL[1]),
                                trusted_key_hashes=[testsign.signing_key().key_hash]),
                verify_signature(sig))

    parsed, out = _named_only("sigstruct", checks)
    if not parsed:
        return
    problems, good = out
    if bytes(sig_bytes) != ORIGINAL[0] and good and not problems:
        COUNTS["accepted_changes"] += 1
        raise AssertionError("a changed sigstruct passed every check")


def prop_mapping(text: bytes) -> None:
    _count("mapping")
    from tdxseam.formats.mapping import parse_mapping

    _named_only("parse_mapping", parse_mapping, text)


def prop_version(text: str) -> None:
    """Versions are ASCII `major.minor.update` (sysfs and Intel's files write nothing else): what
    parses is ASCII digits and dots, and prints back to the same numbers."""
    _count("version")
    import re

    from tdxseam.formats.version import ModuleVersion

    parsed, v = _named_only("ModuleVersion.parse", ModuleVersion.parse, text)
    if not parsed:
        return
    assert re.fullmatch(r"[0-9]+\.[0-9]+\.[0-9]+", text.strip(), re.ASCII), f"{text!r} parsed as {v}"
    assert ModuleVersion.parse(str(v)) == v


def prop_scenario(text: str) -> None:
    _count("scenario")
    from tdxseam.sim.scenario import Scenario, ScenarioError

    _named_only("Scenario.loads", Scenario.loads, text, named=ScenarioError)


def prop_verify_module(data: bytes) -> None:
    """The operator tool's verification, in-process: never accepts a changed signed byte."""
    _count("verify_module")
    from tdxseam.tool.catalog import module_from_bytes
    from tdxseam.tool.verify import VerifyOptions, verify_module

    r = verify_module(module_from_bytes(data, f"tdx_module_{VERSION}.blob"),
                      VerifyOptions((testsign.signing_key().key_hash,), False))
    _accepted("verify_module", r.ok, data)


def _tmp_file(tmp: Path, data: bytes, name: str = f"tdx_module_{VERSION}.blob") -> Path:
    p = tmp / name
    p.write_bytes(data)
    (tmp / "k.pem").write_bytes(PEM)
    return p


def prop_cli_verify(data: bytes, as_json: bool) -> None:
    _count("cli_verify")
    with tempfile.TemporaryDirectory() as t:
        p = _tmp_file(Path(t), data)
        args = ["verify", "--trust-key", str(Path(t) / "k.pem"), str(p)] + (["--json"] if as_json else [])
        code, out, err = run_cli(args)
    _judge(args, code, err)
    assert code in (0, 1, 3), (code, err)
    _accepted("verify", code == 0, data)


def prop_cli_mrseam(data: bytes) -> None:
    _count("cli_mrseam")
    with tempfile.TemporaryDirectory() as t:
        p = _tmp_file(Path(t), data)
        args = ["mrseam", "--json", "--trust-key", str(Path(t) / "k.pem"), str(p)]
        code, out, err = run_cli(args)
    _judge(args, code, err)
    assert code in (0, 1, 3), (code, err)
    _accepted("mrseam", code == 0, data)


def _catalog(tmp: Path, blob: bytes, mapping: bytes) -> Path:
    cat = tmp / "catalog"
    (cat / "joined_files" / "1.5").mkdir(parents=True)
    (cat / "mapping_file.json").write_bytes(mapping)
    (cat / "joined_files" / "1.5" / f"tdx_module_{VERSION}.blob").write_bytes(blob)
    return cat


def prop_cli_plan(data: bytes, mapping: bytes | None, as_json: bool, equals_form: bool) -> None:
    """plan over a catalog holding the mutated file: a documented exit, a selection only of the
    unchanged original, and the fast path answering exactly as the typer command line."""
    COUNTS["runs.cli_plan"] += 1
    _plan(data, mapping, as_json, equals_form)


def _plan(data: bytes, mapping: bytes | None, as_json: bool, equals_form: bool) -> None:
    COUNTS["runs"] += 1
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        cat = _catalog(tmp, data, json.dumps(MAPPING).encode() if mapping is None else mapping)
        root = make_root(tmp / "root")
        (tmp / "k.pem").write_bytes(PEM)
        opts = [("--catalog", str(cat)), ("--sysfs-root", str(root)), ("--trust-key", str(tmp / "k.pem"))]
        args = ["plan"] + [x for k, v in opts for x in ([f"{k}={v}"] if equals_form else [k, v])]
        args += ["--json"] if as_json else []
        code, out, err = run_cli(args)
        slow = run_cli(args, slow=True)
    _judge(args, code, err)
    assert (code, out, err) == slow, f"fast path and typer differ for {args}: {(code, out, err)} != {slow}"
    if code == 0 and as_json:
        sel = json.loads(out)["selected"]
        _accepted("plan", sel is not None and sel["version"] == VERSION, data)
    elif code == 0:
        _accepted("plan", f"install {VERSION}" in out, data)


def prop_cli_pair(data: bytes, module_cut: int | None) -> None:
    """verify of a .bin/.sigstruct pair cut from the mutated container."""
    _count("cli_pair")
    sig = data[V1_SIGSTRUCT_OFFSET: V1_SIGSTRUCT_OFFSET + SIGSTRUCT_SIZE]
    module = data[_MODULE_AT:][:module_cut]
    with tempfile.TemporaryDirectory() as t:
        tmp = Path(t)
        (tmp / f"tdx_module_{VERSION}.sigstruct").write_bytes(sig)
        (tmp / f"tdx_module_{VERSION}.bin").write_bytes(module)
        (tmp / "k.pem").write_bytes(PEM)
        args = ["verify", "--json", "--trust-key", str(tmp / "k.pem"), str(tmp / f"tdx_module_{VERSION}.bin"),
                str(tmp / f"tdx_module_{VERSION}.sigstruct")]
        code, out, err = run_cli(args)
    _judge(args, code, err)
    assert code in (0, 1, 3), (code, err)
    if code == 0 and (sig, pad_to_pages(module)) != ORIGINAL:
        COUNTS["accepted_changes"] += 1
        raise AssertionError("verify accepted a changed .bin/.sigstruct pair")


def prop_cli_convert(data: bytes, fmt: str) -> None:
    _count("cli_convert")
    with tempfile.TemporaryDirectory() as t:
        p = _tmp_file(Path(t), data)
        out_path = Path(t) / "out.img"
        args = ["convert", "--format", fmt, str(p), str(out_path)]
        code, out, err = run_cli(args)
        written = out_path.read_bytes() if out_path.exists() else None
    _judge(args, code, err)
    assert code in (0, 1, 2, 3), (code, err)
    if code == 0:  # conversion keeps what a host loads, byte for byte
        assert written is not None and loaded(written) == loaded(data)
    else:
        assert written is None, "a failed convert left its output behind"


def prop_cli_mapping(text: bytes) -> None:
    """plan with a mutated mapping file and the original release."""
    COUNTS["runs.cli_mapping"] += 1
    _plan(BLOB, text, True, False)


_scenario_texts = st.one_of(
    _json.map(json.dumps), st.text(max_size=100),
    st.fixed_dictionaries({"seed": st.integers(-5, 5), "cpus": st.integers(-2, 9)},
                          optional={"tds": st.lists(st.dictionaries(st.sampled_from(["cpu", "vcpus", "x"]),
                                                                    st.integers(-1, 9)), max_size=2),
                                    "faults": st.lists(st.text(max_size=10), max_size=2),
                                    "updates": st.lists(st.fixed_dictionaries({"to": st.text(max_size=8)}),
                                                        max_size=2)}).map(json.dumps))

# name -> (property, its strategies, examples in `make test`)
PROPERTIES = {
    "v1_blob": (prop_v1_blob, {"data": mutated(BLOB)}, 400),
    "v2_image": (prop_v2_image, {"data": mutated(IMAGE)}, 400),
    "sigstruct": (prop_sigstruct, {"data": mutated(BLOB)}, 300),
    "mapping": (prop_mapping, {"text": mapping_texts()}, 400),
    "version": (prop_version, {"text": _versions}, 300),
    "scenario": (prop_scenario, {"text": _scenario_texts}, 300),
    "verify_module": (prop_verify_module, {"data": mutated()}, 300),
    "cli_verify": (prop_cli_verify, {"data": mutated(), "as_json": st.booleans()}, 100),
    "cli_mrseam": (prop_cli_mrseam, {"data": mutated()}, 60),
    "cli_plan": (prop_cli_plan, {"data": mutated(), "mapping": st.none(), "as_json": st.booleans(),
                                 "equals_form": st.booleans()}, 50),
    "cli_mapping": (prop_cli_mapping, {"text": mapping_texts()}, 50),
    "cli_pair": (prop_cli_pair, {"data": mutated(BLOB), "module_cut": st.none() | st.integers(0, 5 * PAGE_SIZE)}, 60),
    "cli_convert": (prop_cli_convert, {"data": mutated(), "fmt": st.sampled_from(["v1", "v2"])}, 80),
}
