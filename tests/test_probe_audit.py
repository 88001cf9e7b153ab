"""Where the probes' full-power audit runs: --audit, the first seed of --seeds, and stage 3's first
extra seed (before a candidate can become a search's best). Stand-in evaluations: no worker runs."""

from __future__ import annotations

import pytest

from benchmark.search import noise
from benchmark.spec import SPEC

POWER = {"positions_tested": 3000, "leak_density_caught_99": 0.0015}


def _fake(scores: dict, calls: list):
    """An evaluate_file stand-in answering from `scores` ({seed: score}) and logging overrides."""
    def evaluate(candidate, overrides=None, **kwargs):
        overrides = dict(overrides or {})
        calls.append(overrides)
        seed, audit = overrides.get("seed", SPEC.seed), bool(overrides.get("audit"))
        return {"valid": True, "seed": seed, "combined_score": scores[seed], "val_ppl": 1 / scores[seed],
                "audit": audit, "probe_power": POWER if audit else {"positions_tested": 127}}
    return evaluate


def test_the_audit_flag_reaches_the_spec():
    from benchmark.cli import build_parser, overrides_from

    assert overrides_from(build_parser().parse_args(["c.py", "--audit"])) == {"audit": True}
    assert "audit" not in overrides_from(build_parser().parse_args(["c.py"]))


def test_seeds_audit_their_first_seed(monkeypatch):
    import benchmark.analysis.multiseed as multiseed

    calls = []
    monkeypatch.setattr(multiseed, "evaluate_file", _fake({42: 0.005, 43: 0.0051, 44: 0.0049}, calls))
    result = multiseed.evaluate_seeds("c.py", 3)
    assert [c.get("audit", False) for c in calls] == [True, False, False]
    assert result["audit"] is True and result["probe_power"] == POWER
    assert [s["audit"] for s in result["seeds"]] == [True, False, False]


def test_stage3_audits_the_first_extra_seed_of_a_candidate_near_the_best(monkeypatch, tmp_path):
    monkeypatch.setenv("PLASA_CACHE_DIR", str(tmp_path))
    calls = []
    near = noise.evaluate_noise_aware("c.py", evaluate=_fake({42: 0.0055, 43: 0.0054, 44: 0.0053}, calls))
    assert [(c.get("seed", 42), c.get("audit", False)) for c in calls] == [(42, False), (43, True), (44, False)]
    assert near["audit"] is True and near["probe_power"] == POWER and near["n_seeds"] == 3
    calls.clear()
    far = noise.evaluate_noise_aware("d.py", evaluate=_fake({42: 0.0040}, calls))  # far below: no audit
    assert calls == [{}] and not far["audit"]
    # the best is kept whether or not a run was audited
    assert noise.best_score(SPEC) == noise.best_score(SPEC.replace(audit=True)) == pytest.approx(0.0054)


def test_stage3_without_extra_seeds_audits_its_one_seed(monkeypatch, tmp_path):
    monkeypatch.setenv("PLASA_CACHE_DIR", str(tmp_path))
    calls = []
    result = noise.evaluate_noise_aware("c.py", overrides={"stage3_extra_seeds": 0},
                                        evaluate=_fake({42: 0.0055}, calls))
    assert [c.get("audit", False) for c in calls] == [False, True]
    assert result["audit"] is True and result["n_seeds"] == 1


def test_a_leak_the_audit_catches_fails_the_stage3_result(monkeypatch, tmp_path):
    monkeypatch.setenv("PLASA_CACHE_DIR", str(tmp_path))
    calls, honest = [], _fake({42: 0.0060, 43: 0.0060, 44: 0.0060}, [])

    def leaky(candidate, overrides=None, **kwargs):
        calls.append(dict(overrides or {}))
        if (overrides or {}).get("audit"):
            return {"valid": False, "combined_score": 0.0, "stage": "probe", "error_type": "probe",
                    "error": "future leak", "audit": True, "probe_power": POWER}
        return honest(candidate, overrides, **kwargs)

    result = noise.evaluate_noise_aware("c.py", evaluate=leaky)
    assert not result["valid"] and result["error_type"] == "probe" and result["combined_score"] == 0.0
    assert noise.best_score(SPEC) is None, "a leak the audit caught became the best"
