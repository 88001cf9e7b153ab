"""Where the probes' full-power audit runs: --audit, the first seed of --seeds, and stage 3's first
extra seed (before a candidate can become a search's best). Stand-in evaluations: no worker runs."""

from __future__ import annotations

import pytest

from benchmark.judge.options import Options
from benchmark.search import noise
from benchmark.spec import SPEC

POWER = {"positions_tested": 3000, "leak_density_caught_99": 0.0015}


def _fake(scores: dict, calls: list):
    """An evaluate_file stand-in answering from `scores` ({seed: score}) and logging overrides."""
    def evaluate(candidate, options=None, **changes):  # evaluate_file's signature
        overrides = dict(Options.of(options, **changes).overrides)
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

    def leaky(candidate, options=None, **changes):
        overrides = Options.of(options, **changes).overrides
        calls.append(dict(overrides))
        if overrides.get("audit"):
            return {"valid": False, "combined_score": 0.0, "stage": "probe", "error_type": "probe",
                    "error": "future leak", "audit": True, "probe_power": POWER}
        return honest(candidate, options, **changes)

    result = noise.evaluate_noise_aware("c.py", evaluate=leaky)
    assert not result["valid"] and result["error_type"] == "probe" and result["combined_score"] == 0.0
    assert noise.best_score(SPEC) is None, "a leak the audit caught became the best"


def _fires(path, val_tokens: int) -> int:
    """Positions of the validation windows (`val_tokens` targets) where the candidate's leak fires
    (its own _leak_fires, imported here: this test's own file, never the judge's business)."""
    import importlib.util

    import numpy as np
    import torch

    from benchmark.judge.data import eval_windows, load_tokens

    spec = importlib.util.spec_from_file_location("sparse_leak_candidate", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    val_x = eval_windows(load_tokens(SPEC.dataset, SPEC.split, SPEC.tokenizer), SPEC.seq_len, val_tokens)[0]
    return int(module._leak_fires(torch.as_tensor(val_x.astype(np.int64))).sum())


@pytest.mark.slow
@pytest.mark.evaluation
@pytest.mark.parametrize("density,overrides", [(0.003, {}), (0.01, {"val_tokens": 8192, "audit_causal_rows": 600})],
                         ids=["0.3%-tiny", "1%-four-processes"])
def test_the_audit_catches_sparse_next_token_leaks(tmp_path, density, overrides):
    """The reference with a next-token leak at a hash-chosen fraction of positions (eval mode, in
    validation-sized batches only: no direct probe sees it), at the tiny budget. The normal 31
    hidden rows test 0.8% of the tiny run's 4064 positions and miss this leak (at 9 of them) 93% of
    the time; the audit's 3000 rows test 74% of them. With 8192 validation tokens (4 full batches)
    the audit's rows go to 4 scoring processes; there 600 audit rows (still 4 processes) miss a 1%
    leak with probability 0.99^600 = 0.24%, and the test takes a fifth of the time."""
    from tests.adversarial.cheats import source, sparse_leak
    from tests.conftest import TINY_OVERRIDES, evaluate_tiny

    path = tmp_path / "sparse_leak.py"
    path.write_text(source(sparse_leak(density)))
    val_tokens = overrides.get("val_tokens", TINY_OVERRIDES["val_tokens"])
    fires = _fires(path, val_tokens)
    assert fires >= 8, f"the leak fires at {fires} positions only: the test would be weak"
    # 3000 rows forward and scored take 2-4 min on a quiet 2-core CPU, over 30 min on a loaded one
    result = evaluate_tiny(path, overrides=dict(overrides, audit=True, time_limit_s=7200.0))
    assert not result["valid"] and result["error_type"] == "probe", (result.get("error_type"), result.get("error"))
    assert "future leak" in result["error"]
    rows = overrides.get("audit_causal_rows", SPEC.audit_causal_rows)
    assert result["audit"] is True and result["probe_power"]["positions_tested"] >= rows - 10, result.get("probe_power")
