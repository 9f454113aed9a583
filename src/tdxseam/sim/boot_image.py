"""One boot per host shape: the simulator's hosts are loaded from an image of a booted host.

Booting an emulated host (the firmware's load of the module on every CPU with its signature and
SEAMHASH checks, then the kernel's TDX init through the scheduler) costs more than most of a
scenario's run. Every scenario of the same host shape (CPUs, packages, boot module, SEAMDB
capacity, kernel profile, mutations) boots the same way when it boots with the same seed, so the
simulator boots each shape once per process with `BOOT_SEED`, keeps the booted host pickled, and
gives each scenario a fresh host loaded from that image, then reseeded with the scenario's seed
(`EmulatedHost.reseed`: the scheduler's draw, the page allocator's shuffle, the P-SEAMLDR's
RDRAND). Seeds differ from their first step after boot on; the boot itself is the same for all.

A loaded host shares no mutable object with the image's other hosts (pickle rebuilds every
object but classes, functions, enum members and the frozen model objects whose whole graph is
immutable: the boot module's and the P-SEAMLDR's builds, the sigstruct, the SEAM layout, the
kernel profile), so no state passes from one seed to the next. A traced host is booted for real,
with `BOOT_SEED` and then reseeded, so it runs exactly as its untraced twin and its trace holds
the boot. Intel's firmware (`--firmware real`) is not imaged: its emulator is booted per seed as
before.
"""

from __future__ import annotations

import copyreg
import io
import pickle
from collections import deque
from enum import Enum
from functools import partial
from itertools import repeat
from typing import Any

from tdxseam.host import EmulatedHost

# The seed every simulator host boots with, whatever the scenario's seed.
BOOT_SEED = 0
# Images kept per process (oldest dropped first): a campaign meets a few dozen shapes.
MAX_IMAGES = 64

# shape -> (pickle, the Unpickler class that gives its loads the image's shared immutable objects)
_images: dict[tuple, tuple[bytes, type[pickle.Unpickler]]] = {}


def booted_host(cpus: int, *, seed: int, module: Any, seamldr: Any, mutations: frozenset[str] = frozenset(),
                kernel: str = "merged", sockets: int = 1, trace: bool = False) -> EmulatedHost:
    """A host of this shape, booted with `BOOT_SEED`, whose RNGs then draw from `seed`."""
    if trace:  # booted for real, so the trace holds the boot; it boots as the image did
        host = _boot(cpus, module, seamldr, mutations, kernel, sockets, trace=True)
    else:
        key = (cpus, module, seamldr, frozenset(mutations), kernel, sockets)
        image = _images.get(key)
        if image is None:
            image = _image(_boot(cpus, module, seamldr, mutations, kernel, sockets, trace=False))
            if len(_images) >= MAX_IMAGES:
                del _images[next(iter(_images))]
            _images[key] = image
        host = _load(*image)
    host.reseed(seed)
    # a platform reset of this host (the simulator's reboot check) loads the image again
    host.fresh_boot = partial(booted_host, cpus, seed=seed, module=module, seamldr=seamldr, mutations=mutations,
                              kernel=kernel, sockets=sockets, trace=trace)
    return host


def _boot(cpus: int, module: Any, seamldr: Any, mutations: frozenset[str], kernel: str, sockets: int, *,
          trace: bool) -> EmulatedHost:
    return EmulatedHost(cpus, seed=BOOT_SEED, module=module, seamldr=seamldr, mutations=frozenset(mutations),
                        trace=trace, kernel=kernel, sockets=sockets)


def _image(host: EmulatedHost) -> tuple[bytes, type[pickle.Unpickler]]:
    """The booted host pickled, without its RNGs: every load is reseeded (and an RNG's state is
    most of what a load would otherwise rebuild). With it, the loader of the immutable objects
    every load shares."""
    host.machine.sched.rng = None
    host.machine.mem._rng = None
    host.pseamldr._rng = None
    buf = io.BytesIO()
    shared: list = []
    _ImagePickler(buf, shared).dump(host)
    return buf.getvalue(), _loader(shared)


