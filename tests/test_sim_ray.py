"""`sim campaign --ray` on a real local Ray instance (2 CPUs): the same seeds as worker processes,
seed by seed, with and without a planted bug; a worker killed mid-campaign loses no seed.

One Ray instance serves the module (starting Ray takes seconds). It is started by this process,
so its raylet is our child and its workers our grandchildren: the kill test picks its victim
among those, never among another Ray on the machine. `bench/bench_ray_campaign.py` runs the same
comparison on 2,000 seeds.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile

import pytest

from _ray_workers import kill_a_busy_worker
from tdxseam.sim.campaign import run_campaign

ray = pytest.importorskip("ray")

RUNS = 120
ENV = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}


@pytest.fixture(scope="module")
def cluster():
    """A local Ray instance of 2 CPUs for this module; yields its address."""
    old = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "RAY_USAGE_STATS_ENABLED")}
    os.environ.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0")  # no token under $HOME
    tmp = tempfile.mkdtemp(prefix="ray")  # short: Ray's socket paths must fit in 107 bytes
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             _temp_dir=tmp, logging_level="ERROR")
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        shutil.rmtree(tmp, ignore_errors=True)
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@pytest.fixture(scope="module")
def by_processes():
    """The reference: the same seeds in two worker processes, clean and with no-abort."""
    return {m: run_campaign(RUNS, jobs=2, cpus=4, mutations=m, keep_records=True)
            for m in ((), ("no-abort",))}


def _same(a, b) -> None:
    assert a.runs == b.runs == RUNS
    assert sorted(b.records) == list(range(RUNS))  # every seed, once
    assert a.records == b.records  # seed by seed: interleaving, violations, kinds, failure
    assert (a.violations, a.failing_seeds, a.kinds, a.steps, a.seeds_digest) == \
           (b.violations, b.failing_seeds, b.kinds, b.steps, b.seeds_digest)
    assert [f.to_json() for f in a.failing] == [f.to_json() for f in b.failing]


@pytest.mark.parametrize("mutations", [(), ("no-abort",)], ids=["clean", "no-abort"])
def test_ray_campaign_equals_worker_processes_seed_by_seed(cluster, by_processes, mutations):
    seen = []
    res = run_campaign(RUNS, backend="ray", cpus=4, mutations=mutations, keep_records=True,
                       progress=seen.append)
    ref = by_processes[mutations]
    _same(ref, res)
    assert res.backend == "ray" and res.jobs == 2 and res.retried == 0
    assert (res.violations > 0) == bool(mutations)  # the planted bug is found, the clean run is clean
    if mutations:
        assert res.kinds.get("lockstep-abort")
    # progress streamed batch by batch, ending at every seed
    assert len(seen) > 2 and [s.done for s in seen] == sorted(s.done for s in seen)
    assert seen[-1].done == RUNS and seen[-1].violations == res.violations


def test_a_worker_killed_mid_campaign_loses_no_seed(cluster, by_processes):
    """SIGKILL a worker while it runs a batch: the batch is sent again, every seed counted once."""
    killed: list[int] = []

    def kill_one(st) -> None:
        if RUNS // 4 <= st.done <= 3 * RUNS // 4:  # batches still queued behind the victim's
            kill_a_busy_worker(killed)

    res = run_campaign(RUNS, backend="ray", cpus=4, mutations=("no-abort",), keep_records=True,
                       progress=kill_one)
    assert killed, "no worker was busy to be killed"
    assert res.retried >= 1
    _same(by_processes[("no-abort",)], res)


def test_the_kill_is_real_without_resubmission(cluster, monkeypatch):
    """The same kill with resubmission switched off loses the batch: the retry is what saves it."""
    import tdxseam.sim.campaign as campaign

    monkeypatch.setattr(campaign, "RAY_RESUBMITS", 0)
    killed: list[int] = []

    def kill_one(st) -> None:
        if st.done <= 3 * RUNS // 4:
            kill_a_busy_worker(killed)

    with pytest.raises(campaign.CampaignError, match="worker lost 1 times"):
        run_campaign(RUNS, backend="ray", cpus=4, progress=kill_one)
    assert killed


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "tdxseam.cli", *args], capture_output=True, text=True,
                          timeout=300, env=env or ENV)


def test_cli_on_an_existing_cluster_by_address(cluster, by_processes):
    out = _cli("sim", "campaign", "--ray", "--ray-address", cluster, "--runs", str(RUNS), "--cpus", "4",
               "--mutate", "no-abort", "--json")
    assert out.returncode == 1, out.stderr  # violations found
    r = json.loads(out.stdout)
    ref = by_processes[("no-abort",)]
    assert r["backend"] == "ray" and r["jobs"] == 2 and r["runs"] == RUNS
    assert r["failing_seeds"] == ref.failing_seeds and r["seeds_digest"] == ref.seeds_digest
    assert out.stderr.strip() == ""  # not a terminal: no progress line


def test_cli_starts_a_local_instance_and_prints_the_summary():
    tmp = tempfile.mkdtemp(prefix="ray")  # the instance's session files, not /tmp/ray
    try:
        out = _cli("sim", "campaign", "--ray", "--jobs", "2", "--runs", "30", "--cpus", "4",
                   env={**ENV, "RAY_TMPDIR": tmp})
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    assert out.returncode == 0, out.stderr
    ref = run_campaign(30, jobs=1, cpus=4)
    assert "campaign: seeds 0..29, 30 runs, Ray, 2 CPU(s)" in out.stdout
    assert "violations: 0 in 0 failing seed(s)" in out.stdout
    assert f"seeds digest {ref.seeds_digest}" in out.stdout


def test_ray_address_without_ray_is_a_usage_error():
    out = _cli("sim", "campaign", "--ray-address", "127.0.0.1:1", "--runs", "1")
    assert out.returncode == 2 and out.stderr.strip() == "tdxseam: error: --ray-address needs --ray"


def test_stop_at_first_on_ray_finds_the_same_lowest_seed(cluster):
    ref = run_campaign(60, jobs=1, cpus=4, mutations=("skip-lp-init",), stop_at_first=True)
    res = run_campaign(60, backend="ray", cpus=4, mutations=("skip-lp-init",), stop_at_first=True)
    assert ref.failing_seeds == res.failing_seeds and res.seeds_to_catch == ref.seeds_to_catch
    assert res.seeds_to_catch is not None and res.runs < 60


def test_an_address_nobody_listens_on_is_one_line_fast():
    import socket

    with socket.socket() as s:  # a port that was free a moment ago, and nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = _cli("sim", "campaign", "--ray", "--ray-address", f"127.0.0.1:{port}", "--runs", "3")
    assert out.returncode == 2 and out.stdout == ""
    assert out.stderr.startswith(f"tdxseam: error: no Ray cluster at 127.0.0.1:{port}: ")
    assert out.stderr.count("\n") == 1
