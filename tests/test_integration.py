"""The benchmark inside the search frameworks, called exactly as they call it: the real OpenEvolve
0.4.1 Evaluator and ShinkaEvolve's command line (whole searches: tests/test_search_example.py)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO, TINY_PROBES, tiny_probe_env

pytestmark = pytest.mark.evaluation

openevolve = pytest.importorskip("openevolve")
yaml = pytest.importorskip("yaml")

TINY_OVERRIDES = json.dumps(dict(TINY_PROBES, steps=3, val_tokens=4096, stage3_extra_seeds=1))
BROKEN = "def build_model(config):\n    return None\n"


@pytest.fixture
def tiny_env(monkeypatch):
    monkeypatch.setenv("PLASA_OVERRIDES", TINY_OVERRIDES)


def test_committed_openevolve_config_is_current_and_loads():
    from openevolve.config import Config

    from benchmark.spec import SPEC

    assert subprocess.run([sys.executable, "-m", "benchmark", "openevolve-config", "--check"],
                          cwd=REPO).returncode == 0
    config = Config.from_yaml(str(REPO / "configs" / "openevolve.yaml"))
    assert config.evaluator.timeout > SPEC.time_limit_s
    assert config.evaluator.max_retries == 0
    # the cascade runs inside evaluate(): OpenEvolve passes evaluator_args to evaluate() only, so
    # its own cascade would call the stages without the search's options
    assert config.evaluator.evaluator_args == {"cascade": True} and not config.evaluator.cascade_evaluation
    assert config.prompt.suggest_simplification_after_chars is None
    assert config.max_code_length > len((REPO / "initial_program.py").read_text())
    assert config.prompt.system_message.strip() == (REPO / "initial_proposal.txt").read_text().strip()


def test_openevolve_evaluator_scores_reference_and_rejects_broken(tiny_env, tmp_path):
    from openevolve.config import EvaluatorConfig
    from openevolve.evaluator import Evaluator

    config = EvaluatorConfig(timeout=600, max_retries=0, cascade_evaluation=True,
                             cascade_thresholds=[1e-6], parallel_evaluations=1)
    cwd = os.getcwd()
    os.chdir(tmp_path)  # OpenEvolve runs from wherever the user launched it
    try:
        evaluator = Evaluator(config, str(REPO / "evaluator.py"))
        good = asyncio.run(evaluator.evaluate_program((REPO / "initial_program.py").read_text(), "good"))
        bad = asyncio.run(evaluator.evaluate_program(BROKEN, "bad"))
    finally:
        os.chdir(cwd)
    assert 1e-6 < good["combined_score"] < 1 and good["relative_score"] > 0 and good["val_acc"] > 0
    assert bad["combined_score"] == bad["relative_score"] == bad["val_acc"] == 0.0
    artifacts = evaluator.get_pending_artifacts("bad")
    assert artifacts and "build" in str(artifacts.get("failed_checks", artifacts))


def test_evaluate_returns_numeric_metrics_and_small_artifacts(tiny_env, tmp_path):
    sys.path.insert(0, str(REPO))
    import evaluator

    broken = tmp_path / "broken.py"
    broken.write_text("import os\n" + BROKEN)
    result = evaluator.evaluate(str(broken))
    metrics = result.metrics if hasattr(result, "metrics") else result
    artifacts = result.artifacts if hasattr(result, "artifacts") else result["artifacts"]
    assert metrics["combined_score"] == 0.0
    assert all(isinstance(v, float) for v in metrics.values())
    assert "line 1" in artifacts["failed_checks"]
    assert all(len(str(v).encode()) < 20_000 for v in artifacts.values())
    stage1 = evaluator.evaluate_stage1(str(REPO / "initial_program.py"))
    stage1 = stage1.metrics if hasattr(stage1, "metrics") else stage1
    assert 0 < stage1["combined_score"] <= 1e-6


def test_shinka_task_folder(tmp_path):
    shim = REPO / "shinka_task" / "evaluate.py"
    assert (REPO / "shinka_task" / "initial.py").resolve() == (REPO / "initial_program.py").resolve()
    out = tmp_path / "results"
    proc = subprocess.run([sys.executable, str(shim), "--program_path", str(REPO / "shinka_task" / "initial.py"),
                           "--results_dir", str(out), "--steps", "3", "--val-tokens", "4096", "--quiet"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300, env=tiny_probe_env())
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / "correct.json").read_text()) == {"correct": True, "error": None}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["combined_score"] > 0 and metrics["public"]["val_ppl"] > 1
