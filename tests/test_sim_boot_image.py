"""One boot per host shape (`sim/boot_image.py`): seeds share the boot, never state."""

from __future__ import annotations

from collections import deque
from dataclasses import replace
from enum import Enum

import greenlet

import pytest

from tdxseam.formats.version import ModuleVersion
from tdxseam.host import DeclaredModule
from tdxseam.seam.pseamldr import SeamldrBuild
from tdxseam.sim import boot_image
from tdxseam.sim.runner import run_scenario, run_seed
from tdxseam.sim.scenario import generate


def _shape(seed: int, **kw):
    return boot_image.booted_host(4, seed=seed, module=DeclaredModule(ModuleVersion(1, 5, 6)),
                                  seamldr=SeamldrBuild(seamdb_capacity=64), **kw)


def _result(r) -> tuple:
    return r.to_json(), r.report_lines()


def test_seed_a_then_b_then_a_is_byte_identical():
    boot_image.clear()
    sc_a = generate(11, cpus=4)
    sc_b = replace(generate(12, cpus=4), cpus=4, module=sc_a.module, seamdb_capacity=sc_a.seamdb_capacity,
                   sockets=sc_a.sockets)  # the same host shape: B runs on A's image
    a1 = _result(run_scenario(sc_a))
    b = _result(run_scenario(sc_b))
    a2 = _result(run_scenario(sc_a))
    assert a1 == a2
    assert b != a1
    boot_image.clear()  # and from a new image, as a fresh process would make it
    assert _result(run_scenario(sc_a)) == a1


def test_a_loaded_host_runs_as_a_host_booted_with_the_boot_seed():
    """The image changes nothing but the cost: a traced run boots for real, and agrees."""
    for seed in (3, 4, 5):
        quiet, traced = run_seed(seed, cpus=4), run_seed(seed, cpus=4, trace=True)
        q, t = quiet.to_json(), traced.to_json()
        t["trace_digest"] = None
        assert q == t


def _mutable_objects(root) -> dict[int, object]:
    """Every mutable object reachable from `root`: instances of the model, lists, dicts, sets,
    bytearrays, deques (enum members are singletons by design, and the greenlet every host keeps
    as `_main` is the caller's). A frozen model object (its class refuses `__setattr__`) is not
    one itself, as the loads may share it, but what it holds is looked at."""
    out: dict[int, object] = {}
    stack = [root]
    seen: set[int] = set()
    while stack:
        o = stack.pop()
        if id(o) in seen or isinstance(o, (int, float, str, bytes, type, Enum, greenlet.greenlet)) or o is None:
            continue
        seen.add(id(o))
        if isinstance(o, (list, dict, set, bytearray, deque)):
            out[id(o)] = o
        if isinstance(o, dict):
            stack.extend(o.keys())
            stack.extend(o.values())
        elif isinstance(o, (list, tuple, set, frozenset, deque)):
            stack.extend(o)
        elif type(o).__module__.startswith("tdxseam."):
            if type(o).__setattr__ is object.__setattr__:
                out[id(o)] = o
            if hasattr(o, "__dict__"):
                stack.extend(vars(o).values())
            for slot in getattr(type(o), "__slots__", ()):
                stack.append(getattr(o, slot, None))
    return out


def test_two_seeds_on_one_shape_start_from_independent_objects():
    a, b = _shape(1), _shape(2)
    shared = set(_mutable_objects(a)) & set(_mutable_objects(b))
    assert not shared, [type(_mutable_objects(a)[i]).__name__ for i in list(shared)[:10]]
    # a change to one host is not seen by the other
    pa = a.machine.mem.alloc_page()
    a.machine.mem.write(pa, b"seed one")
    a.machine.cpus[1].online = False
    assert b.machine.mem.read(pa, 8) == bytes(8)
    assert b.machine.cpus[1].online


def test_seeds_on_one_shape_draw_differently():
    a, b, a2 = _shape(1), _shape(2), _shape(1)
    draws = [[h.machine.sched.rng.random(), [h.machine.mem.alloc_page() for _ in range(10)], h.pseamldr._rdrand()]
             for h in (a, b, a2)]
    assert draws[0] == draws[2]
    assert all(x != y for x, y in zip(draws[0], draws[1]))
    assert a.machine.seed == 1 and a._platform["seed"] == 1


def test_the_boot_itself_uses_the_boot_seed():
    """Every seed's host comes from the same boot: the boot's draws are the boot seed's."""
    a, b = _shape(1), _shape(2)
    assert a.machine.sched.choices == b.machine.sched.choices
    assert a.machine.sched.steps == b.machine.sched.steps > 0


def test_a_scheduler_with_live_tasks_is_not_imaged():
    import pickle

    h = _shape(1)
    h.sched.spawn(h.machine.cpus[0], lambda: None)
    with pytest.raises(TypeError, match="live tasks"):
        pickle.dumps(h)


def test_a_reboot_loads_the_image_again_and_kexec_keeps_seam_state():
    h = _shape(3)
    booted = h.pseamldr.num_remaining_updates
    h.pseamldr.num_remaining_updates -= 1  # as an update would have
    h2 = h.reboot()
    assert h2 is not h and h2.machine.seed == 3
    assert h2.pseamldr.num_remaining_updates == booted  # a platform reset: a fresh SEAMDB
    assert not set(_mutable_objects(h)) & set(_mutable_objects(h2))
    h3 = _shape(4)
    h3.pseamldr.num_remaining_updates -= 1
    h3.kexec()  # a kernel booted for real on the SEAM state the old one left
    assert h3.pseamldr.num_remaining_updates == booted - 1


def test_only_frozen_objects_with_an_immutable_graph_are_shared():
    build = SeamldrBuild()
    assert boot_image._immutable(build)
    assert boot_image._immutable((1, "a", b"b", frozenset([build])))
    assert not boot_image._immutable((1, [2]))  # a list inside a tuple
    assert not boot_image._immutable(replace(build, seamdb_capacity=[64]))  # a frozen object holding a list
    assert not boot_image._immutable(_shape(1).machine.cpus[0])  # a model object that is not frozen


def test_loads_where_an_unpicklers_persistent_load_is_read_only(monkeypatch):
    """Python 3.13 made an Unpickler instance's `persistent_load` read-only: the image's loader
    must supply it from its class. Here 3.11 is made as strict, so the old way fails."""
    import pickle

    class Strict(pickle.Unpickler):
        def __setattr__(self, name: str, value) -> None:
            if name == "persistent_load":
                raise AttributeError("attribute 'persistent_load' is read-only (as on Python 3.13)")
            super().__setattr__(name, value)

    monkeypatch.setattr(pickle, "Unpickler", Strict)
    boot_image.clear()
    try:
        a, b = _shape(1), _shape(1)  # both loaded from the image the first call made
    finally:
        boot_image.clear()  # no image of this test's making outlives it
    assert a is not b and a.kernel.profile is b.kernel.profile  # shared, through persistent_load
