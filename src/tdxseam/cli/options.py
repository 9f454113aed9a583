"""Options several commands share (kept free of heavy imports: `--help` must stay fast)."""

from __future__ import annotations

import typer

from tdxseam.cli import exits

KERNEL_HELP = ("Kernel profile: which posting of the update series the host kernel behaves as "
               "(merged, v10 or v4; see docs/simulation.md, Kernel profiles).")


def kernel_option() -> str:
    return typer.Option("merged", "--kernel", metavar="PROFILE", help=KERNEL_HELP)


def check_kernel(name: str) -> str:
    """The profile name, or a usage error naming the choices."""
    from tdxseam.kernel.profile import PROFILE_NAMES

    if name not in PROFILE_NAMES:
        raise exits.CliError(f"--kernel must be one of {', '.join(PROFILE_NAMES)}, not {name!r}", exits.USAGE)
    return name
