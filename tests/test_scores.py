"""Scores people compare: seed statistics, the results cache, multi-seed runs, the leaderboard."""

from __future__ import annotations

import hashlib
import json
import math

import pytest

from benchmark.analysis import compare, stats
from tests.conftest import REPO, TINY, TINY_PROBES, run_cli

REFERENCE = str(REPO / "initial_program.py")


def test_stats_match_scipy_reference_values():
    a, b = [1.0, 1.2, 0.9, 1.1, 1.05], [1.3, 1.25, 1.4, 1.2]
    # values computed with scipy 1.17: ttest_ind(equal_var=False), ttest_rel, t.ppf, t.interval
    assert stats.welch_p(a, b) == pytest.approx(0.00860147674898954, rel=1e-9)
    assert stats.paired_p(a[:4], b) == pytest.approx(0.1040541785138374, rel=1e-9)
    assert stats.paired_p(a, b) is None  # unequal lengths do not pair
    assert stats.t_quantile(0.975, 4) == pytest.approx(2.7764451051977934, rel=1e-9)
    assert stats.ci95(a) == pytest.approx((0.9111777447401104, 1.1888222552598897), rel=1e-9)
    assert stats.std([2.0]) == 0.0 and stats.ci95([2.0]) is None and stats.welch_p([1, 2], [3]) is None


@pytest.mark.evaluation
def test_identical_candidate_is_answered_from_the_results_cache(tmp_path):
    out = tmp_path / "cand.py"
    out.write_text((REPO / "initial_program.py").read_text() + f"\n# a new child of {tmp_path.name}\n")
    code, first, _ = run_cli(str(out), *TINY)
    code2, second, _ = run_cli(str(out), *TINY)
    assert code == code2 == 0
    assert "cached" not in first and second["cached"] is True
    assert second["combined_score"] == first["combined_score"]
    assert second["timings"]["wall_s"] == first["timings"]["wall_s"]  # not re-run
    code3, third, _ = run_cli(str(out), *TINY, "--no-cache", "--precision", first["precision"])  # as test_cli
    assert code3 == 0 and "cached" not in third and third["val_loss"] == first["val_loss"]
    # ShinkaEvolve writes programs without their last newline: the same program, from the cache,
    # reported with its own sha256
    twin = tmp_path / "twin.py"
    twin.write_bytes(out.read_bytes().rstrip())
    code4, fourth, _ = run_cli(str(twin), *TINY)
    assert code4 == 0 and fourth["cached"] is True and fourth["combined_score"] == first["combined_score"]
    assert fourth["candidate"]["sha256"] == hashlib.sha256(twin.read_bytes()).hexdigest()
    assert fourth["candidate"]["sha256"] != first["candidate"]["sha256"]


@pytest.mark.evaluation
def test_two_seeds_report_mean_std_ci(tmp_path, monkeypatch):
    # the first seed is audited; at 127 rows (the normal count) the audit costs what a normal run
    # does here: its power is tested in test_probe_audit.py and test_probe_power.py
    monkeypatch.setenv("PLASA_OVERRIDES", json.dumps(dict(TINY_PROBES, audit_causal_rows=127)))
    code, r, _ = run_cli(REFERENCE, *TINY, "--seeds", "2", "--output", str(tmp_path / "two.json"))
    assert r["seeds"][0]["audit"] is True
    assert code == 0 and r["n_seeds"] == 2
    scores = [s["combined_score"] for s in r["seeds"]]
    assert [s["seed"] for s in r["seeds"]] == [42, 43] and scores[0] != scores[1]
    assert r["combined_score"] == pytest.approx(sum(scores) / 2)
    assert r["combined_score_std"] == pytest.approx(stats.std(scores))
    low, high = r["combined_score_ci95"]
    assert low < r["combined_score"] < high


def _result(name, scores, tmp_path, **extra):
    seeds = [{"seed": i, "valid": True, "combined_score": s, "val_ppl": 1 / s,
              "loss_curve": [[100, 6.0 + i * 0.01], [200, 5.5]]} for i, s in enumerate(scores)]
    data = {"combined_score": sum(scores) / len(scores), "valid": True, "official": True,
            "precision": "bf16", "seeds": seeds, **extra}
    path = tmp_path / f"{name}.json"
    path.write_text(json.dumps(data))
    return str(path)


def test_leaderboard_sorts_flags_and_tests(tmp_path):
    paths = [_result("base", [0.0050, 0.0051, 0.0049], tmp_path),
             _result("better", [0.0060, 0.0061, 0.0059], tmp_path),
             _result("quick", [0.0055], tmp_path, official=False, precision="fp32")]
    results = [compare.load(p) for p in paths]
    table = compare.leaderboard(results, baseline=0)
    lines = table.splitlines()
    assert lines[2].split("|")[2].strip() == "better" and lines[4].split("|")[2].strip() == "base"
    p_better = float(lines[2].split("|")[-2])
    assert p_better == pytest.approx(stats.welch_p([0.0060, 0.0061, 0.0059], [0.0050, 0.0051, 0.0049]), rel=1e-2)
    assert "unofficial" in lines[3] and "mixed" in lines[3] and lines[3].split("|")[-2].strip() == "-"
    assert "baseline" in lines[4]


def test_compare_cli_draws_the_plot(tmp_path):
    pytest.importorskip("matplotlib")
    import subprocess
    import sys

    paths = [_result("a", [0.005, 0.0052, 0.0051], tmp_path), _result("b", [0.0049], tmp_path)]
    png = tmp_path / "board.png"
    proc = subprocess.run([sys.executable, "-m", "benchmark", "compare", *paths, "--baseline", "a",
                           "--plot", str(png)], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "| 1 | a |" in proc.stdout
    assert png.stat().st_size > 10_000 and png.read_bytes()[:4] == b"\x89PNG"
    assert not math.isnan(float(proc.stdout.splitlines()[2].split("|")[3]))
