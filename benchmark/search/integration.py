"""OpenEvolve entry points: evaluate, evaluate_stage1, evaluate_stage2, evaluate_stage3. Never raise.

OpenEvolve imports evaluator.py by path and calls these from a thread of a process-pool worker;
the hard limit of the isolated worker (spec.time_limit_s) fires before OpenEvolve's own timeout,
which cannot stop a thread.

Options (:class:`SearchOptions`): OpenEvolve 0.4.1 passes its config's ``evaluator.evaluator_args``
to ``evaluate()`` as keywords (only to evaluate(): its own cascade calls evaluate_stage1/2/3 with
the program path alone, so ``cascade: true`` runs the cascade inside evaluate()). Each option
falls back to an environment variable: device (PLASA_DEVICE, cpu or cuda), overrides
(PLASA_OVERRIDES, JSON of spec fields; makes scores unofficial; the config's keys win over the
variable's), search_id (PLASA_SEARCH_ID: the noise stage's best per search), features
(PLASA_FEATURES: descriptors to add to the metrics for MAP-Elites, e.g. "attention_density").
PLASA_DATA_DIR, PLASA_TOKENIZER_DIR, PLASA_CACHE_DIR and PLASA_RAY_ADDRESS (run each evaluation
as a task on that Ray cluster: benchmark.judge.placement) are read from the environment.

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
import re
import traceback
from dataclasses import dataclass
from typing import Optional

from .feedback import artifacts
from ..result import SCHEMA, descriptors, failure, sanitize_score
from ..judge.options import Options
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


def split_features(text: str) -> tuple:
    """The names in a features text: comma-separated, or "all" for every descriptor."""
    text = text.strip()
    return DESCRIPTORS if text == "all" else tuple(n.strip() for n in text.split(",") if n.strip())


def feature_names(text: Optional[str] = None) -> tuple:
    """The descriptors named in `text` (:func:`split_features`; default PLASA_FEATURES); unknown
    names are left out with a warning."""
    names = split_features(os.environ.get("PLASA_FEATURES", "") if text is None else text)
    unknown = sorted(set(names) - set(DESCRIPTORS))
    if unknown:  # never raise from evaluate(): say it, and leave them out
        log.warning("PLASA_FEATURES: unknown descriptors %s ignored; choose from %s", unknown, list(DESCRIPTORS))
    return tuple(n for n in names if n in DESCRIPTORS)


def search_metrics(result: dict, spec: Spec, features: Optional[tuple] = None) -> dict:
    """combined_score, relative_score, val_acc (0.0 on failure), the multi-seed fields when
    present, and the descriptors `features` (default PLASA_FEATURES) asks for (0.0 where unknown)."""
    metrics = {"combined_score": sanitize_score(result.get("combined_score")),
               "relative_score": relative_score(result, spec),
               "val_acc": sanitize_score(result.get("val_acc")) if result.get("valid") else 0.0}
    found = result.get("descriptors") or descriptors(result)
    for name in feature_names() if features is None else features:
        value = found.get(name)
        metrics[name] = float(value) if isinstance(value, (int, float)) else 0.0
    return metrics


def _package(result: dict, spec: Spec, features: Optional[tuple] = None):
    metrics, arts = search_metrics(result, spec, features), artifacts(result)
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


DEVICE = re.compile(r"cpu|cuda(:\d+)?")


@dataclass(frozen=True)
class SearchOptions:
    """What a search passes to evaluate(): the keywords of OpenEvolve's evaluator.evaluator_args,
    each over its environment variable (module docstring)."""

    device: str         # cpu or cuda (several GPUs: each evaluation takes a free one)
    overrides: dict     # spec fields, e.g. {"steps": 200}: an unofficial budget
    search_id: str      # the noise stage keeps the best score per search id ("": shared)
    features: tuple     # descriptors added to the metrics, e.g. ("attention_density",)
    cascade: bool       # evaluate() runs stage 1, then the noise-aware full evaluation (stage 3)

    @classmethod
    def resolve(cls, device: Optional[str] = None, overrides: Optional[dict] = None,
                search_id: Optional[str] = None, features=None, cascade: bool = False) -> "SearchOptions":
        """ValueError naming the option and what it takes when one is malformed."""
        device = os.environ.get("PLASA_DEVICE", "cpu") if device is None else device
        if not isinstance(device, str) or not DEVICE.fullmatch(device):
            raise ValueError(f"device {device!r}: expected cpu, cuda (a free GPU each) or cuda:N")
        if overrides is not None and not isinstance(overrides, dict):
            raise ValueError(f"overrides must be a mapping of spec fields, e.g. {{steps: 200}}; got {overrides!r}")
        search_id = os.environ.get("PLASA_SEARCH_ID", "") if search_id is None else search_id
        if not isinstance(search_id, str):
            raise ValueError(f"search_id must be a string; got {search_id!r}")
        if features is None:
            names = feature_names()
        else:
            names = features
            if isinstance(features, str):  # "attention_density,param_count" or "all", as PLASA_FEATURES
                names = split_features(features)
            if not isinstance(names, (list, tuple)) or set(names) - set(DESCRIPTORS):
                raise ValueError(f"features {features!r}: expected a list drawn from {', '.join(DESCRIPTORS)}")
        if not isinstance(cascade, bool):
            raise ValueError(f"cascade must be true or false; got {cascade!r}")
        return cls(device, dict(env_overrides(), **(overrides or {})), search_id, tuple(names), cascade)


def _evaluate(program_path: str, options: Options) -> dict:
    """evaluate_file here, or as a task on the Ray cluster PLASA_RAY_ADDRESS names."""
    address = os.environ.get("PLASA_RAY_ADDRESS", "").strip()
    if address:
        from ..judge.remote import remote_evaluate

        return remote_evaluate(program_path, address, options)
    return evaluate_file(program_path, options)


def _stage(program_path: str, stage: str, options: dict):
    """One stage's metrics and artifacts: "stage1", "full", "noise" (stage 3) or "cascade" (stage
    1, then stage 3 when it passed). A malformed option is a usage_error result, never a raise."""
    try:
        opts = SearchOptions.resolve(**options)
    except (TypeError, ValueError) as exc:
        result = failure({"schema": SCHEMA, "spec_version": Spec().version}, "setup", "usage_error",
                         f"evaluator option: {exc} (evaluator_args in the search config, or PLASA_* "
                         "in the environment; see benchmark/search/integration.py)")
        return _package(result, Spec(), ())
    full = Options(overrides=opts.overrides, device=opts.device, progress=False)

    def run() -> dict:
        if stage in ("stage1", "cascade"):
            first = _evaluate(program_path, full.replace(mode="stage1"))
            if stage == "stage1" or not first.get("valid"):
                return first
        if stage == "full":
            return _evaluate(program_path, full)
        from .noise import evaluate_noise_aware

        return evaluate_noise_aware(program_path, full, evaluate=_evaluate, search_id=opts.search_id)

    try:
        spec = full.spec
    except (TypeError, ValueError):  # the evaluation itself reports it, as a usage_error
        spec = Spec()
    return _package(_guarded(program_path, run), spec, opts.features)


def evaluate(program_path: str, *, device: Optional[str] = None, overrides: Optional[dict] = None,
             search_id: Optional[str] = None, features=None, cascade: bool = False):
    """Full evaluation (official budget) of one candidate file; with cascade=True, stage 1 and then
    the noise-aware stage 3 (what OpenEvolve's own cascade runs, in one call). The keywords are
    OpenEvolve's evaluator_args (named, so OpenEvolve 0.4.1 refuses a misspelt key at start-up)."""
    options = dict(device=device, overrides=overrides, search_id=search_id, features=features, cascade=cascade)
    return _stage(program_path, "cascade" if cascade is True else "full", options)


def evaluate_stage1(program_path: str, **options):
    """Cascade stage 1: static checks, build, budget and causality probes, a smoke training.
    combined_score is 0.0 on failure and spec.stage1_pass_score (tiny) on pass. `options` as for
    evaluate() (OpenEvolve 0.4.1 passes none to a stage: they come from the environment)."""
    return _stage(program_path, "stage1", options)


def evaluate_stage2(program_path: str, **options):
    """Cascade stage 2: the full evaluation (one seed)."""
    return _stage(program_path, "full", options)


def evaluate_stage3(program_path: str, **options):
    """Cascade stage 3, noise-aware selection (benchmark.search.noise): when the one-seed score
    (stage 2's run, from the cache) is within spec.noise_band_sigmas seed standard deviations of
    the best score this search has seen (kept in PLASA_CACHE_DIR), the candidate is trained on
    spec.stage3_extra_seeds more seeds and combined_score becomes the mean over all seeds (n_seeds
    and the spread are in the artifacts). Elsewhere the one-seed result stands."""
    return _stage(program_path, "noise", options)
