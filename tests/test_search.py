"""What a search framework gets from the evaluator: metrics where higher is better, descriptors,
the noise-aware third stage, and configs holding only keys the frameworks read."""

from __future__ import annotations

import ast
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.judge.options import Options
from benchmark.result import descriptors
from benchmark.search import integration, noise
from benchmark.spec import Spec
from tests.conftest import REPO

SPEC = Spec()
VALID = {"valid": True, "combined_score": 1 / 183.11, "val_ppl": 183.11, "val_loss": 5.21, "val_acc": 0.28,
         "train_loss": 5.3, "step_ms_median": 70.0, "layer_top_k": [128, 32, 32, 64],
         "spec": {"seq_len": 128}, "params": {"flops_per_token": 16_283_136}, "param_count": 14_307_968}
FAILED = {"valid": False, "combined_score": 0.0, "stage": "static", "error_type": "static_check",
          "error": "line 1: import of 'os' is not allowed"}


def test_metrics_are_higher_is_better_and_have_the_same_keys_on_failure(monkeypatch):
    monkeypatch.delenv("PLASA_FEATURES", raising=False)
    good, bad = integration.search_metrics(VALID, SPEC), integration.search_metrics(FAILED, SPEC)
    assert set(good) == set(bad) == {"combined_score", "relative_score", "val_acc"}
    assert good["relative_score"] == pytest.approx(1.0) and good["val_acc"] == 0.28
    assert bad == {"combined_score": 0.0, "relative_score": 0.0, "val_acc": 0.0}
    better = dict(VALID, val_ppl=170.0, combined_score=1 / 170.0, val_acc=0.29)
    assert all(integration.search_metrics(better, SPEC)[k] > good[k] for k in good)


def test_descriptors_join_the_metrics_only_when_asked(monkeypatch):
    assert descriptors(VALID) == {"attention_density": 0.5, "forward_flops_per_token": 16_283_136,
                                  "param_count": 14_307_968}
    assert descriptors(FAILED) == {"attention_density": None, "forward_flops_per_token": None,
                                   "param_count": None}
    monkeypatch.setenv("PLASA_FEATURES", "attention_density,nonsense")
    assert integration.search_metrics(VALID, SPEC)["attention_density"] == 0.5
    assert integration.search_metrics(FAILED, SPEC)["attention_density"] == 0.0
    assert "nonsense" not in integration.search_metrics(VALID, SPEC)
    monkeypatch.setenv("PLASA_FEATURES", "all")
    assert set(integration.DESCRIPTORS) <= set(integration.search_metrics(FAILED, SPEC))


def _fake_runs(monkeypatch, scores: dict) -> list:
    """evaluate_file answering from `scores` (candidate -> {seed: score}); returns the call log."""
    calls = []

    def fake(candidate, options=None, **changes):  # evaluate_file's signature
        seed = Options.of(options, **changes).overrides.get("seed", SPEC.seed)
        calls.append((candidate, seed))
        score = scores[candidate][seed]
        return dict(VALID, seed=seed, combined_score=score, val_ppl=1 / score)

    import benchmark.analysis.multiseed as multiseed
    import benchmark.judge.runner as runner

    monkeypatch.setattr(runner, "evaluate_file", fake)
    monkeypatch.setattr(multiseed, "evaluate_file", fake)
    monkeypatch.setattr(integration, "evaluate_file", fake)
    return calls


def test_stage3_adds_seeds_only_near_the_best_and_returns_their_mean(monkeypatch, tmp_path):
    monkeypatch.setenv("PLASA_CACHE_DIR", str(tmp_path))
    calls = _fake_runs(monkeypatch, {
        "lucky": {42: 0.00560, 43: 0.00540, 44: 0.00538},   # a lucky first seed
        "far": {42: 0.00500},                               # 10% worse: no extra seeds
        "close": {42: 0.00545, 43: 0.00549, 44: 0.00547},   # within noise of the best mean
    })
    first = noise.evaluate_noise_aware("lucky")            # nothing known yet: three seeds
    assert first["n_seeds"] == 3 and first["combined_score"] == pytest.approx(0.00546)
    assert noise.best_score(SPEC) == pytest.approx(0.00546)
    far = noise.evaluate_noise_aware("far")
    assert far["n_seeds"] == 1 and far["combined_score"] == 0.005
    close = noise.evaluate_noise_aware("close")
    assert close["n_seeds"] == 3 and close["combined_score"] == pytest.approx(0.00547)
    assert noise.best_score(SPEC) == pytest.approx(0.00547)
    assert [c for c in calls if c[0] == "far"] == [("far", 42)]
    other = SPEC.replace(steps=200)  # another budget keeps its own best
    assert noise.best_score(other) is None
    monkeypatch.setenv("PLASA_SEARCH_ID", "another-search")  # and so does another search
    assert noise.best_score(SPEC) is None


