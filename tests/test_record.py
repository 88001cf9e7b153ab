"""The record rule (python -m benchmark record): paired seeds, one-sided p < alpha, a minimum gain,
and how many seeds would settle an open question."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import pytest

from benchmark.analysis import record, stats
from tests.conftest import REPO

BASE = {42: 5.2100, 43: 5.2240, 44: 5.2010, 45: 5.2190, 46: 5.2120}
JITTER = {42: 0.0010, 43: -0.0008, 44: 0.0004, 45: -0.0011, 46: 0.0006}


def shifted(shift: float, jitter: float = 1.0) -> dict:
    return {s: BASE[s] + shift + jitter * JITTER[s] for s in BASE}


def test_the_one_sided_quantile_matches_the_t_table():
    assert stats.t_quantile(0.99, 4) == pytest.approx(3.747, abs=1e-3)  # Student's t table
    assert stats.t_quantile(0.99, 9) == pytest.approx(2.821, abs=1e-3)


def test_a_clear_paired_gain_over_five_seeds_is_a_record():
    verdict = record.judge(shifted(-0.02), BASE)  # about 2% perplexity, tiny paired spread
    assert verdict.record and verdict.pairs == 5 and verdict.p < 0.01
    assert verdict.gain == pytest.approx(math.exp(0.02 - 2e-5) - 1, rel=1e-6)  # jitter mean 2e-5
    low, high = verdict.gain_ci95
    assert low < verdict.gain < high


def test_pairing_removes_the_seed_to_seed_spread():
    """The same 2% gain with the baseline's own spread (7e-3, larger than the gain's noise) is
    decided by pairing; unpaired (Welch) it is not."""
    cand = shifted(-0.02)
    assert record.judge(cand, BASE).record
    assert stats.welch_p(list(cand.values()), list(BASE.values())) > record.one_sided_p(
        [cand[s] - BASE[s] for s in BASE])


def test_a_gain_below_the_minimum_is_no_record_even_when_significant():
    verdict = record.judge(shifted(-0.002, jitter=0.0), BASE, min_gain=0.005)
    assert not verdict.record and "below the rule's minimum" in verdict.reason


def test_an_unsettled_gain_says_how_many_seeds_would_settle_it():
    two = {s: BASE[s] for s in (42, 43)}
    cand = {42: two[42] - 0.012, 43: two[43] - 0.006}
    verdict = record.judge(cand, two)
    assert not verdict.record and verdict.p >= 0.01
    assert verdict.seeds_needed is not None and verdict.seeds_needed > 2
    assert f"{verdict.seeds_needed} paired seeds" in verdict.reason
    # at that many seeds with the same mean and spread, the test would pass
    n, diffs = verdict.seeds_needed, [-0.012, -0.006]
    assert stats.t_quantile(0.99, n - 1) * stats.std(diffs) / math.sqrt(n) < -stats.mean(diffs)


def test_a_worse_candidate_and_missing_pairs_are_no_record():
    assert not record.judge(shifted(+0.01), BASE).record
    assert record.judge(shifted(+0.01), BASE).seeds_needed is None
    none = record.judge({7: 5.0}, BASE)
    assert not none.record and none.pairs == 0 and "no seed" in none.reason
    one = record.judge({42: 5.0}, BASE)
    assert not one.record and one.p is None


def test_the_command_reads_seed_results_and_single_runs(tmp_path):
    cand = shifted(-0.02)
    multi = {"valid": True, "val_loss": 0.0, "seeds": [
        {"seed": s, "valid": True, "val_loss": v} for s, v in cand.items()]}
    (tmp_path / "cand.json").write_text(json.dumps(multi))
    folder = tmp_path / "base"
    folder.mkdir()
    for s, v in BASE.items():
        (folder / f"seed{s}.json").write_text(json.dumps({"seed": s, "valid": True, "val_loss": v}))
    run = subprocess.run([sys.executable, "-m", "benchmark", "record", "--candidate", str(tmp_path / "cand.json"),
                          "--baseline", str(folder)], capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["record"] is True
    run = subprocess.run([sys.executable, "-m", "benchmark", "record", "--candidate", str(folder),
                          "--baseline", str(tmp_path / "cand.json")], capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 1 and json.loads(run.stdout)["record"] is False
    (tmp_path / "bad.json").write_text("[1, 2]")
    run = subprocess.run([sys.executable, "-m", "benchmark", "record", "--candidate", str(tmp_path / "bad.json"),
                          "--baseline", str(folder)], capture_output=True, text=True, cwd=REPO)
    assert run.returncode == 2 and "not a result" in json.loads(run.stdout)["error"]
