"""OpenEvolve entry points: evaluate, evaluate_stage1, evaluate_stage2. Never raise.

OpenEvolve imports evaluator.py by path and calls these from a thread of a process-pool worker;
the hard limit of the isolated worker (spec.time_limit_s) fires before OpenEvolve's own timeout,
which cannot stop a thread. Environment: PLASA_DATA_DIR, PLASA_TOKENIZER_DIR, PLASA_CACHE_DIR,
PLASA_DEVICE (cpu or cuda), PLASA_OVERRIDES (JSON of spec fields; makes scores unofficial). Fitness is `combined_score`; every metric is numeric; feedback for the
next prompt goes into artifacts.
"""

from __future__ import annotations

import json
import logging
import math
import os
import traceback

from .feedback import artifacts
from ..result import sanitize_score
from ..judge.runner import evaluate_file

log = logging.getLogger(__name__)

NUMERIC_KEYS = ("val_loss", "val_ppl", "val_acc", "train_loss", "step_ms_median", "param_count")


def _metrics(result: dict) -> dict:
    metrics = {"combined_score": sanitize_score(result.get("combined_score"))}
    for key in NUMERIC_KEYS:
        value = result.get(key)
        if isinstance(value, (int, float)) and math.isfinite(value):
            metrics[key] = float(value)
    metrics["valid"] = 1.0 if result.get("valid") else 0.0
    return metrics


def _package(result: dict):
    metrics, arts = _metrics(result), artifacts(result)
    try:
        from openevolve.evaluation_result import EvaluationResult
    except ImportError:
        return dict(metrics, artifacts=arts)
    return EvaluationResult(metrics=metrics, artifacts=arts)


def env_overrides() -> dict:
    """PLASA_OVERRIDES='{"steps": 200}' (JSON of spec fields) for quick, unofficial searches."""
    text = os.environ.get("PLASA_OVERRIDES", "").strip()
    return json.loads(text) if text else {}


def _run(program_path: str, mode: str):
    try:
        result = evaluate_file(program_path, mode=mode, device=os.environ.get("PLASA_DEVICE", "cpu"),
                               overrides=env_overrides(), progress=False)
    except Exception as exc:  # the evaluator's own bug: still a structured zero, never a raise
        log.exception("evaluation of %s failed", program_path)
        result = {"combined_score": 0.0, "valid": False, "stage": "evaluator",
                  "error_type": "evaluator_error", "error": f"{type(exc).__name__}: {exc}",
                  "traceback": traceback.format_exc()[-3000:]}
    return _package(result)


def evaluate(program_path: str):
    """Full evaluation (official budget) of one candidate file."""
    return _run(program_path, "full")


def evaluate_stage1(program_path: str):
    """Cascade stage 1: static checks, build, budget and causality probes, a smoke training.
    combined_score is 0.0 on failure and spec.stage1_pass_score (tiny) on pass."""
    return _run(program_path, "stage1")


def evaluate_stage2(program_path: str):
    """Cascade stage 2: the full evaluation."""
    return _run(program_path, "full")
