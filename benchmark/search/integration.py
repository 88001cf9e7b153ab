"""OpenEvolve entry points: evaluate, evaluate_stage1, evaluate_stage2, evaluate_stage3. Never raise.

OpenEvolve imports evaluator.py by path and calls these from a thread of a process-pool worker;
the hard limit of the isolated worker (spec.time_limit_s) fires before OpenEvolve's own timeout,
which cannot stop a thread. Environment: PLASA_DATA_DIR, PLASA_TOKENIZER_DIR, PLASA_CACHE_DIR,
PLASA_DEVICE (cpu or cuda), PLASA_OVERRIDES (JSON of spec fields; makes scores unofficial),
PLASA_FEATURES (descriptors to add to the metrics for MAP-Elites, e.g. "attention_density"),
PLASA_RAY_ADDRESS (run each evaluation as a task on that Ray cluster: benchmark.judge.placement).

The metrics hold only numbers where higher is better, and the same keys from every stage and on
failure (so a later stage's numbers replace an earlier one's): OpenEvolve's prompt calls an
attempt "improved" only when every metric rose, so a lower-is-better metric (perplexity, loss,
step time) would make every attempt read "mixed". Perplexity, loss and timings go to the
artifacts (the LLM reads them there).
"""

from __future__ import annotations

import json
import logging
import os
import traceback

from .feedback import artifacts
from ..result import descriptors, sanitize_score
from ..judge.runner import evaluate_file
from ..spec import Spec

log = logging.getLogger(__name__)

DESCRIPTORS = ("attention_density", "forward_flops_per_token", "param_count")


def relative_score(result: dict, spec: Spec) -> float:
    """reference_val_ppl / val_ppl: 1.00 for the reference, readable at two decimals; 0.0 on failure."""
    ppl = result.get("val_ppl")
    if not result.get("valid") or not isinstance(ppl, (int, float)) or not ppl > 0:
        return 0.0
    return sanitize_score(spec.reference_val_ppl / ppl)


def feature_names() -> tuple:
    text = os.environ.get("PLASA_FEATURES", "").strip()
    if not text:
        return ()
    names = DESCRIPTORS if text == "all" else tuple(n.strip() for n in text.split(",") if n.strip())
    unknown = sorted(set(names) - set(DESCRIPTORS))
    if unknown:  # never raise from evaluate(): say it, and leave them out
        log.warning("PLASA_FEATURES: unknown descriptors %s ignored; choose from %s", unknown, list(DESCRIPTORS))
    return tuple(n for n in names if n in DESCRIPTORS)


def search_metrics(result: dict, spec: Spec) -> dict:
    """combined_score, relative_score, val_acc (0.0 on failure), the multi-seed fields when
    present, and the descriptors PLASA_FEATURES asks for (0.0 where unknown)."""
    metrics = {"combined_score": sanitize_score(result.get("combined_score")),
               "relative_score": relative_score(result, spec),
               "val_acc": sanitize_score(result.get("val_acc")) if result.get("valid") else 0.0}
    found = result.get("descriptors") or descriptors(result)
    for name in feature_names():
        value = found.get(name)
        metrics[name] = float(value) if isinstance(value, (int, float)) else 0.0
    return metrics


def _package(result: dict, spec: Spec):
    metrics, arts = search_metrics(result, spec), artifacts(result)
    try:
        from openevolve.evaluation_result import EvaluationResult
    except ImportError:
        return dict(metrics, artifacts=arts)
    return EvaluationResult(metrics=metrics, artifacts=arts)


def env_overrides() -> dict:
    """PLASA_OVERRIDES='{"steps": 200}' (JSON of spec fields) for quick, unofficial searches."""
    text = os.environ.get("PLASA_OVERRIDES", "").strip()
    try:
        value = json.loads(text) if text else {}
    except ValueError as exc:
        raise ValueError(f"PLASA_OVERRIDES is not JSON ({exc}): give an object of spec fields, "
                         'e.g. {"steps": 200}') from None
    if not isinstance(value, dict):
        raise ValueError('PLASA_OVERRIDES must be a JSON object of spec fields, e.g. {"steps": 200}')
    return value


def _guarded(program_path: str, run) -> dict:
    try:
        return run()
    except Exception as exc:  # the evaluator's own bug (or a bad environment): a structured zero
        log.exception("evaluation of %s failed", program_path)
        return {"combined_score": 0.0, "valid": False, "stage": "evaluator",
                "error_type": "evaluator_error", "error": f"{type(exc).__name__}: {exc}",
                "traceback": traceback.format_exc()[-3000:]}


def _spec() -> Spec:
    try:
        return Spec().replace(**env_overrides())
    except Exception:  # reported by the evaluation itself
        return Spec()


def _evaluate(program_path: str, **kwargs) -> dict:
    """evaluate_file here, or as a task on the Ray cluster PLASA_RAY_ADDRESS names."""
    address = os.environ.get("PLASA_RAY_ADDRESS", "").strip()
    if address:
        from ..judge.placement import remote_evaluate

        return remote_evaluate(program_path, address, **kwargs)
    return evaluate_file(program_path, **kwargs)


def _run(program_path: str, mode: str):
    result = _guarded(program_path, lambda: _evaluate(
        program_path, mode=mode, device=os.environ.get("PLASA_DEVICE", "cpu"),
        overrides=env_overrides(), progress=False))
    return _package(result, _spec())


def evaluate(program_path: str):
    """Full evaluation (official budget) of one candidate file."""
    return _run(program_path, "full")


def evaluate_stage1(program_path: str):
    """Cascade stage 1: static checks, build, budget and causality probes, a smoke training.
    combined_score is 0.0 on failure and spec.stage1_pass_score (tiny) on pass."""
    return _run(program_path, "stage1")


def evaluate_stage2(program_path: str):
    """Cascade stage 2: the full evaluation (one seed)."""
    return _run(program_path, "full")


def evaluate_stage3(program_path: str):
    """Cascade stage 3, noise-aware selection (benchmark.search.noise): when the one-seed score
    (stage 2's run, from the cache) is within spec.noise_band_sigmas seed standard deviations of
    the best score this search has seen (kept in PLASA_CACHE_DIR), the candidate is trained on
    spec.stage3_extra_seeds more seeds and combined_score becomes the mean over all seeds (n_seeds
    and the spread are in the artifacts). Elsewhere the one-seed result stands."""
    from .noise import evaluate_noise_aware

    result = _guarded(program_path, lambda: evaluate_noise_aware(
        program_path, overrides=env_overrides(), evaluate=_evaluate,
        device=os.environ.get("PLASA_DEVICE", "cpu"), mode="full", progress=False))
    return _package(result, _spec())