def test_stage3_through_openevolve_entry_point_keeps_the_metric_keys(monkeypatch, tmp_path):
    monkeypatch.setenv("PLASA_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("PLASA_OVERRIDES", raising=False)
    _fake_runs(monkeypatch, {"c": {42: 0.0055, 43: 0.0054, 44: 0.0053}})
    result = integration.evaluate_stage3("c")
    metrics = result.metrics if hasattr(result, "metrics") else result
    artifacts = result.artifacts if hasattr(result, "artifacts") else result["artifacts"]
    assert metrics["combined_score"] == pytest.approx(0.0054)
    assert set(metrics) == {"combined_score", "relative_score", "val_acc"}
    assert "n_seeds 3" in artifacts["seeds"]


# ------------------------------------------------------------------ configs

def _leaves(tree: dict, prefix: str = "") -> list:
    out = []
    for key, value in tree.items():
        if isinstance(value, dict) and key not in ("extra_cmd_args", "evaluator_args"):  # their keys are ours
            out += _leaves(value, f"{prefix}{key}.")
        else:
            out.append(f"{prefix}{key}")
    return out


def test_openevolve_config_holds_only_keys_openevolve_reads():
    """OpenEvolve ignores unknown keys silently, and parses some it never reads
    (evaluator.enable_artifacts in 0.4.0): every key must be a config field that its code uses.
    evaluator.evaluator_args needs OpenEvolve 0.4.1 (its keys: tests/test_evaluator_args.py)."""
    pytest.importorskip("openevolve")
    yaml = pytest.importorskip("yaml")
    import dataclasses

    import openevolve
    from openevolve.config import Config

    config = yaml.safe_load((REPO / "configs" / "openevolve.yaml").read_text())
    package = Path(openevolve.__file__).parent
    sources = "\n".join(p.read_text() for p in package.rglob("*.py") if p.name != "config.py")
    for path in _leaves(config):
        node = Config
        for part in path.split("."):
            fields = {f.name: f for f in dataclasses.fields(node)}
            assert part in fields, (f"{path}: not a field of OpenEvolve's {node.__name__} (the config targets "
                                    "OpenEvolve 0.4.1: pip install openevolve==0.4.1)")
            node = fields[part].type if dataclasses.is_dataclass(fields[part].type) else None
            if node is None:
                default = fields[part].default_factory if fields[part].default_factory is not dataclasses.MISSING else None
                node = type(default()) if default and dataclasses.is_dataclass(default()) else None
        leaf = path.split(".")[-1]
        assert re.search(rf"\.{leaf}\b", sources), f"{path}: OpenEvolve never reads it"


def _dataclass_fields(source: Path, *names: str) -> set:
    tree = ast.parse(source.read_text())
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name in names:
            out |= {s.target.id for s in node.body if isinstance(s, ast.AnnAssign) and isinstance(s.target, ast.Name)}
    return out


def test_shinka_config_is_current_and_holds_only_keys_shinka_run_accepts():
    assert subprocess.run([sys.executable, "-m", "benchmark", "shinka-config", "--check"], cwd=REPO).returncode == 0
    yaml = pytest.importorskip("yaml")
    config = yaml.safe_load((REPO / "shinka_task" / "shinka.yaml").read_text())
    assert config["evo"]["task_sys_msg"].strip() == (REPO / "initial_proposal.txt").read_text().strip()
    assert config["evo"]["use_text_feedback"] is True and config["max_evaluation_jobs"] == 1
    import importlib.util

    assert not (REPO / "shinka").exists(), "a shinka/ folder here would shadow the shinka package"
    found = importlib.util.find_spec("shinka")  # the task folder is shinka_task/: nothing shadows it
    if found is None:
        pytest.skip("shinka-evolve is not installed (make setup installs it)")
    root = Path(found.origin).parent
    assert root.parent != REPO, f"shinka resolves to {root}, a folder of this repository"
    fields = {"evo": _dataclass_fields(root / "core" / "config.py", "EvolutionConfig"),
              "db": _dataclass_fields(root / "database" / "dbase.py", "DatabaseConfig"),
              "job": _dataclass_fields(root / "launch" / "scheduler.py", "JobConfig", "LocalJobConfig")}
    for namespace in ("evo", "db", "job"):
        unknown = set(config.get(namespace) or {}) - fields[namespace]
        assert not unknown, f"shinka_run rejects {namespace}.{sorted(unknown)}"
    runner_keys = {"max_evaluation_jobs", "max_proposal_jobs", "max_db_workers", "verbose", "debug"}
    assert set(config) - {"evo", "db", "job"} <= runner_keys


@pytest.mark.evaluation
def test_shinka_evaluate_copied_away_from_the_checkout(tmp_path):
    """shinka_run runs a copy of evaluate.py in its results folder: found through PLASA_HOME, and a
    clear correct.json error (exit 0) when the project cannot be found."""
    import os

    copy = tmp_path / "run" / "evaluate.py"
    copy.parent.mkdir()
    shutil.copy(REPO / "shinka_task" / "evaluate.py", copy)
    lost = tmp_path / "lost"
    env = {k: v for k, v in os.environ.items() if k not in ("PLASA_HOME", "PYTHONPATH")}
    proc = subprocess.run([sys.executable, "-S", str(copy), "--program_path", str(REPO / "initial_program.py"),
                           "--results_dir", str(lost)], env=env, capture_output=True, text=True, timeout=60,
                          cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    correct = json.loads((lost / "correct.json").read_text())
    assert correct["correct"] is False and "PLASA_HOME" in correct["error"]
    found = tmp_path / "found"
    proc = subprocess.run([sys.executable, str(copy), "--program_path", str(tmp_path / "missing.py"),
                           "--results_dir", str(found)], env=dict(env, PLASA_HOME=str(REPO)),
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    correct = json.loads((found / "correct.json").read_text())
    assert correct["correct"] is False and "PLASA_HOME" not in (correct["error"] or "")
    assert json.loads((found / "metrics.json").read_text())["public"]["relative_score"] == 0.0


# ------------------------------------------------------------------ placement

def test_parallel_evaluations_each_hold_their_own_gpu(monkeypatch, tmp_path):
    """PLASA_DEVICE=cuda on a 2-GPU machine: two evaluations get cuda:0 and cuda:1 (a lock per
    device, across processes), a third waits until one is released."""
    import threading
    import time

    from benchmark.judge.placement import gpu_slot

    monkeypatch.setenv("PLASA_CACHE_DIR", str(tmp_path))
    two = lambda: 2  # noqa: E731
    got, third = [], []
    with gpu_slot(two) as a, gpu_slot(two) as b:
        got += [a, b]

        def wait():
            with gpu_slot(two, poll_s=0.05) as c:
                third.append((c, time.monotonic()))

        thread = threading.Thread(target=wait)
        thread.start()
        time.sleep(0.5)
        assert not third, "a third evaluation took a GPU that was held"
        released = time.monotonic()
    thread.join(timeout=10)
    assert sorted(got) == ["cuda:0", "cuda:1"]
    assert third and third[0][0] in ("cuda:0", "cuda:1") and third[0][1] >= released
    with pytest.raises(TimeoutError):
        with gpu_slot(lambda: 1) as held:
            with gpu_slot(lambda: 1, poll_s=0.05, deadline=time.monotonic() + 0.3):
                pass
    assert held == "cuda:0"


def test_evaluate_runs_as_a_task_on_a_ray_cluster(monkeypatch, tmp_path):
    """PLASA_RAY_ADDRESS: evaluate() ships the candidate's source to the cluster (here a Ray
    started for the test) and blocks until the result; the result names the driver's file."""
    ray = pytest.importorskip("ray")
    candidate = tmp_path / "child.py"
    candidate.write_text("import os\n\ndef build_model(config):\n    return None\n")
    monkeypatch.setenv("PLASA_RAY_ADDRESS", "local")
    monkeypatch.setenv("PLASA_RAY_CPUS", "1")
    try:
        result = integration.evaluate(str(candidate))
        assert ray.is_initialized(), "the evaluation did not go through Ray"
    finally:
        ray.shutdown()
    metrics = result.metrics if hasattr(result, "metrics") else result
    artifacts = result.artifacts if hasattr(result, "artifacts") else result["artifacts"]
    assert metrics["combined_score"] == 0.0
    assert "import of 'os'" in artifacts["failed_checks"], artifacts


def test_selection_noise_picks_and_the_readme_figures():
    """measure/selection_noise.py: a one-seed pick against the best mean, and docs/search.md
    quotes what it prints for the committed runs."""
    import importlib.util
    import re

    spec = importlib.util.spec_from_file_location("selection_noise", REPO / "measure" / "selection_noise.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    rows = {"a": {42: 100.0, 43: 104.0}, "b": {42: 101.0, 43: 101.0}}  # a is lucky on seed 42
    assert module.picks(rows) == [(42, "a", "b", pytest.approx(100 * (102 / 101 - 1))), (43, "b", "b", 0.0)]
    found = module.groups(REPO / "docs" / "findings")
    selections = [p for rows in found.values() for p in module.picks(rows)]
    differ = sum(pick != best for _, pick, best, _ in selections)
    regrets = [r for *_, r in selections]
    readme = " ".join((REPO / "docs" / "search.md").read_text().split())
    quoted = re.search(r"best 3-seed mean in (\d+) of (\d+) selections, and the pick's mean perplexity "
                       r"was then ([\d.]+)% worse on average, ([\d.]+)% at most", readme)
    assert quoted, "docs/search.md no longer quotes measure/selection_noise.py"
    assert (int(quoted.group(1)), int(quoted.group(2))) == (differ, len(selections))
    assert float(quoted.group(3)) == round(sum(regrets) / len(regrets), 2)
    assert float(quoted.group(4)) == round(max(regrets), 2)
