"""The update history: one JSON object per line, appended after every update attempt.

Path: `--history PATH`, else `$TDXSEAM_HISTORY`, else /var/lib/tdxseam/history.jsonl. Records
carry the sysfs root, so runs against an emulated host are told apart from real ones. Reading
skips malformed lines and counts them (a log must survive a torn last line after a crash).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from tdxseam.formats.files import FileError, append_line, errno_text, read_file
from tdxseam.tool.errors import ToolError

DEFAULT_PATH = "/var/lib/tdxseam/history.jsonl"
ENV = "TDXSEAM_HISTORY"
RECORD_VERSION = 1
MAX_SIZE = 256 << 20  # ~500 000 updates; a log larger than that is not ours


def history_path(explicit: str | os.PathLike[str] | None = None) -> Path:
    if explicit:
        return Path(explicit)
    return Path(os.environ.get(ENV) or DEFAULT_PATH)


def now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


def append(path: Path, record: dict[str, Any]) -> None:
    """Append one line; OSError is turned into ToolError (the caller decides how loud)."""
    line = json.dumps({"v": RECORD_VERSION, **record}, sort_keys=True, separators=(",", ":"))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        append_line(path, (line + "\n").encode())
    except FileError as exc:
        raise ToolError(f"cannot append to history: {exc}") from None
    except OSError as exc:
        raise ToolError(f"cannot append to history {path}: {errno_text(exc)}") from None


@dataclass
class History:
    path: Path
    records: list[dict[str, Any]]
    bad_lines: list[int]  # 1-based numbers of lines that are not JSON objects


def read(path: Path) -> History:
    """All records, oldest first; a missing file is an empty history."""
    try:
        text = read_file(path, MAX_SIZE, "a history log").decode("utf-8", "replace")
    except FileError as exc:
        if exc.code == "missing":
            return History(path, [], [])
        raise ToolError(f"cannot read history: {exc}") from None
    records: list[dict[str, Any]] = []
    bad: list[int] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except ValueError:
            bad.append(n)
            continue
        if isinstance(obj, dict):
            records.append(obj)
        else:
            bad.append(n)
    return History(path, records, bad)
