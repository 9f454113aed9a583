"""`tdxseam ARGS...` with Intel's release data forgotten, for tests that run the CLI in a
subprocess (`python _forgetful.py emulate ...`): every table entry is gone before any command
runs, so whatever it prints comes from the files alone."""

from __future__ import annotations

import sys

from tdxseam.formats import releases

releases.RELEASES_BY_SEAMHASH.clear()
releases.RELEASES_BY_VERSION.clear()
releases.KNOWN_RELEASES = ()

if __name__ == "__main__":
    from tdxseam.cli import main

    main(sys.argv[1:])
