"""Campaign bookkeeping that needs no Ray: per-seed records, the seeds digest, the progress line,
and `--ray` on a machine without the ray package."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from tdxseam.sim import campaign
from tdxseam.sim.campaign import CampaignError, _Tally, record_hash, run_campaign, run_chunk
from tdxseam.cli.progress import Progress
from tdxseam.sim.progress import CampaignStatus, format_status


def test_records_and_digest_do_not_depend_on_batching_or_workers():
    one = run_campaign(40, jobs=1, cpus=4, mutations=("no-abort",), keep_records=True)
    two = run_campaign(40, jobs=2, cpus=4, mutations=("no-abort",), keep_records=True, chunk=3)
    assert one.records == two.records and one.seeds_digest == two.seeds_digest
    assert sorted(one.records) == list(range(40))
    assert one.failing_seeds == [s for s, r in one.records.items() if r["violations"]]
    assert one.to_json()["seeds_digest"] == one.seeds_digest and one.to_json()["retried_batches"] == 0


def test_digest_sees_a_missing_or_different_seed():
    recs = run_chunk([0, 1, 2], 4, ("no-abort",), "random")
    full = _Tally(3, False, None)
    full.absorb(recs)
    short = _Tally(3, False, None)
    short.absorb(recs[:2])
    other = _Tally(3, False, None)
    other.absorb(recs[:2] + [dict(recs[2], schedule="0" * 16)])
    assert len({full.digest, short.digest, other.digest}) == 3
    assert full.digest == sum(record_hash(r) for r in recs) % (1 << 64)


def test_a_seed_reported_twice_is_refused():
    t = _Tally(2, False, None)
    recs = run_chunk([5], 2, (), "random")
    t.absorb(recs)
    with pytest.raises(CampaignError, match="seed 5 reported twice"):
        t.absorb(recs)


def test_progress_is_called_per_batch_with_running_totals():
    seen = []
    res = run_campaign(30, jobs=1, cpus=4, mutations=("no-abort",), chunk=10, progress=seen.append)
    assert [s.done for s in seen] == [7, 14, 21, 28, 30]  # 30 // (1 * 4) = 7 seeds a batch
    assert seen[-1].violations == res.violations and seen[-1].failing == len(res.failing)
    assert all(s.total == 30 for s in seen)


def test_progress_line_on_a_terminal_and_silent_elsewhere():
    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    st = CampaignStatus(done=500, total=2000, violations=7, failing=3, elapsed=2.0, retried=1)
    assert format_status(st) == ("campaign: 500/2000 seeds (25%), 7 violation(s) in 3 seed(s), "
                                 "250.0 runs/s, ETA 6 s, 1 batch(es) retried")
    tty = Tty()
    line = Progress("campaign", "runs", stream=tty, every=0)
    line.show(lambda now: format_status(st))
    line.close()
    assert tty.getvalue() == "\r\x1b[K" + format_status(st) + "\r\x1b[K"
    pipe = io.StringIO()
    quiet = Progress("campaign", "runs", stream=pipe)
    quiet.show(lambda now: format_status(st))
    quiet.close()
    assert not quiet.enabled and pipe.getvalue() == ""


def test_eta_and_rate_before_anything_ran():
    st = CampaignStatus(done=0, total=10, violations=0, failing=0, elapsed=0.0)
    assert st.eta is None and "ETA ?" in format_status(st)
    assert "1 h 23 min" in format_status(CampaignStatus(1, 4982, 0, 0, 1.0))


BLOCK_RAY = ("import sys; sys.modules['ray'] = None; from tdxseam.cli import main; "
             "sys.argv = ['tdxseam'] + sys.argv[1:]; main()")


def test_ray_without_the_package_names_the_extra():
    out = subprocess.run([sys.executable, "-c", BLOCK_RAY, "sim", "campaign", "--ray", "--runs", "3"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 2
    assert out.stderr == "tdxseam: error: --ray needs the ray package: pip install 'tdxseam[ray]'\n"
    assert out.stdout == ""


def test_the_library_refuses_too(monkeypatch):
    monkeypatch.setattr(campaign, "ray_available", lambda: False)
    with pytest.raises(CampaignError, match=r"pip install 'tdxseam\[ray\]'"):
        run_campaign(3, backend="ray")
