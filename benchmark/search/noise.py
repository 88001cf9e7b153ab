"""The best score a search has seen, for the noise-aware third stage. Standard library only.

One seed's perplexity varies by spec.seed_std_fraction (1.0% for the reference over 5 seeds), so
a search that keeps one-seed scores keeps lucky seeds as elites. Stage 3 re-runs only candidates
whose one-seed score is within spec.noise_band_sigmas standard deviations of the best score seen
so far, where an extra seed can change the ranking; the best is kept per spec (budget, data, ...)
and search id (the search config's search_id, else PLASA_SEARCH_ID) in
PLASA_CACHE_DIR/search_best.json, shared by parallel evaluations under a file lock.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Optional

from ..fsutil import atomic_write, cache_dir, locked
from ..judge.options import Options
from ..spec import Spec


def _path() -> Path:
    return cache_dir() / "search_best.json"


def _key(spec: Spec, search_id: Optional[str] = None) -> str:
    """Per spec (the best is over seeds) and per search id (`search_id`, else PLASA_SEARCH_ID), which
    concurrent searches sharing one cache set to keep their own best (unset: every search on this
    cache shares one)."""
    fields = dataclasses.asdict(spec)
    fields.pop("seed", None)
    fields.pop("audit", None)  # an audit changes no score
    fields["search_id"] = os.environ.get("PLASA_SEARCH_ID", "") if search_id is None else search_id
    return hashlib.sha256(json.dumps(fields, sort_keys=True, default=str).encode()).hexdigest()[:16]


def best_score(spec: Spec, search_id: Optional[str] = None) -> Optional[float]:
    try:
        return float(json.loads(_path().read_text())[_key(spec, search_id)])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def near_best(result: dict, spec: Spec, search_id: Optional[str] = None) -> bool:
    """True when the result's score could be the best within seed noise (or nothing is known)."""
    best = best_score(spec, search_id)
    score = result.get("combined_score") or 0.0
    if best is None or best <= 0:
        return True
    return score >= best * (1.0 - spec.noise_band_sigmas * spec.seed_std_fraction)


def record_best(result: dict, spec: Spec, search_id: Optional[str] = None) -> None:
    score = result.get("combined_score")
    if not isinstance(score, (int, float)) or not score > 0:
        return
    path = _path()
    with locked(path.with_suffix(".lock")):
        try:
            table = json.loads(path.read_text())
        except (OSError, ValueError):
            table = {}
        key = _key(spec, search_id)
        if score > float(table.get(key, 0.0)):
            table[key] = float(score)
            atomic_write(path, json.dumps(table, indent=1).encode())


def evaluate_noise_aware(candidate: str, options: Optional[Options] = None, *, evaluate=None,
                         search_id: Optional[str] = None, **changes) -> dict:
    """One seed (from the cache when stage 2 ran it); when that score is near the best seen by this
    search (`search_id`, else PLASA_SEARCH_ID), spec.stage3_extra_seeds more seeds and their mean
    (benchmark.analysis.multiseed.aggregate), the first extra seed with the probes' full-power
    audit. Records the best. The result carries n_seeds either way. `evaluate` is evaluate_file or
    a stand-in with its signature (a Ray task); `changes`: Options fields, as for evaluate_file."""
    from ..analysis.multiseed import aggregate, run_seeds

    if evaluate is None:
        from ..judge import runner

        evaluate = runner.evaluate_file
    options = Options.of(options, **changes)
    try:
        spec = options.spec
    except (TypeError, ValueError):  # the evaluation itself reports it
        return evaluate(candidate, options)
    first = evaluate(candidate, options)
    if not first.get("valid"):
        return first
    if not near_best(first, spec, search_id):
        record_best(first, spec, search_id)
        return dict(first, n_seeds=1)
    # near the best: the probes' full-power audit (spec.audit) on the first extra seed, or on the
    # one seed when there is none, before the candidate can become the best
    extra = [spec.seed + i for i in range(1, 1 + spec.stage3_extra_seeds)]
    if extra:
        runs = [first] + run_seeds(candidate, options, extra, 0, evaluate)
    else:
        runs = [first] if spec.audit else run_seeds(candidate, options, [spec.seed], 0, evaluate)
    result = aggregate(runs, 1 + spec.stage3_extra_seeds)
    if result.get("valid"):
        record_best(result, spec, search_id)
    return result
