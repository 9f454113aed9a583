"""tdxseam: a TDX host cut at the SEAMCALL instruction, both sides modelled."""

__version__ = "0.1.0"


def get_logger(name: str):
    """`logging.getLogger(name)` for a tdxseam module that logs.

    The "tdxseam" logger gets a NullHandler first: a library logs, the application decides where
    it goes (the CLI shows the kernel log on request). Only modules that log load `logging`, so
    commands that never log (the operator tool's `plan`) start without it.
    """
    import logging

    top = logging.getLogger("tdxseam")
    if not any(isinstance(h, logging.NullHandler) for h in top.handlers):
        top.addHandler(logging.NullHandler())
    return logging.getLogger(name)
