"""Intel's TDX module binaries, run on an emulated CPU (unicorn) in place of the Python model.

`engine` is the CPU and SEAM memory one module instance runs in; `insns` finds and emulates the
instructions only SEAM mode has; `module.RealModule` plugs an engine behind the SEAMCALL door;
`probe.probe_module` boots a binary and reads what it says it is. The packages are optional
(`tdxseam[real]`): `require()` raises `EngineUnavailable` naming them.
"""

from __future__ import annotations

from tdxseam.seam.real.errors import EngineUnavailable


def require() -> None:
    """Raise EngineUnavailable (an ImportError) unless unicorn and capstone import."""
    missing = []
    try:
        import unicorn  # noqa: F401
    except ImportError:
        missing.append("unicorn")
    try:
        import capstone  # noqa: F401
    except ImportError:
        missing.append("capstone")
    if missing:
        raise EngineUnavailable(" and ".join(missing))
