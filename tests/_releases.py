"""Forgetting Intel's release data: identity must come from the files, never from a table."""

from __future__ import annotations

from tdxseam.formats import releases


def forget_releases(monkeypatch, versions=None) -> list[str]:
    """Remove releases (default: all) from every table in the code; returns their versions.

    `formats.releases` is the only module holding per-release data (a test scans the sources
    for any other copy), and its two dicts are shared by every importer, so deleting the
    entries in place hides them everywhere.
    """
    gone = [r for r in releases.KNOWN_RELEASES if versions is None or str(r.version) in versions]
    for r in gone:
        monkeypatch.delitem(releases.RELEASES_BY_SEAMHASH, r.mrseam)
        monkeypatch.delitem(releases.RELEASES_BY_VERSION, r.version)
    monkeypatch.setattr(releases, "KNOWN_RELEASES", tuple(r for r in releases.KNOWN_RELEASES if r not in gone))
    return [str(r.version) for r in gone]
