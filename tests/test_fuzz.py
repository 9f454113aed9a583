"""The fuzz properties of tests/fuzz_targets.py, each for a bounded number of examples (a few
seconds apiece; `make fuzz` runs them for as long as asked). Derandomized by the conftest profile."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings

from fuzz_targets import PROPERTIES


def _bounded(name: str):
    fn, strategies, examples = PROPERTIES[name]
    test = settings(max_examples=examples, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])(given(**strategies)(fn))
    test.__name__ = f"test_fuzz_{name}"
    test.__doc__ = fn.__doc__
    return test


for _name in PROPERTIES:
    globals()[f"test_fuzz_{_name}"] = _bounded(_name)


# -- the properties bite, and what they found ------------------------------------------------------------

import pytest  # noqa: E402

import fuzz_targets as F  # noqa: E402
from tdxseam.formats.image import with_checksum  # noqa: E402


def _module_flipped() -> bytes:
    b = bytearray(F.BLOB)
    b[F._MODULE_AT + 100] ^= 1
    return with_checksum(bytes(b))


def test_acceptance_property_fails_when_checks_are_off(monkeypatch):
    """With the signature and SEAMHASH checks switched off, a changed module byte is accepted and
    the property says so (and counts it)."""
    F.prop_verify_module(_module_flipped())  # checks on: refused, nothing counted
    import tdxseam.formats.measure as measure
    import tdxseam.tool.verify as verify

    monkeypatch.setattr(verify, "check_seamhash", lambda sig, module: None)
    monkeypatch.setattr(measure, "check_seamhash", lambda sig, module: None)
    before = F.COUNTS["accepted_changes"]
    with pytest.raises(AssertionError, match="accepted a changed signed byte"):
        F.prop_verify_module(_module_flipped())
    assert F.COUNTS["accepted_changes"] == before + 1
    F.COUNTS["accepted_changes"] = before


def test_cli_property_fails_on_exit_70(monkeypatch):
    """A bug behind `plan` (exit 70) fails the CLI property."""
    import tdxseam.cli.tool_plan as tool_plan

    def broken(*a, **k):
        raise ZeroDivisionError("planted")

    monkeypatch.setattr(tool_plan, "run_plan", broken)
    before = F.COUNTS["exit_70"]
    with pytest.raises(AssertionError, match="exit 70"):
        F.prop_cli_plan(F.BLOB, None, True, False)
    assert F.COUNTS["exit_70"] > before
    F.COUNTS["exit_70"] = before


def test_version_digits_are_ascii():
    """Found by the version property: `\\d` let other scripts' digits through, so a mapping file or
    a `version` attribute reading "١.٥.١٣" passed for 1.5.13."""
    from tdxseam.formats.errors import VersionError
    from tdxseam.formats.version import ModuleVersion

    for text in ("١.٥.١٣", "1.5.١٣", "１.5.13"):
        with pytest.raises(VersionError):
            ModuleVersion.parse(text)
    assert ModuleVersion.parse(" 1.5.13\n") == ModuleVersion(1, 5, 13)
