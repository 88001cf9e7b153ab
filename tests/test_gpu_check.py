"""measure/gpu_check.sh, run as a user runs it: the dry run on the CPU (the same four runs at a
tiny budget and scaled-down probes, all at once), and its argument checks."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from tests.conftest import DATA_DIR, REPO, once_per_run

SCRIPT = REPO / "measure" / "gpu_check.sh"
RUNS = {"reference": "pass", "leak_topk_over_masked_row": "reject:probe", "hang_in_eval": "reject:hang",
        "compile_whole_model": "pass"}


def gpu_check(*args, cwd, timeout=1200):
    env = dict(os.environ, PYTHON=sys.executable)
    env.pop("GPU_CHECK_BUDGET_S", None)
    return subprocess.run(["bash", str(SCRIPT), *map(str, args)], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=timeout)


def test_missing_data_dir_is_a_clear_bad_argument(tmp_path):
    missing = tmp_path / "no-such-data"
    done = gpu_check(missing, tmp_path / "summary.json", "--dry-run", cwd=tmp_path, timeout=60)
    assert done.returncode == 2, done.stderr
    assert "DATA_DIR" in done.stderr and str(missing) in done.stderr and "not a folder" in done.stderr
    assert not (tmp_path / "summary.json").exists()
    # and a missing OUT_JSON argument or an unknown flag
    assert gpu_check(DATA_DIR, cwd=tmp_path, timeout=60).returncode == 2
    assert gpu_check(DATA_DIR, tmp_path / "s.json", "--fast", cwd=tmp_path, timeout=60).returncode == 2


def test_without_cuda_the_gpu_check_starts_no_run(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU: the check would run")
    out = tmp_path / "summary.json"
    done = gpu_check(DATA_DIR, out, cwd=tmp_path, timeout=120)
    assert done.returncode == 1, done.stderr
    summary = json.loads(out.read_text())
    assert summary["ok"] is False and summary["device"] == "cuda" and summary["dry_run"] is False
    assert summary["machine"]["cuda_available"] is False
    assert [r["name"] for r in summary["runs"]] == list(RUNS)
    for run in summary["runs"]:
        assert run["ok"] is False and "cuda" in run["skipped"] and run["exit_code"] is None
        assert "--device cuda" in run["command"] and "--precision" not in run["command"]
    reference = summary["runs"][0]["command"]
    assert "--steps" not in reference and "--val-tokens" not in reference  # the official budget


def test_a_spent_budget_skips_the_runs(tmp_path):
    out = tmp_path / "summary.json"
    env_budget = dict(os.environ, GPU_CHECK_BUDGET_S="20", PYTHON=sys.executable)
    done = subprocess.run(["bash", str(SCRIPT), str(DATA_DIR), str(out), "--dry-run"], cwd=tmp_path,
                          env=env_budget, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1, done.stderr
    summary = json.loads(out.read_text())
    assert all(r["skipped"] and "budget" in r["skipped"] and not r["ok"] for r in summary["runs"])


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory):
    """One dry run from a folder outside the repository, shared by the checks below: once per test
    run (four evaluations), whichever `pytest -n` worker asks first."""
    def compute():
        tmp = tmp_path_factory.mktemp("gpu_check")
        out = tmp / "summary.json"
        done = gpu_check(DATA_DIR, out, "--dry-run", cwd=tmp)
        return {"returncode": done.returncode, "stderr": done.stderr, "out": str(out),
                "summary": json.loads(out.read_text()) if out.is_file() else None}
    shared = once_per_run(tmp_path_factory, "gpu_check_dry_run", compute)
    done = SimpleNamespace(returncode=shared["returncode"], stderr=shared["stderr"])
    return done, shared["summary"], Path(shared["out"])


@pytest.mark.evaluation
@pytest.mark.slow
def test_dry_run_writes_one_summary_of_the_four_runs(dry_run):
    done, summary, out = dry_run
    assert summary is not None, f"no summary (exit {done.returncode}): {done.stderr[-3000:]}"
    assert summary["dry_run"] is True and summary["device"] == "cpu"
    assert [r["name"] for r in summary["runs"]] == list(RUNS)
    assert {r["name"]: r["expect"] for r in summary["runs"]} == RUNS
    machine = summary["machine"]
    assert machine["python"] and machine["torch"] and machine["cuda_available"] in (True, False)
    assert "nvidia_smi" in machine and "commit" in summary["git"] and summary["date"]
    for run in summary["runs"]:
        assert "evaluator.py" in run["command"] and "--no-cache" in run["command"]
        assert "--output" in run["command"] and "--device cpu" in run["command"]
        assert isinstance(run["wall_s"], float) and run["exit_code"] is not None
        assert os.path.isfile(run["stderr_log"]), run["stderr_log"]
        for key in ("valid", "stage", "error_type", "error", "combined_score", "val_ppl", "val_loss",
                    "precision", "device", "environment", "timings", "sandbox", "peak_rss_mb"):
            assert key in run
        assert run["error"] is None or len(run["error"]) <= 300
    assert out.with_suffix(".logs").is_dir()


def run_named(summary, name):
    assert summary is not None
    return next(r for r in summary["runs"] if r["name"] == name)


@pytest.mark.evaluation
@pytest.mark.slow
def test_dry_run_reference_passes(dry_run):
    run = run_named(dry_run[1], "reference")
    assert run["exit_code"] == 0 and run["valid"] is True and run["ok"] is True, run
    assert run["val_ppl"] > 0 and run["device"] == "cpu"


@pytest.mark.evaluation
@pytest.mark.slow
def test_dry_run_leak_is_rejected_at_the_probe(dry_run):
    run = run_named(dry_run[1], "leak_topk_over_masked_row")
    assert run["exit_code"] == 1 and run["valid"] is False and run["stage"] == "probe", run
    assert "future leak" in run["error"] and run["ok"] is True


@pytest.mark.evaluation
@pytest.mark.slow
def test_dry_run_hang_is_rejected_as_a_hang(dry_run):
    run = run_named(dry_run[1], "hang_in_eval")
    assert run["exit_code"] == 1 and run["valid"] is False, run
    assert run["error_type"] in ("hang", "timeout") and run["ok"] is True


@pytest.mark.evaluation
@pytest.mark.slow
def test_dry_run_compiled_candidate_passes(dry_run):
    run = run_named(dry_run[1], "compile_whole_model")
    assert run["exit_code"] == 0 and run["valid"] is True and run["ok"] is True, run["why"]


@pytest.mark.evaluation
@pytest.mark.slow
def test_dry_run_exit_code_says_every_expectation_was_met(dry_run):
    done, summary, _ = dry_run
    assert summary is not None
    assert summary["ok"] is all(r["ok"] for r in summary["runs"])
    assert done.returncode == (0 if summary["ok"] else 1), done.stderr[-3000:]
    assert done.returncode == 0, [(r["name"], r["why"]) for r in summary["runs"] if not r["ok"]]


def test_expectations_are_judged_strictly():
    import importlib.util

    spec = importlib.util.spec_from_file_location("gpu_check_summary", REPO / "measure" / "gpu_check_summary.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    judge = module.judge
    assert judge("pass", 0, {"valid": True})[0]
    assert not judge("pass", 1, {"valid": False, "stage": "probe"})[0]
    assert not judge("pass", 124, None)[0]                      # killed by timeout(1): no answer
    assert judge("reject:probe", 1, {"valid": False, "stage": "probe"})[0]
    assert not judge("reject:probe", 1, {"valid": False, "stage": "build"})[0]
    assert not judge("reject:probe", 0, {"valid": True, "stage": "done"})[0]
    assert judge("reject:hang", 1, {"valid": False, "error_type": "hang"})[0]
    assert judge("reject:hang", 1, {"valid": False, "error_type": "timeout"})[0]
    assert not judge("reject:hang", 1, {"valid": False, "error_type": "exception"})[0]
    assert not judge("reject:hang", 137, None)[0]
