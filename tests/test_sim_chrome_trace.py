"""`--trace-out` writes Chrome trace-event JSON that Perfetto and chrome://tracing open, and
`--timeline-out` draws the same run.

`check_trace_events` holds the output to the rules of the Trace Event Format document (JSON
Object Format): known phases, the fields each phase requires, metadata events as documented,
counters with numeric args, instant scopes, and per thread: B/E pairs matched in order, X with
a non-negative dur, and every slice nested in the one around it.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from _cli import run as _cli
from tdxseam.platform.trace import Trace
from tdxseam.sim.chrome_trace import chrome_trace
from tdxseam.sim.runner import run_seed

REPO = Path(__file__).resolve().parents[1]
PHASES = set("BEXiICbenstfPOND") | {"M", "R", "c", "(", ")"}
METADATA = {"process_name", "thread_name", "process_sort_index", "thread_sort_index", "process_labels"}


class FormatError(AssertionError):
    pass


def check_trace_events(doc: dict) -> dict:
    """Validate `doc`; returns counts per phase. Raises FormatError naming the first broken rule."""
    def bad(i: int, why: str) -> None:
        raise FormatError(f"event {i}: {why}: {events[i] if i >= 0 else ''}")

    if not isinstance(doc, dict) or not isinstance(doc.get("traceEvents"), list):
        raise FormatError("not the JSON Object Format: no traceEvents array")
    if "displayTimeUnit" in doc and doc["displayTimeUnit"] not in ("ms", "ns"):
        raise FormatError("displayTimeUnit must be ms or ns")
    if "otherData" in doc and not isinstance(doc["otherData"], dict):
        raise FormatError("otherData must be an object")
    events = doc["traceEvents"]
    counts: dict[str, int] = {}
    named_threads: set[tuple[int, int]] = set()
    used_threads: set[tuple[int, int]] = set()
    open_b: dict[tuple[int, int], list[int]] = {}
    last_ts: dict[tuple[int, int], float] = {}
    slices: dict[tuple[int, int], list[tuple[float, float, int]]] = {}
    for i, e in enumerate(events):
        ph = e.get("ph")
        if ph not in PHASES:
            bad(i, f"unknown phase {ph!r}")
        counts[ph] = counts.get(ph, 0) + 1
        if ph != "E" and not isinstance(e.get("name"), str):
            bad(i, "no name")
        if not isinstance(e.get("pid"), int):
            bad(i, "no integer pid")
        if "args" in e and not isinstance(e["args"], dict):
            bad(i, "args is not an object")
        if ph == "M":
            if e["name"] not in METADATA:
                bad(i, "unknown metadata event")
            key = "sort_index" if e["name"].endswith("sort_index") else "name" if e["name"].endswith("_name") else None
            if key == "name" and not isinstance(e.get("args", {}).get("name"), str):
                bad(i, "metadata name without args.name")
            if key == "sort_index" and not isinstance(e.get("args", {}).get("sort_index"), int):
                bad(i, "sort index without args.sort_index")
            if e["name"].startswith("thread_"):
                if not isinstance(e.get("tid"), int):
                    bad(i, "thread metadata without tid")
                named_threads.add((e["pid"], e["tid"]))
            continue
        ts = e.get("ts")
        if not isinstance(ts, (int, float)) or ts < 0:
            bad(i, "no timestamp")
        scope = e.get("s", "t") if ph in "iI" else None
        if scope is not None and scope not in ("g", "p", "t"):
            bad(i, f"instant scope {scope!r}")
        if ph == "C":
            args = e.get("args")
            if not args or not all(isinstance(v, (int, float)) for v in args.values()):
                bad(i, "counter without numeric args")
            continue
        if ph in "BEX" or scope == "t":
            if not isinstance(e.get("tid"), int):
                bad(i, "no integer tid")
        if ph not in "BEX":
            if scope == "t":
                used_threads.add((e["pid"], e["tid"]))
            continue
        track = (e["pid"], e["tid"])
        used_threads.add(track)
        if ts < last_ts.get(track, 0):
            bad(i, "timestamps go backwards on this thread")
        last_ts[track] = ts
        if ph == "X":
            if not isinstance(e.get("dur"), (int, float)) or e["dur"] < 0:
                bad(i, "X without a non-negative dur")
            slices.setdefault(track, []).append((ts, ts + e["dur"], i))
        elif ph == "B":
            open_b.setdefault(track, []).append(i)
        else:
            stack = open_b.get(track)
            if not stack:
                bad(i, "E without an open B on its thread")
            b = stack.pop()
            if "name" in e and e["name"] != events[b]["name"]:
                bad(i, f"E closes {events[b]['name']!r}, not {e['name']!r}")
            slices.setdefault(track, []).append((events[b]["ts"], ts, b))
    for track, stack in open_b.items():
        if stack:
            bad(stack[-1], "B never ended")
    for track, spans in slices.items():  # every slice inside its parent, or after it
        spans.sort(key=lambda s: (s[0], -s[1], s[2]))
        parents: list[tuple[float, float, int]] = []
        for s in spans:
            while parents and s[0] >= parents[-1][1]:  # that one ended before this began
                parents.pop()
            if parents and s[1] > parents[-1][1]:
                bad(s[2], f"overlaps slice {parents[-1][2]} without nesting in it")
            parents.append(s)
    unnamed = used_threads - named_threads
    if unnamed:
        raise FormatError(f"threads without thread_name metadata: {sorted(unnamed)}")
    return counts


def test_a_failing_replay_is_valid_trace_event_json(capsys, tmp_path):
    path = tmp_path / "replay.json"
    code, out, _ = _cli(capsys, "sim", "replay", "4", "--cpus", "4", "--mutate", "no-abort",
                        "--trace-out", str(path))
    assert code == 1 and "lockstep-abort" in out  # the run violates
    doc = json.loads(path.read_text())
    counts = check_trace_events(doc)
    assert counts["X"] and counts["B"] == counts["E"] and counts["C"] and counts["M"]
    ev = doc["traceEvents"]
    names = {e["tid"]: e["args"]["name"] for e in ev if e.get("name") == "thread_name"}
    assert {f"cpu{c}" for c in range(4)} <= set(names.values())
    assert "scheduler step" in doc["otherData"]["ts_unit"] and "not microseconds" in doc["otherData"]["clock"]
    # a SEAMCALL slice per call, with the leaf, the registers in and out, and the status
    calls = [e for e in ev if e.get("cat") == "seamcall"]
    install = [e for e in calls if e["name"] == "P_SEAMLDR_INSTALL" and e["ts"] > 0]  # not boot's LOAD
    assert len(install) == 4 and all(e["args"]["in"]["rcx"].startswith("0x") for e in install)
    assert all({"end", "status", "out"} <= e["args"].keys() for e in calls)
    # the lockstep on every CPU, in order, and the counter of acks reaching all four CPUs
    for tid in (1, 2, 3, 4):
        states = [e["name"] for e in ev if e.get("ph") == "B" and e["tid"] == tid]
        assert states[:2] == ["SHUTDOWN", "CPU_INSTALL"], states
    assert max(e["args"]["acked"] for e in ev if e.get("ph") == "C") == 4
    # the violations, as global instants; lock holds as slices
    v = [e for e in ev if e.get("cat") == "violation"]
    assert v and all(e["s"] == "g" for e in v) and v[0]["args"]["what"].startswith("[lockstep-abort]")
    assert any(e["cat"] == "lock" and e["name"] == "seamldr_lock" for e in ev if e.get("ph") == "X")
    assert doc["otherData"]["misnested_closed"] == 0
    assert doc["otherData"]["command"] == "tdxseam sim replay 4 --cpus 4 --mutate no-abort"


@pytest.mark.parametrize("broken, why", [
    ({"traceEvents": [{"ph": "Q", "name": "x", "pid": 1, "tid": 1, "ts": 0}]}, "unknown phase"),
    ({"traceEvents": [{"ph": "X", "name": "x", "pid": 1, "tid": 1, "ts": 0}]}, "X without"),
    ({"traceEvents": [{"ph": "E", "pid": 1, "tid": 1, "ts": 0}]}, "E without an open B"),
    ({"traceEvents": [{"ph": "B", "name": "a", "pid": 1, "tid": 1, "ts": 0}]}, "B never ended"),
    ({"traceEvents": [{"ph": "X", "name": "a", "pid": 1, "tid": 1, "ts": 0, "dur": 5},
                      {"ph": "X", "name": "b", "pid": 1, "tid": 1, "ts": 3, "dur": 5}]}, "without nesting"),
    ({"traceEvents": [{"ph": "B", "name": "a", "pid": 1, "tid": 1, "ts": 0},
                      {"ph": "B", "name": "b", "pid": 1, "tid": 1, "ts": 1},
                      {"ph": "E", "name": "a", "pid": 1, "tid": 1, "ts": 2}]}, "E closes"),
    ({"traceEvents": [{"ph": "i", "name": "a", "pid": 1, "tid": 1, "ts": 0, "s": "x"}]}, "instant scope"),
    ({"traceEvents": [{"ph": "C", "name": "a", "pid": 1, "ts": 0, "args": {"n": "1"}}]}, "counter"),
    ({"traceEvents": [{"ph": "M", "name": "thread_colour", "pid": 1, "tid": 1}]}, "unknown metadata"),
    ({"traceEvents": [{"ph": "X", "name": "a", "pid": 1, "tid": 1, "ts": 0, "dur": 1}]}, "thread_name"),
])
def test_the_validator_rejects_what_the_format_forbids(broken, why):
    with pytest.raises(FormatError, match=why):
        check_trace_events(broken)


def test_slices_a_run_leaves_misnested_or_open_are_closed_validly():
    t = Trace()
    t.emit(1, 0, "lock", "a")
    t.emit(2, 0, "seamcall", "TDH_SYS_RD", {"leaf": "TDH_SYS_RD", "in": {}})
    t.emit(3, 0, "unlock", "a")  # the SEAMCALL never returned (the run was torn down in it)
    t.emit(4, 1, "update-state", "MODULE_UPDATE_SHUTDOWN")  # never left: the run ended
    doc = chrome_trace(t, cpus=2)
    check_trace_events(doc)
    assert doc["otherData"]["misnested_closed"] == 1
    x = {e["name"]: e for e in doc["traceEvents"] if e.get("ph") == "X"}
    assert x["a"]["dur"] == 2 and x["TDH_SYS_RD"]["dur"] == 1
    assert [e["ph"] for e in doc["traceEvents"] if e.get("cat") == "lockstep"] == ["B", "E"]


def test_stress_with_interrupts_shows_handlers_spins_and_raises(capsys, tmp_path):
    path = tmp_path / "stress.json"
    code, _, _ = _cli(capsys, "stress", "--cpus", "4", "--calls", "6", "--irq-calls", "--seed", "3",
                      "--trace-out", str(path))
    assert code == 0
    doc = json.loads(path.read_text())
    check_trace_events(doc)
    cats = {(e["ph"], e.get("cat")) for e in doc["traceEvents"]}
    assert {("X", "irq"), ("i", "irq"), ("X", "spin"), ("X", "lock"), ("X", "seamcall")} <= cats


def test_hotplug_and_faults_are_instants():
    seen: set[str] = set()
    for seed in range(40):
        r = run_seed(seed, trace=True)
        doc = chrome_trace(r.trace, cpus=r.cpus)
        check_trace_events(doc)
        seen |= {e["name"] for e in doc["traceEvents"] if e.get("ph") == "i"}
        if {"cpu-offline", "cpu-online", "fault", "irq-raise"} <= seen:
            break
    assert {"cpu-offline", "cpu-online", "fault", "irq-raise"} <= seen


def test_an_untraced_run_records_nothing():
    r = run_seed(4)
    assert r.trace is None and r.trace_digest is None


def test_demo_with_a_fault_traces_the_update_only(capsys, tmp_path):
    path = tmp_path / "demo.json"
    code, out, _ = _cli(capsys, "demo", "--synthetic", "--cpus", "4", "--tds", "1",
                        "--fault", "TDH_SYS_LP_INIT@3=0xc000010000000001", "--trace-out", str(path))
    assert code == 1 and "result: FAILED" in out
    doc = json.loads(path.read_text())
    check_trace_events(doc)
    ev = doc["traceEvents"]
    faults = [e for e in ev if e.get("name") == "fault"]
    assert len(faults) == 1 and faults[0]["tid"] == 4 and "TDH_SYS_LP_INIT" in faults[0]["args"]["detail"]
    failed = [e for e in ev if e.get("cat") == "seamcall" and e["args"]["status"] != "SUCCESS"]
    assert any(e["name"] == "TDH_SYS_LP_INIT" and e["tid"] == 4 for e in failed)
    leaves = {e["name"] for e in ev if e.get("cat") == "seamcall"}
    assert "TDH_SYS_SHUTDOWN" in leaves
    assert not leaves & {"TDH_MNG_CREATE", "TDH_MEM_PAGE_ADD", "TDH_VP_ENTER"}  # no TD builds or runs


def test_demo_fault_spec_errors_are_usage_errors(capsys):
    code, _, err = _cli(capsys, "demo", "--synthetic", "--fault", "NOPE=1")
    assert code == 2 and err.startswith("tdxseam: error: --fault:")


def test_trace_out_never_writes_through_a_symlink(capsys, tmp_path):
    target = tmp_path / "precious"
    target.write_text("keep\n")
    link = tmp_path / "link.json"
    link.symlink_to(target)
    code, _, err = _cli(capsys, "sim", "run", "--seed", "1", "--trace-out", str(link))
    assert code == 3 and err.startswith("tdxseam: error:") and "link.json" in err
    assert target.read_text() == "keep\n"


# ---- the timeline --------------------------------------------------------------------------------

def _svg_description(path: Path) -> str:
    root = ET.parse(path).getroot()  # well-formed XML
    assert root.tag.endswith("svg")
    text = path.read_text()
    m = re.search(r"<dc:description>(.*?)</dc:description>", text, re.S)
    assert m, "no description metadata"
    return m.group(1)


def test_timeline_of_a_failing_replay(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    svg = tmp_path / "t.svg"
    code, _, _ = _cli(capsys, "sim", "replay", "4", "--cpus", "4", "--mutate", "no-abort",
                      "--timeline-out", str(svg), "--trace-out", str(tmp_path / "t.json"))
    assert code == 1
    desc = _svg_description(svg)
    digest = json.loads((tmp_path / "t.json").read_text())["otherData"]["trace_digest"]
    assert f"trace digest {digest}" in desc
    text = svg.read_text()
    for label in ("cpu0", "cpu3", "SHUTDOWN", "CPU_INSTALL", "violation", "scheduler step"):
        assert label in text
    again = tmp_path / "again.svg"
    _cli(capsys, "sim", "replay", "4", "--cpus", "4", "--mutate", "no-abort", "--timeline-out", str(again))
    assert again.read_bytes() == svg.read_bytes()  # one run, one file


def test_readme_timeline_is_made_by_the_readme_command(tmp_path):
    """The README's command, run again, draws the committed picture (same run, same digest)."""
    pytest.importorskip("matplotlib")
    readme = (REPO / "README.md").read_text()
    m = re.search(r"^(tdxseam demo [^\n]*--timeline-out (docs/\S+\.svg)[^\n]*)$", readme, re.M)
    assert m, "README gives no `tdxseam demo ... --timeline-out docs/....svg` command"
    command, committed = m.group(1), REPO / m.group(2)
    assert f"({m.group(2)})" in readme  # and shows the picture
    argv = command.split()[1:]
    i = argv.index("--timeline-out")
    argv[i + 1] = str(tmp_path / "again.svg")
    out = subprocess.run([sys.executable, "-m", "tdxseam.cli", *argv], capture_output=True, text=True,
                         timeout=300, cwd=REPO)
    assert out.returncode in (0, 1), out.stderr
    assert _svg_description(tmp_path / "again.svg") == _svg_description(committed)
    assert committed.stat().st_size < 200_000


def test_timeline_without_matplotlib_names_the_extra(tmp_path):
    block = ("import sys; sys.modules['matplotlib'] = None; from tdxseam.cli import main; "
             "sys.argv = ['tdxseam'] + sys.argv[1:]; main()")
    out = subprocess.run([sys.executable, "-c", block, "sim", "run", "--seed", "1", "--timeline-out",
                          str(tmp_path / "t.svg")], capture_output=True, text=True, timeout=120)
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr == "tdxseam: error: --timeline-out needs matplotlib: pip install 'tdxseam[plot]'\n"
    assert not (tmp_path / "t.svg").exists()
