"""Scenarios: generated from a seed (the same everywhere), printable, loadable, shrinkable."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tdxseam.sim.scenario import Scenario, ScenarioError, generate, tiny


def test_same_seed_same_scenario_and_seeds_differ():
    assert generate(5) == generate(5)
    assert len({generate(s).dumps() for s in range(40)}) == 40


def test_generation_does_not_depend_on_the_hash_seed():
    code = "from tdxseam.sim.scenario import generate; print(generate(11).dumps())"
    outs = {subprocess.run([sys.executable, "-c", code], capture_output=True, check=True,
                           env=dict(os.environ, PYTHONHASHSEED=h)).stdout for h in ("1", "2")}
    assert outs == {(generate(11).dumps() + "\n").encode()}


def test_cpus_fixes_the_host_size_and_every_part_fits():
    for seed in range(50):
        sc = generate(seed, cpus=3)
        assert sc.cpus == 3
        sc.validate()
        assert sc.updates and all(0 <= t.cpu < 3 for t in sc.tds)
        for h in sc.hotplug:
            assert h.victim != 0 and h.victim2 != 0 if h.victim2 else h.victim != 0


def test_generated_mix_covers_every_ingredient():
    scs = [generate(s) for s in range(300)]
    assert {sc.cpus for sc in scs} >= {2, 3, 4, 8}
    assert any(sc.hotplug for sc in scs) and any(sc.faults for sc in scs)
    assert any(sc.seamdb_capacity == 1 for sc in scs) and any(len(sc.updates) == 3 for sc in scs)
    assert any(t.race for sc in scs for t in sc.tds)
    assert not any(q.handler == "seamldr_info" for sc in scs for q in sc.irqs)  # merged: no interrupt-context callers
    assert any(q.handler == "nmi" for sc in scs for q in sc.irqs)
    assert any(q.handler == "seamldr_info" for s in range(100) for q in generate(s, kernel="v4").irqs)
    assert any(sc.sockets == 2 for sc in scs) and any(h.victim2 for sc in scs for h in sc.hotplug)
    # busy victims: a reader or a TD starts on a CPU that goes offline (its tasks migrate)
    assert any(h.victim in {r.cpu for r in sc.readers} | {t.cpu for t in sc.tds} for sc in scs for h in sc.hotplug)
    assert any(u.relocation for sc in scs for u in sc.updates) and any(u.alloc_fail for sc in scs for u in sc.updates)
    assert any(f.startswith(("TDH_MNG_CREATE", "TDH_VP_ENTER")) for sc in scs for f in sc.faults)
    assert {u.image for sc in scs for u in sc.updates} == {"good", "bad-header", "bad-sig", "bad-hash"}
    assert any(u.aslr_entropy for sc in scs for u in sc.updates)
    assert any("#*" in f for sc in scs for f in sc.faults)


def test_json_round_trip_and_describe():
    sc = generate(42)
    assert Scenario.loads(sc.dumps()) == sc
    assert Scenario.from_json(json.loads(json.dumps(sc.to_json()))) == sc
    lines = sc.describe()
    assert lines[0].startswith(f"host: {sc.cpus} CPUs") and len(lines) >= 1 + len(sc.updates)


@pytest.mark.parametrize("bad", [
    "[]", "{", '{"seed": 1}', '{"seed": 1, "cpus": 2, "bogus": 1}', '{"seed": 1, "cpus": 0}',
    '{"seed": 1, "cpus": 2, "tds": [{"cpu": 5}]}', '{"seed": 1, "cpus": 2, "tds": [{"cpu": "0"}]}',
    '{"seed": 1, "cpus": 2, "updates": [{"to": "1.5"}]}', '{"seed": 1, "cpus": 2, "faults": ["NOPE=1"]}',
    '{"seed": 1, "cpus": 2, "hotplug": [{"cpu": 0, "victim": 0}]}', '{"seed": true, "cpus": 2}',
    '{"seed": 1, "cpus": 2, "readers": [{"cpu": 0, "attr": "x"}]}', '{"seed": 1, "cpus": 2, "tds": 3}',
])
def test_bad_scenario_files_are_refused_with_one_error(bad):
    with pytest.raises(ScenarioError):
        Scenario.loads(bad)


def test_simplifications_are_smaller_and_valid():
    sc = generate(3)
    cands = list(sc.simplifications())
    assert cands
    for c in cands:
        c.validate()
        assert c.size() <= sc.size() and c.seed == sc.seed and c.updates
    assert any(c.cpus < sc.cpus for c in cands) or sc.cpus == 2


def test_with_cpus_moves_parts_onto_the_smaller_host():
    sc = generate(8, cpus=8)
    small = sc.with_cpus(3)
    assert small is not None and small.cpus == 3
    small.validate()


def test_tiny():
    sc = tiny(cpus=3, fault="P_SEAMLDR_INSTALL@1=EBADSIG")
    assert sc.cpus == 3 and len(sc.updates) == 1 and sc.faults
    sc.validate()
