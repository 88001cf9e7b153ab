"""Several seeds of one candidate: per-seed scores, mean, std and a 95% confidence interval.

Standard library only. Seeds are spec.seed, spec.seed + 1, ...; a candidate is valid only if
every seed is. The aggregate keeps the first seed's checks and metadata.
"""

from __future__ import annotations

import math
from typing import Optional

from . import stats
from ..judge.options import Options
from ..judge.runner import evaluate_file
from ..spec import Spec

SEED_FIELDS = ("seed", "valid", "combined_score", "val_loss", "val_ppl", "val_acc", "train_loss",
               "error", "error_type", "stage", "cached", "loss_curve", "audit")


def run_seeds(candidate: str, options: Options, seeds: list, audit_index: Optional[int] = 0,
              evaluate=None) -> list:
    """One evaluation per seed, in order (the one loop over seeds: several seeds here, stage 3's
    extra seeds in benchmark.search.noise), the `audit_index`-th with the probes at the audit's
    power (spec.audit); stops at the first invalid run, since a failure on one seed fails the
    candidate. `evaluate`: evaluate_file or a stand-in with its signature (a Ray task)."""
    evaluate = evaluate or evaluate_file
    runs = []
    for i, seed in enumerate(seeds):
        audit = {"audit": True} if i == audit_index else {}
        runs.append(evaluate(candidate, options.with_overrides(seed=seed, **audit)))
        if not runs[-1].get("valid"):
            break
    return runs


def evaluate_seeds(candidate: str, n_seeds: int, options: Optional[Options] = None, *,
                   audit_first: bool = True, **changes) -> dict:
    """`n_seeds` seeds from the options' seed on; with audit_first, the first one's probes at the
    audit's power (spec.audit: a reported multi-seed result catches a leak worth 1% of perplexity
    with 99%). `changes`: Options fields, as for evaluate_file."""
    options = Options.of(options, **changes)
    first_seed = options.overrides.get("seed", Spec().seed)
    seeds = [first_seed + i for i in range(n_seeds)]
    return aggregate(run_seeds(candidate, options, seeds, 0 if audit_first else None), n_seeds)


def aggregate(runs: list, n_requested: int) -> dict:
    out = dict(runs[0])
    out["seeds"] = [{k: r.get(k) for k in SEED_FIELDS if k in r} for r in runs]
    audited = [r for r in runs if r.get("audit")]
    if audited:  # the probes' power is the audited seed's
        out.update(audit=True, probe_power=audited[0].get("probe_power"))
    failed = [r for r in runs if not r.get("valid")]
    if failed:
        bad = failed[0]
        out.update({k: bad.get(k) for k in ("stage", "error", "error_type", "checks", "traceback")
                    if k in bad})
        out.update(valid=False, combined_score=0.0)
        for key in ("val_loss", "val_ppl", "val_acc", "train_loss"):
            out.pop(key, None)
        return out
    out["n_seeds"] = len(runs)
    for key in ("combined_score", "val_loss", "val_ppl", "val_acc", "train_loss"):
        values = [r[key] for r in runs if isinstance(r.get(key), (int, float)) and math.isfinite(r[key])]
        if len(values) == len(runs):
            summary = stats.summarize(values)
            out[key] = summary["mean"]
            out[f"{key}_std"] = summary["std"]
            out[f"{key}_ci95"] = summary["ci95"]
    # official when the first seed is the official one and the rest differ from it only by seed
    out["official"] = bool(runs[0].get("official"))
    return out
