"""Errors of the operator tool: one line for the user and a kind the CLI maps to an exit code."""

from __future__ import annotations

from enum import Enum


class Kind(Enum):
    BAD_INPUT = "bad_input"  # an input file, catalog or mapping file is unreadable or unusable
    HOST = "host"  # the sysfs root does not look like a TDX host, or cannot be read
    USAGE = "usage"  # the arguments do not make sense together


class ToolError(Exception):
    def __init__(self, message: str, kind: Kind = Kind.BAD_INPUT) -> None:
        super().__init__(message)
        self.kind = kind
