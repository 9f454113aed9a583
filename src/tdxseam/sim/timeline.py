"""A run drawn as a timeline (SVG, or PNG by the file's suffix): CPUs top to bottom, scheduler
steps left to right, the lockstep states of a module update coloured, failures marked.

Drawn from the same events as the Chrome trace (`chrome_trace`), so the picture and the trace
agree. Needs matplotlib (extra `tdxseam[plot]`), imported only here; the figure is built without
pyplot, and the SVG carries no date and fixed element ids, so one run gives one file.
"""

from __future__ import annotations

import os
from typing import Any

from tdxseam.platform.trace import Trace
from tdxseam.sim.chrome_trace import FIRMWARE_TID, chrome_trace, open_output

# One colour per lockstep state, in the order the states go by (ColorBrewer Set2-like).
STATE_COLOURS = {
    "SHUTDOWN": "#8da0cb", "CPU_INSTALL": "#66c2a5", "CPU_INIT": "#a6d854",
    "RUN_UPDATE": "#ffd92f", "DONE": "#b3b3b3",
}
LOCK_COLOUR, SPIN_COLOUR, IRQ_COLOUR = "#e78ac3", "#fc8d62", "#7570b3"
FAIL_COLOUR = "#d62728"


def plot_available() -> bool:
    try:
        import importlib.util

        return importlib.util.find_spec("matplotlib") is not None
    except (ImportError, ValueError):
        return False


def _slices(events: list[dict]) -> list[dict]:
    """Every slice as {tid, name, cat, ts, end, args}: X events, and B/E pairs matched per track."""
    out: list[dict] = []
    open_: dict[int, list[dict]] = {}
    for ev in events:
        ph = ev["ph"]
        if ph == "X":
            out.append({"tid": ev["tid"], "name": ev["name"], "cat": ev["cat"], "ts": ev["ts"],
                        "end": ev["ts"] + ev["dur"], "args": ev.get("args", {})})
        elif ph == "B":
            open_.setdefault(ev["tid"], []).append(dict(ev))
        elif ph == "E":
            b = open_[ev["tid"]].pop()
            out.append({"tid": ev["tid"], "name": b["name"], "cat": b["cat"], "ts": b["ts"], "end": ev["ts"],
                        "args": {**b.get("args", {}), **ev.get("args", {})}})
    return out


