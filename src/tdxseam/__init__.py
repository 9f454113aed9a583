"""tdxseam: a TDX host cut at the SEAMCALL instruction, both sides modelled."""

__version__ = "0.1.0"
