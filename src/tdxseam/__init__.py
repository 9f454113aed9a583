"""tdxseam: a TDX host cut at the SEAMCALL instruction, both sides modelled."""

__version__ = "0.1.0"

import logging as _logging

# A library logs; the application decides where it goes (the CLI shows the kernel log on request).
_logging.getLogger("tdxseam").addHandler(_logging.NullHandler())
