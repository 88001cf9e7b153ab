"""`python -m benchmark record CANDIDATE BASELINE`: does a candidate beat a baseline?

The rule (docs/findings.md "The record rule"): over seeds run by both, paired by seed, the
candidate's validation loss is lower at one-sided p < spec.record_alpha (paired t-test on the
per-seed differences), and its mean perplexity gain, exp(-mean difference) - 1, is at least
spec.record_min_gain. Pairing matters: runs of one seed share the data order, so most of the
seed-to-seed spread cancels in the difference.

CANDIDATE and BASELINE are each one or more result files (evaluator.py --output, a --seeds
result holding its per-seed runs) or folders of them. When the rule is not met the verdict says
why and, at the observed effect and spread, how many paired seeds would settle it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, asdict
from pathlib import Path
from typing import Optional, Sequence

from . import stats
from ..spec import SPEC

MAX_SEEDS = 1000  # the "seeds needed" search stops here: past it, the effect is noise


def seed_losses(paths: Sequence[str]) -> dict:
    """seed -> validation loss of every valid run in `paths` (files, or folders of *.json)."""
    files = []
    for path in map(Path, paths):
        files.extend(sorted(path.glob("*.json")) if path.is_dir() else [path])
    out = {}
    for file in files:
        result = json.loads(file.read_text())
        if not isinstance(result, dict):
            raise ValueError(f"{file} is not a result")
        for run in result.get("seeds") or [result]:
            if run.get("valid") and isinstance(run.get("val_loss"), (int, float)) and "seed" in run:
                if run["seed"] in out and out[run["seed"]] != run["val_loss"]:
                    raise ValueError(f"seed {run['seed']} appears twice with different losses in {paths}")
                out[run["seed"]] = float(run["val_loss"])
    return out


def one_sided_p(diffs: Sequence[float]) -> Optional[float]:
    """P(mean <= observed | true mean 0) for paired differences (candidate - baseline loss): small
    when the candidate's loss is lower. None below 2 pairs."""
    if len(diffs) < 2:
        return None
    spread = stats.std(diffs)
    if spread == 0:
        return 0.0 if stats.mean(diffs) < 0 else 1.0
    t = stats.mean(diffs) / (spread / math.sqrt(len(diffs)))
    two = stats.t_sf_two_sided(t, len(diffs) - 1)
    return two / 2 if t < 0 else 1 - two / 2


def seeds_needed(mean_diff: float, spread: float, alpha: float) -> Optional[int]:
    """Pairs at which this mean difference and spread give one-sided p < alpha (None: never, or
    more than MAX_SEEDS)."""
    if mean_diff >= 0:
        return None
    if spread == 0:
        return 2
    for n in range(2, MAX_SEEDS + 1):
        if stats.t_quantile(1 - alpha, n - 1) * spread / math.sqrt(n) < -mean_diff:
            return n
    return None


@dataclass(frozen=True)
class Verdict:
    record: bool            # the rule is met
    pairs: int              # seeds run by both
    gain: Optional[float]   # mean perplexity gain, exp(-mean loss difference) - 1 (0.01 = 1%)
    gain_ci95: Optional[list]  # its 95% interval, from the paired differences' interval
    p: Optional[float]      # one-sided paired t-test p-value
    seeds_needed: Optional[int]  # pairs that would settle it at this effect and spread
    reason: str

    def to_dict(self) -> dict:
        return asdict(self)


def judge(candidate: dict, baseline: dict, alpha: float = SPEC.record_alpha,
          min_gain: float = SPEC.record_min_gain) -> Verdict:
    """The record rule on seed -> loss maps of both sides."""
    seeds = sorted(set(candidate) & set(baseline))
    diffs = [candidate[s] - baseline[s] for s in seeds]
    if not diffs:
        return Verdict(False, 0, None, None, None, None, "no seed was run by both")
    mean_diff = stats.mean(diffs)
    gain = math.exp(-mean_diff) - 1
    interval = stats.ci95(diffs)
    gain_ci = [math.exp(-interval[1]) - 1, math.exp(-interval[0]) - 1] if interval else None
    p = one_sided_p(diffs)
    needed = seeds_needed(mean_diff, stats.std(diffs), alpha) if len(diffs) >= 2 else None
    if p is None:
        return Verdict(False, len(diffs), gain, None, None, None,
                       "one paired seed cannot be tested: run at least 2 seeds of each (5 make a claim)")
    if gain < min_gain:
        why = (f"the mean gain {100 * gain:+.2f}% is below the rule's minimum {100 * min_gain:.2f}%")
        return Verdict(False, len(diffs), gain, gain_ci, p, None, why)
    if p >= alpha:
        more = (f"; at this effect and spread about {needed} paired seeds would settle it" if needed
                else "; at this effect and spread no feasible number of seeds would settle it")
        return Verdict(False, len(diffs), gain, gain_ci, p, needed, f"p = {p:.3g} is not below {alpha:g}{more}")
    return Verdict(True, len(diffs), gain, gain_ci, p, needed,
                   f"{100 * gain:+.2f}% perplexity over {len(diffs)} paired seeds at p = {p:.3g} < {alpha:g}")


def main(argv: list) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m benchmark record", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--candidate", nargs="+", required=True, help="result files or folders of the candidate")
    p.add_argument("--baseline", nargs="+", required=True, help="result files or folders of the baseline")
    p.add_argument("--alpha", type=float, default=SPEC.record_alpha, help="one-sided significance level")
    p.add_argument("--min-gain", type=float, default=SPEC.record_min_gain,
                   help="smallest mean perplexity gain that counts (a fraction: 0.005 = 0.5%%)")
    args = p.parse_args(argv)
    try:
        verdict = judge(seed_losses(args.candidate), seed_losses(args.baseline), args.alpha, args.min_gain)
    except (OSError, ValueError) as exc:
        print(json.dumps({"record": False, "error": str(exc)}))
        return 2
    print(json.dumps(verdict.to_dict(), indent=1))
    return 0 if verdict.record else 1
