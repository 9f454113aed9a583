"""Every planted bug is caught by a campaign of at most 500 seeds, by the invariant meant for it.

Small hosts (4 CPUs) keep each search to seconds. The number of seeds each mutation took is
printed (`pytest -s`) and carried in the assertion messages; runs are deterministic, so the counts
only change when the model, the scenario generator or the invariants do.
"""

from __future__ import annotations

import pytest

from tdxseam.kernel.kernel import MUTATIONS
from tdxseam.sim.campaign import run_campaign
from tdxseam.sim.runner import run_seed

CPUS = 4
MAX_SEEDS = 500

# The invariant each planted bug is meant to trip (the first violation of the catching seed).
EXPECTED_KINDS = {
    "no-lock": {"seamldr-overlap"},
    "no-irqsave": {"lockdep", "deadlock"},
    "no-abort": {"lockstep-abort"},
    "ack-before-work": {"lockstep-phase", "lockstep-abort", "outcome"},
    "skip-lp-init": {"lp-init-missing"},
    "no-hotplug-lock": {"online-changed", "seamcall-during-update"},
    "update-during-td-build": {"td-build-at-shutdown", "outcome"},
    # resources come back, readers tell the truth, shared data is locked
    "leak-params": {"leak"},
    "keep-build-gate": {"liveness"},
    "cached-remaining": {"reader-truth"},
    "racy-ack": {"data-race"},
}
# The kernel profile each is planted in: the protection must exist there (v4: the irqsave lock
# with interrupt-context callers, and the kernel TD-build gate); merged otherwise.
KERNEL = {"no-irqsave": "v4", "update-during-td-build": "v4", "keep-build-gate": "v4"}


@pytest.mark.parametrize("mutation,kind", [
    ("update-during-td-build", "td-build-at-shutdown"),  # a TD really is mid-build at SHUTDOWN
    ("update-during-td-build", "aftermath"),  # ... and its measurement comes back scrambled
    ("no-hotplug-lock", "online-changed"),
    ("racy-ack", "deadlock"),  # the preemption point between read and write loses an ack
])
def test_the_intended_invariant_itself_bites(mutation, kind):
    for seed in range(MAX_SEEDS):
        r = run_seed(seed, cpus=CPUS, mutations=(mutation,), kernel=KERNEL.get(mutation, "merged"))
        if any(v.kind == kind for v in r.violations):
            print(f"\n{mutation}: [{kind}] first at seed {seed} ({seed + 1} seeds)")
            return
    pytest.fail(f"{mutation}: no [{kind}] violation in {MAX_SEEDS} seeds")


def test_every_mutation_has_an_expected_invariant():
    assert set(EXPECTED_KINDS) == set(MUTATIONS)


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_mutation_is_caught_within_500_seeds(mutation):
    kernel = KERNEL.get(mutation, "merged")
    for seed in range(MAX_SEEDS):
        r = run_seed(seed, cpus=CPUS, mutations=(mutation,), kernel=kernel)
        if r.violations:
            took = seed + 1
            print(f"\n{mutation}: caught after {took} seed(s) (seed {seed}): {r.violations[0]}")
            assert r.first_kind in EXPECTED_KINDS[mutation], (
                f"{mutation}: caught after {took} seeds, but first by {r.violations[0]}")
            assert took <= MAX_SEEDS, f"{mutation}: took {took} seeds"
            # and the same seed without the mutation is clean: the bug, not the scenario, failed it
            clean = run_seed(seed, cpus=CPUS, kernel=kernel)
            assert clean.ok, f"{mutation}: seed {seed} also fails unmutated: {clean.violations[0]}"
            return
    pytest.fail(f"{mutation}: not caught by {MAX_SEEDS} seeds")


def test_campaign_finds_the_lowest_failing_seed_in_parallel():
    """The process-pool campaign (spawn) agrees with the sequential search."""
    mutation = "no-hotplug-lock"
    first = next(s for s in range(MAX_SEEDS) if run_seed(s, cpus=CPUS, mutations=(mutation,)).violations)
    res = run_campaign(MAX_SEEDS, jobs=2, cpus=CPUS, mutations=(mutation,), stop_at_first=True)
    print(f"\ncampaign --mutate {mutation}: {res.seeds_to_catch} seed(s), {res.runs} runs, {res.seconds:.1f} s")
    assert res.failing_seeds == [first], res.to_json()
    assert res.seeds_to_catch == first + 1
    assert res.failing[0].replay == f"tdxseam sim replay {first} --cpus {CPUS} --mutate {mutation}"
