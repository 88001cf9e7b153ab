"""The result schema and the one failure helper.

Standard library only: the parent process (which never imports torch or the candidate) builds
failure results too.

Schema ``plasa-bench-result/1`` (one JSON object):
  combined_score   float, 1 / val_ppl; 0.0 for any failure, never NaN
  valid            bool, every check passed and a score was produced
  official         bool, the official budget and data settings were used
  val_loss, val_ppl, val_acc, train_loss   floats (absent on failure)
  stage            where the run ended: static, load, build, budget, probe, train, validate, done
  error, error_type  a one-line message and a short category (absent on success)
  checks           [{name, passed, detail}] every integrity check run, with evidence on failure
  timings          {total_s, train_s, validation_s, probes_s, data_s, build_s, step_ms_median,
                    tokens_per_s, overhead_ms_per_step}
  params           {total, embedding, non_embedding, flops_per_token}
  layer_top_k      the candidate's declared per-layer k, or null
  loss_curve       [[step, mean train loss of the last 100 steps], ...] every 100 steps
  candidate        {sha256, path}
  spec_version, seed, dataset, split, tokenizer, precision, device, steps
  environment      {torch, python, threads, cpu, device_name}
  spec             the full spec used
  traceback        tail of the worker's traceback on failure
"""

from __future__ import annotations

import math
from typing import Any, Optional

SCHEMA = "plasa-bench-result/1"
METRIC_KEYS = ("val_loss", "val_ppl", "val_acc", "train_loss")


class EvalFailure(Exception):
    """Raised inside the evaluator when a candidate fails; carries what the result reports."""

    def __init__(self, stage: str, error_type: str, message: str,
                 checks: Optional[list] = None) -> None:
        super().__init__(message)
        self.stage, self.error_type, self.message = stage, error_type, message
        self.checks = checks or []


def base_result(spec, mode: str, sha256, path, checks: list) -> dict:
    """The fields every result has, known before anything runs."""
    return {"schema": SCHEMA, "spec_version": spec.version, "official": spec.official and mode == "full",
            "seed": spec.seed, "dataset": spec.dataset, "split": spec.split, "tokenizer": spec.tokenizer,
            "steps": spec.steps, "mode": mode, "candidate": {"sha256": sha256, "path": path},
            "checks": list(checks), "timings": {}, "spec": spec.to_dict()}


def check(name: str, passed: bool, detail: str = "") -> dict:
    return {"name": name, "passed": bool(passed), "detail": detail}


def failure(base: dict, stage: str, error_type: str, message: str, **extra: Any) -> dict:
    """A failed result: `base` (whatever was known so far) plus the failure fields."""
    result = dict(base)
    for key in METRIC_KEYS:
        result.pop(key, None)
    result.update(schema=SCHEMA, combined_score=0.0, valid=False, stage=stage,
                  error=message.strip().splitlines()[0] if message.strip() else error_type,
                  error_type=error_type, **extra)
    if message.strip() and "\n" in message.strip():
        result.setdefault("error_detail", message.strip())
    return result


def sanitize_score(value: Any) -> float:
    """A finite, non-negative float; anything else becomes 0.0."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return 0.0
    return value if math.isfinite(value) and value > 0 else 0.0


def failed_checks(result: dict) -> list:
    return [c for c in result.get("checks", []) if not c.get("passed")]