def _loader(shared: list) -> type[pickle.Unpickler]:
    """An Unpickler whose persistent ids name `shared`'s objects, a C call each. Made once per
    image, as a class: Python 3.13 made an instance's `persistent_load` read-only."""

    class Loader(pickle.Unpickler):
        persistent_load = staticmethod(shared.__getitem__)

    return Loader


def _load(data: bytes, loader: type[pickle.Unpickler]) -> EmulatedHost:
    """A host from its image: the pickle, with the shared objects its persistent ids name."""
    return loader(io.BytesIO(data)).load()


def _immutable(obj: Any) -> bool:
    """Is `obj`'s whole graph immutable (so every loaded host may hold the same one)? Frozen
    model objects, tuples (named ones too) and frozensets of such, and plain immutable values."""
    if obj is None or isinstance(obj, (bool, int, float, str, bytes, Enum)):
        return True
    if type(obj) is frozenset or (isinstance(obj, tuple) and not hasattr(obj, "__dict__")):  # (named) tuples
        return all(_immutable(x) for x in obj)
    cls = type(obj)
    if (not cls.__module__.startswith("tdxseam.") or cls.__setattr__ is object.__setattr__
            or "__slots__" in cls.__dict__ or not isinstance(getattr(obj, "__dict__", None), dict)):
        return False
    return all(_immutable(v) for v in vars(obj).values())


_CONTAINERS = (list, dict, set, frozenset, tuple, bytes, bytearray, str, int, deque)


class _ImagePickler(pickle.Pickler):
    """Pickles plain instances so that loading sets their attributes one by one.

    pickle's default fills a loaded instance through its `__dict__`, which CPython then keeps as
    a real dict instead of the compact per-class layout `__init__` gives: every attribute access
    on such an object is slower (some 2.5 times, measured), which made a loaded host's run slower
    than a booted one's. Setting each attribute through `object.__setattr__` keeps the compact
    layout."""

    def __init__(self, file: io.BytesIO, shared: list) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self._shared = shared
        self._shared_ids: dict[int, int] = {}

    def persistent_id(self, obj: Any) -> int | None:
        """A frozen model object with an immutable graph (the module's and P-SEAMLDR's builds, the
        sigstruct, the SEAM layout, the kernel profile) is kept as it is and shared by every load: a fifth of the
        objects a load would otherwise rebuild, some 15% of its instructions."""
        cls = type(obj)
        if cls.__setattr__ is object.__setattr__ or not cls.__module__.startswith("tdxseam."):
            return None  # (the common case, answered first: this runs for every object pickled)
        pid = self._shared_ids.get(id(obj))
        if pid is None and _immutable(obj):
            pid = self._shared_ids[id(obj)] = len(self._shared)
            self._shared.append(obj)
        return pid

    def reducer_override(self, obj: Any) -> Any:
        cls = type(obj)
        if (not cls.__module__.startswith("tdxseam.") or cls.__reduce_ex__ is not object.__reduce_ex__
                or cls.__reduce__ is not object.__reduce__ or "__slots__" in cls.__dict__
                or isinstance(obj, _CONTAINERS) or not isinstance(getattr(obj, "__dict__", None), dict)):
            return NotImplemented  # others' classes, enums, slotted classes: pickle's own way
        state = obj.__getstate__()
        own = getattr(cls, "__setstate__", None)
        if own is not None:
            return copyreg.__newobj__, (cls,), state, None, None, own  # (Scheduler's) sets attributes too
        if cls.__setattr__ is object.__setattr__:
            # as pickle's "slot state": its loader sets each item with setattr, in C, which costs a
            # fifth of a load less than calling `_set_attrs` for each instance
            return copyreg.__newobj__, (cls,), (None, state)
        return copyreg.__newobj__, (cls,), state, None, None, _set_attrs


def _set_attrs(obj: Any, state: dict) -> None:
    """`object.__setattr__` for every item, looped in C (each call returns None, so `any` runs
    through them all): for classes whose own `__setattr__` refuses (frozen ones), as their
    `__init__` does."""
    any(map(object.__setattr__, repeat(obj), state, state.values()))


def clear() -> None:
    """Forget every image (tests)."""
    _images.clear()