def draw_timeline(path: str | os.PathLike[str], trace: Trace, *, cpus: int, title: str,
                  meta: dict | None = None) -> None:
    """Draw `trace` to `path` (.svg or .png)."""
    from matplotlib.figure import Figure  # noqa: PLC0415  (optional dependency)
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch
    import matplotlib

    doc = chrome_trace(trace, cpus=cpus, title=title, meta=meta)
    events = doc["traceEvents"]
    slices = _slices(events)
    tids = sorted({e["tid"] for e in events if e.get("ph") == "M" and e["name"] == "thread_name"})
    if not any(e.get("tid") == FIRMWARE_TID for e in events if e.get("ph") != "M"):
        tids = [t for t in tids if t != FIRMWARE_TID]
    row = {tid: i for i, tid in enumerate(tids)}
    label = {tid: "firmware" if tid == FIRMWARE_TID else f"cpu{tid - 1}" for tid in tids}
    stamped = [e["ts"] for e in events if "ts" in e]
    first, last = (min(stamped), max(stamped)) if stamped else (0, 1)
    width = max(last - first, 1)

    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "tdxseam", "font.size": 8}):
        fig = Figure(figsize=(11, 1.4 + 0.42 * len(tids)))
        ax = fig.add_subplot()
        ax.set_ylim(len(tids) - 0.4, -0.6)
        ax.set_xlim(first - width * 0.01, last + width * 0.01)
        ax.set_yticks(range(len(tids)), [label[t] for t in tids])
        ax.set_xlabel("scheduler step")
        ax.grid(axis="x", color="#dddddd", linewidth=0.5)
        ax.set_axisbelow(True)
        states_seen: dict[str, str] = {}
        for s in slices:
            y = row.get(s["tid"])
            if y is None:
                continue
            dur = max(s["end"] - s["ts"], width * 0.002)  # a zero-step slice stays visible
            if s["cat"] == "lockstep":
                colour = STATE_COLOURS.get(s["name"], "#cccccc")
                states_seen.setdefault(s["name"], colour)
                ax.broken_barh([(s["ts"], dur)], (y - 0.35, 0.7), facecolors=colour, edgecolors="none", zorder=1)
                if s["args"].get("ret") not in (None, "0"):  # this CPU left the lockstep on an error
                    ax.plot([s["end"]], [y], marker="|", markersize=11, color=FAIL_COLOUR, mew=2, zorder=4)
            elif s["cat"] == "seamcall":
                failed = s["args"].get("status", "SUCCESS") != "SUCCESS"
                ax.broken_barh([(s["ts"], dur)], (y - 0.12, 0.24),
                               facecolors=FAIL_COLOUR if failed else "#333333", edgecolors="none", zorder=3)
            elif s["cat"] in ("lock", "spin", "irq"):
                colour = {"lock": LOCK_COLOUR, "spin": SPIN_COLOUR, "irq": IRQ_COLOUR}[s["cat"]]
                ax.broken_barh([(s["ts"], dur)], (y + 0.2, 0.12), facecolors=colour, edgecolors="none", zorder=3)
        marks = {"fault": ("X", FAIL_COLOUR, 8), "irq-raise": ("v", IRQ_COLOUR, 5),
                 "cpu-offline": ("<", "#000000", 6), "cpu-online": (">", "#000000", 6)}
        fault_notes = []
        for e in events:
            if e.get("ph") != "i":
                continue
            if e["cat"] == "violation":
                ax.axvline(e["ts"], color=FAIL_COLOUR, linestyle="--", linewidth=1)
            elif e["name"] in marks and e.get("tid") in row:
                m, c, sz = marks[e["name"]]
                ax.plot([e["ts"]], [row[e["tid"]] - 0.42], marker=m, color=c, markersize=sz, linestyle="none", zorder=4)
                if e["name"] == "fault":
                    fault_notes.append((e["ts"], row[e["tid"]], e.get("args", {}).get("detail", "")))
        for ts, y, what in fault_notes[:4]:
            right = ts > first + 0.6 * width  # keep the note inside the axes
            ax.annotate(what, (ts, y - 0.42), xytext=(-7 if right else 7, -3), textcoords="offset points",
                        fontsize=7, color=FAIL_COLOUR, va="center", ha="right" if right else "left")
        present = {s["cat"] for s in slices} | {e["name"] for e in events if e.get("ph") == "i"} | {
            "failed" for s in slices if s["cat"] == "seamcall" and s["args"].get("status", "SUCCESS") != "SUCCESS"}
        handles = [Patch(facecolor=c, label=n) for n, c in states_seen.items()]
        legend = [("seamcall", Patch(facecolor="#333333", label="SEAMCALL")),
                  ("failed", Patch(facecolor=FAIL_COLOUR, label="SEAMCALL failed")),
                  ("lock", Patch(facecolor=LOCK_COLOUR, label="lock held")),
                  ("spin", Patch(facecolor=SPIN_COLOUR, label="lock spin")),
                  ("irq", Patch(facecolor=IRQ_COLOUR, label="interrupt handler")),
                  ("irq-raise", Line2D([], [], marker="v", color=IRQ_COLOUR, linestyle="none", label="interrupt raised")),
                  ("cpu-offline", Line2D([], [], marker="<", color="#000000", linestyle="none", label="CPU offline")),
                  ("cpu-online", Line2D([], [], marker=">", color="#000000", linestyle="none", label="CPU online")),
                  ("fault", Line2D([], [], marker="X", color=FAIL_COLOUR, linestyle="none", label="fault injected")),
                  ("violation", Line2D([], [], color=FAIL_COLOUR, linestyle="--", label="violation"))]
        handles += [h for key, h in legend if key in present]
        ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, -0.5 / (1 + 0.3 * len(tids))),
                  ncol=min(len(handles), 7), frameon=False, fontsize=7)
        ax.set_title(title, fontsize=9, loc="left")
        for side in ("top", "right"):
            ax.spines[side].set_visible(False)
        fig.tight_layout()
        fmt = "png" if str(path).lower().endswith(".png") else "svg"
        info = doc["otherData"]
        desc = f"tdxseam timeline; trace digest {info['trace_digest']}; steps {first}..{last}"
        if meta and meta.get("command"):
            desc += f"; {meta['command']}"
        metadata: dict[str, Any] = {"Title": title}
        if fmt == "svg":
            metadata.update({"Date": None, "Description": desc})
        else:
            metadata["Description"] = desc
        with open_output(path, "wb") as f:
            fig.savefig(f, format=fmt, metadata=metadata, dpi=110)
