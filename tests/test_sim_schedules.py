"""Draw policies: the default draw is untouched, PCT is deterministic and bites, exhaustive counts."""

from __future__ import annotations

from tdxseam.platform.machine import Machine
from tdxseam.sim.runner import SimRun, run_scenario, run_seed
from tdxseam.sim.scenario import generate, tiny
from tdxseam.sim.schedules import PctPolicy, compact, explore, parse_compact, run_schedule


def _machine_digest(pick=None) -> str:
    m = Machine(8, seed=11, trace=False)
    m.sched.pick = pick

    def work(cpu):
        for _ in range(25):
            cpu.preempt_point()

    for c in m.cpus:
        m.sched.spawn(c, work, c)
    assert m.sched.run() is None
    return m.sched.schedule_digest()


def test_default_draw_is_byte_identical_to_before_the_policy_hook():
    # recorded with the scheduler as it was before `pick` existed
    assert _machine_digest() == "f45b1f0d75330986"


def test_a_policy_drawing_from_the_rng_is_the_default_draw():
    assert _machine_digest(lambda s, n: s.rng.randrange(n)) == _machine_digest()
    sc = generate(12, cpus=4)
    a = run_scenario(sc)
    b = SimRun(sc, schedule=_RngPolicy()).run()
    assert a.schedule_digest == b.schedule_digest and a.steps == b.steps


class _RngPolicy:
    name = "rng"

    def __call__(self, sched, n):
        return sched.rng.randrange(n)


def test_candidates_are_what_the_draw_chooses_from():
    m = Machine(3, seed=1, trace=False)
    seen = []

    def pick(s, n):
        cands = s.candidates()
        assert len(cands) == n
        seen.append(tuple(t.cpu.id for t in cands))
        return 0

    m.sched.pick = pick
    for c in m.cpus:
        m.sched.spawn(c, lambda c=c: [c.preempt_point() for _ in range(3)])
    m.sched.run()
    assert seen and all(len(set(x)) == len(x) for x in seen)


def test_pct_is_deterministic_and_differs_from_random():
    a, b = run_seed(4, schedule="pct"), run_seed(4, schedule="pct")
    assert a.schedule_digest == b.schedule_digest and a.ok
    assert a.schedule_digest != run_seed(4).schedule_digest
    assert a.schedule == "pct"


def test_pct_runs_highest_priority_first():
    m = Machine(4, seed=2, trace=False)
    pol = PctPolicy(2, depth=1)
    m.sched.pick = pol
    order = []

    def work(cpu):
        for _ in range(5):
            order.append(cpu.id)
            cpu.preempt_point()

    for c in m.cpus:
        m.sched.spawn(c, work, c)
    m.sched.run()
    # depth 1: no change points, so each task runs to its end before a lower-priority one
    runs = [order[0]]
    for x in order[1:]:
        if x != runs[-1]:
            runs.append(x)
    assert len(runs) == 4 and sorted(runs) == [0, 1, 2, 3]


def test_pct_catches_mutations_too():
    # PCT runs the highest-priority CPU until it blocks, so it finds ordering bugs of the lockstep
    # at once; fine-grained overlaps (no-lock) need a change point inside a P-SEAMLDR call and are
    # the random draw's strength
    for mutation in ("skip-lp-init", "no-abort", "ack-before-work", "no-irqsave"):
        assert any(run_seed(s, cpus=4, mutations=(mutation,), schedule="pct", kernel="v4").violations
                   for s in range(20)), mutation


def test_exhaustive_counts_distinct_schedules_and_covers_the_bound():
    sc = tiny(cpus=2, reader=False)
    ex0 = explore(sc, preemptions=0)
    ex1 = explore(sc, preemptions=1)
    print(f"\nexhaustive, 2 CPUs: {ex0.schedules} schedules with 0 preemptions, {ex1.schedules} with 1")
    assert ex0.exhausted and ex1.exhausted
    assert 1 <= ex0.schedules < ex1.schedules
    assert ex1.distinct_interleavings == ex1.schedules  # every schedule interleaves the CPUs differently
    assert not ex1.failing


def test_exhaustive_finds_the_no_lock_overlap_and_its_schedule_replays():
    sc = tiny(cpus=2, reader=True)
    ex = explore(sc, mutations=("no-lock",), preemptions=1, max_schedules=150, stop_on_violation=True)
    assert ex.failing, ex.to_json()
    ranks, violations = ex.failing[0]
    assert "seamldr-overlap" in violations[0]
    assert parse_compact(compact(ranks)) == ranks[:len(parse_compact(compact(ranks)))]
    r = run_schedule(sc, parse_compact(compact(ranks)), mutations=("no-lock",), trace=True)
    assert r.first_kind == "seamldr-overlap"
    assert str(r.violations[0]) == violations[0]


def test_exhaustive_three_cpus_is_cut_off_at_the_cap():
    ex = explore(tiny(cpus=3, reader=False), preemptions=1, max_schedules=25)
    assert ex.schedules == 25 and not ex.exhausted and not ex.failing


def test_pct_horizon_is_measured_so_change_points_fall_inside_the_run():
    """With a fixed horizon of 1500 decisions most runs (a few hundred) never reached a change
    point; with the measured one every run reaches its first, and most reach both."""
    from tdxseam.sim.scenario import generate
    from tdxseam.sim.schedules import PctPolicy

    stats = [run_seed(s, cpus=4, schedule="pct").stats for s in range(12)]
    assert all(st["pct_horizon"] < 1500 and st["pct_changes"] >= 1 for st in stats), stats
    assert sum(st["pct_changes"] == 2 for st in stats) >= 8, stats
    # the old fixed horizon: the first change point lies past the run's decisions for most seeds
    late = sum(PctPolicy(s, horizon=1500).change_points[0] > st["pct_horizon"] for s, st in enumerate(stats))
    assert late >= 8 and generate(0, cpus=4).cpus == 4
