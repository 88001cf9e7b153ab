"""A search config passes the evaluator its options through OpenEvolve's evaluator.evaluator_args
(0.4.1+): OpenEvolve's own Evaluator, loaded with the shipped config and evaluator.py, calls
evaluate() with them; each option falls back to its PLASA_* variable; a bad one is a usage_error
result, never a raise. The evaluations themselves are stand-ins (no worker starts here)."""

from __future__ import annotations

import asyncio
import json

import pytest
import yaml

from benchmark.judge.options import Options
from benchmark.search import integration, noise
from benchmark.spec import Spec
from tests.conftest import REPO

VALID = {"valid": True, "combined_score": 1 / 183.11, "val_ppl": 183.11, "val_acc": 0.28,
         "layer_top_k": [128, 32, 32, 64], "spec": {"seq_len": 128}, "params": {"flops_per_token": 1},
         "param_count": 1}


@pytest.fixture
def runs(monkeypatch, tmp_path):
    """evaluate_file answering VALID; returns the calls' options (mode, overrides, device, progress). A private cache, no PLASA_*."""
    monkeypatch.setenv("PLASA_CACHE_DIR", str(tmp_path))
    for name in ("PLASA_OVERRIDES", "PLASA_DEVICE", "PLASA_SEARCH_ID", "PLASA_FEATURES", "PLASA_RAY_ADDRESS"):
        monkeypatch.delenv(name, raising=False)
    calls = []

    def fake(candidate, options=None, **changes):  # evaluate_file's signature
        options = Options.of(options, **changes)
        calls.append(dict(mode=options.mode, overrides=dict(options.overrides), device=options.device,
                          progress=options.progress))
        return dict(VALID, seed=options.overrides.get("seed", Spec().seed), mode=options.mode)

    monkeypatch.setattr(integration, "evaluate_file", fake)
    return calls


def metrics_of(result) -> dict:
    return result.metrics if hasattr(result, "metrics") else result


def openevolve_evaluator(evaluator_args: dict):
    """OpenEvolve's Evaluator as openevolve-run builds it from a config with these evaluator_args."""
    config_mod = pytest.importorskip("openevolve.config")
    from openevolve.evaluator import Evaluator

    config = yaml.safe_load((REPO / "configs" / "openevolve.yaml").read_text())
    config["evaluator"]["evaluator_args"] = evaluator_args
    parsed = config_mod.Config.from_dict(config)
    assert getattr(parsed.evaluator, "evaluator_args", None) == evaluator_args, (
        "this OpenEvolve drops evaluator.evaluator_args (0.4.0 does): pip install openevolve==0.4.1")
    return Evaluator(parsed.evaluator, str(REPO / "evaluator.py"))


def test_openevolve_forwards_the_shipped_config_s_options_to_evaluate(runs):
    shipped = yaml.safe_load((REPO / "configs" / "openevolve.yaml").read_text())["evaluator"]
    assert shipped["cascade_evaluation"] is False and shipped["evaluator_args"] == {"cascade": True}
    args = dict(shipped["evaluator_args"], overrides={"steps": 7}, search_id="s1", features=["attention_density"])
    evaluator = openevolve_evaluator(args)
    code = (REPO / "initial_program.py").read_text()
    metrics = asyncio.run(evaluator.evaluate_program(code, "p1"))
    # the cascade inside evaluate(): stage 1, then the full run (nothing known yet: 1 + 2 more seeds)
    assert [c["mode"] for c in runs] == ["stage1", "full", "full", "full"]
    assert all(c["overrides"]["steps"] == 7 for c in runs) and {c["device"] for c in runs} == {"cpu"}
    assert metrics["attention_density"] == 0.5 and metrics["combined_score"] == pytest.approx(1 / 183.11)
    assert noise.best_score(Spec().replace(steps=7), "s1") == pytest.approx(1 / 183.11)
    assert noise.best_score(Spec().replace(steps=7), "") is None   # kept for search s1 only


def test_openevolve_refuses_a_misspelt_option_at_start_up(runs):
    with pytest.raises(ValueError, match="unexpected keyword argument 'devise'"):
        openevolve_evaluator({"devise": "cuda"})


def test_options_over_the_environment(monkeypatch, runs):
    monkeypatch.setenv("PLASA_OVERRIDES", json.dumps({"steps": 5, "val_tokens": 4096}))
    monkeypatch.setenv("PLASA_DEVICE", "cuda")
    integration.evaluate("c.py")                                          # the environment alone
    integration.evaluate("c.py", device="cpu", overrides={"steps": 9})    # the config's keys win
    assert runs[0]["overrides"] == {"steps": 5, "val_tokens": 4096} and runs[0]["device"] == "cuda"
    assert runs[1]["overrides"] == {"steps": 9, "val_tokens": 4096} and runs[1]["device"] == "cpu"
    assert [c["mode"] for c in runs] == ["full", "full"]


@pytest.mark.parametrize("option, says", [
    ({"device": "gpu"}, "device 'gpu'"),
    ({"overrides": ["steps", 3]}, "overrides must be a mapping"),
    ({"features": ["nonsense"]}, "features ['nonsense']"),
    ({"cascade": "yes"}, "cascade must be true or false"),
], ids=lambda v: next(iter(v)) if isinstance(v, dict) else None)
def test_a_bad_option_is_a_usage_error_result_not_a_raise(runs, option, says):
    result = integration.evaluate("c.py", **option)
    assert metrics_of(result)["combined_score"] == 0.0 and not runs
    error = (result.artifacts if hasattr(result, "artifacts") else result["artifacts"])
    assert says in json.dumps(error), error


def test_a_stage_takes_the_same_options(runs):
    metrics = metrics_of(integration.evaluate_stage1("c.py", overrides={"steps": 4}, features="attention_density"))
    assert runs == [dict(mode="stage1", overrides={"steps": 4}, device="cpu", progress=False)]
    assert "attention_density" in metrics


def test_openevolve_s_own_cascade_still_runs_the_stages(runs):
    """The 0.4.0 way (cascade_evaluation: true, options from the environment) works on 0.4.0 and
    0.4.1 alike."""
    config_mod = pytest.importorskip("openevolve.config")
    from openevolve.evaluator import Evaluator

    config = yaml.safe_load((REPO / "configs" / "openevolve.yaml").read_text())
    del config["evaluator"]["evaluator_args"]
    config["evaluator"].update(cascade_evaluation=True, cascade_thresholds=[1e-6, 1e-6])
    evaluator = Evaluator(config_mod.Config.from_dict(config).evaluator, str(REPO / "evaluator.py"))
    metrics = asyncio.run(evaluator.evaluate_program((REPO / "initial_program.py").read_text(), "p1"))
    assert [c["mode"] for c in runs] == ["stage1", "full", "full", "full", "full"]  # stage 3: 1 + 2 seeds
    assert metrics["combined_score"] == pytest.approx(1 / 183.11)
