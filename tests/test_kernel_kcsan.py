"""The data-race detector: which pairs of accesses are races, and that a report names both."""

from __future__ import annotations

import pytest

from tdxseam.host import EmulatedHost
from tdxseam.kernel.kcsan import SharedField, kcsan_access
from tdxseam.kernel.locks import RawSpinlock, raw_spin_lock, raw_spin_unlock

COUNT = SharedField("ctl", "count")


def _two_cpus(first: dict, second: dict, *, lock_first: bool, lock_second: bool) -> list:
    h = EmulatedHost(2, seed=0, trace=False)
    k = h.kernel
    k.kcsan.enable()
    lock = RawSpinlock(k, "ctl.lock")

    def access(kw: dict, locked: bool) -> None:
        if locked:
            raw_spin_lock(lock)
        kcsan_access(k, COUNT, **kw)
        if locked:
            raw_spin_unlock(lock)

    h.run_on(0, access, first, lock_first)
    h.run_on(1, access, second, lock_second)
    return k.kcsan.reports


@pytest.mark.parametrize("first,second,locks,race", [
    ({"write": True}, {"write": True}, (False, False), True),  # two plain writes, no lock
    ({"write": True}, {"write": False}, (False, False), True),  # plain write, plain read
    ({"write": False}, {"write": False}, (False, False), False),  # two reads never race
    ({"write": True}, {"write": True}, (True, True), False),  # a common lock
    ({"write": True}, {"write": True}, (True, False), True),  # only one side locked
    ({"write": True, "marked": True}, {"write": False, "marked": True}, (False, False), False),  # ONCE pair
    ({"write": True}, {"write": False, "marked": True}, (False, False), True),  # plain write vs READ_ONCE
])
def test_race_rule(first, second, locks, race):
    reports = _two_cpus(first, second, lock_first=locks[0], lock_second=locks[1])
    assert bool(reports) == race
    if race:
        msg = reports[0].message
        assert msg.startswith("data race on ctl.count: ") and "cpu1" in msg and "cpu0" in msg


def test_same_cpu_never_races_with_itself_and_off_means_off():
    h = EmulatedHost(1, seed=0, trace=False)
    k = h.kernel
    h.run_on(0, lambda: kcsan_access(k, COUNT, write=True))
    assert k.kcsan.accesses == 0  # not enabled: nothing recorded
    k.kcsan.enable()
    h.run_on(0, lambda: [kcsan_access(k, COUNT, write=w) for w in (True, False, True)])
    assert k.kcsan.reports == [] and k.kcsan.accesses == 3


def test_a_field_is_one_object_per_name_even_through_pickle():
    """Records are found by the field object: a pickled host's must still match the kernel's."""
    import pickle

    assert SharedField("ctl", "count") is COUNT
    assert pickle.loads(pickle.dumps(COUNT)) is COUNT
    assert SharedField("ctl", "other") is not COUNT and str(COUNT) == "ctl.count"
