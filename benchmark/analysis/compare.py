"""`python -m benchmark compare RESULT.json ... [--baseline N] [--plot out.png]`: a leaderboard.

Markdown, best first: score (mean over seeds), std and 95% CI when several seeds are present,
validation perplexity, seeds, flags for unofficial runs and mixed precision, and Welch's t-test
p-value of each row against the baseline row when both have >= 3 seeds.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Optional

from . import stats
from .plotting import loss_band

MIN_SEEDS_FOR_TEST = 3


def load(path: str) -> dict:
    result = json.loads(Path(path).read_text())
    if not isinstance(result, dict) or "combined_score" not in result:
        raise ValueError(f"{path} is not a PLASA-Bench result")
    result["_name"] = Path(path).stem
    return result


def seed_scores(result: dict) -> list:
    seeds = result.get("seeds")
    if seeds:
        return [s["combined_score"] for s in seeds if s.get("valid")]
    return [result["combined_score"]] if result.get("valid") else []


def seed_values(result: dict, key: str) -> list:
    seeds = result.get("seeds") or [result]
    return [s[key] for s in seeds if s.get("valid") and isinstance(s.get(key), (int, float))]


def _fmt(x: Optional[float], digits: int = 6) -> str:
    return "-" if x is None or (isinstance(x, float) and not math.isfinite(x)) else f"{x:.{digits}f}"


def leaderboard(results: list, baseline: Optional[int] = None) -> str:
    rows = sorted(results, key=lambda r: -(stats.mean(seed_scores(r)) if seed_scores(r) else 0.0))
    precisions = {r.get("precision") for r in results if r.get("precision")}
    base = results[baseline] if baseline is not None else None
    head = ["rank", "candidate", "score", "std", "95% CI", "val_ppl", "seeds", "flags"]
    if base is not None:
        head.append(f"p vs {base['_name']}")
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for rank, r in enumerate(rows, 1):
        scores = seed_scores(r)
        summary = stats.summarize(scores) if scores else None
        ppl = seed_values(r, "val_ppl")
        flags = []
        if not r.get("valid"):
            flags.append(f"FAILED ({r.get('error_type')})")
        if not r.get("official"):
            flags.append("unofficial")
        if len(precisions) > 1:
            flags.append(f"precision {r.get('precision')} (mixed)")
        ci = summary["ci95"] if summary else None
        cells = [str(rank), r["_name"], _fmt(summary["mean"] if summary else 0.0),
                 _fmt(summary["std"]) if summary and summary["n"] > 1 else "-",
                 f"[{_fmt(ci[0])}, {_fmt(ci[1])}]" if ci else "-",
                 _fmt(stats.mean(ppl), 2) if ppl else "-", str(len(scores)), ", ".join(flags) or "-"]
        if base is not None:
            other = seed_scores(base)
            p = (stats.welch_p(scores, other)
                 if r is not base and min(len(scores), len(other)) >= MIN_SEEDS_FOR_TEST else None)
            cells.append("baseline" if r is base else (f"{p:.3g}" if p is not None else "-"))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot(results: list, out: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_score, ax_loss) = plt.subplots(1, 2, figsize=(12, 4.5))
    names = [r["_name"] for r in results]
    means, errs = [], []
    for r in results:
        scores = seed_scores(r) or [0.0]
        ci = stats.ci95(scores)
        means.append(stats.mean(scores))
        errs.append((ci[1] - ci[0]) / 2 if ci else 0.0)
    ax_score.bar(range(len(results)), means, yerr=errs, capsize=4, color="tab:blue")
    ax_score.set_xticks(range(len(results)), names, rotation=30, ha="right")
    ax_score.set_ylabel("combined_score = 1 / val_ppl (95% CI)")
    lo = min(m - e for m, e in zip(means, errs))
    hi = max(m + e for m, e in zip(means, errs))
    ax_score.set_ylim(max(0.0, lo - 0.1 * (hi - lo + 1e-9)), hi + 0.1 * (hi - lo + 1e-9))
    for r in results:
        loss_band(ax_loss, [s.get("loss_curve") for s in (r.get("seeds") or [r])], r["_name"])
    ax_loss.legend(fontsize=8)
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main(argv: list) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m benchmark compare", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results", nargs="+", help="result JSON files (evaluator.py --output)")
    p.add_argument("--baseline", help="file name (stem) or 1-based position of the baseline row")
    p.add_argument("--plot", help="write scores with error bars and loss curves to this PNG")
    args = p.parse_args(argv)
    results = [load(path) for path in args.results]
    baseline = None
    if args.baseline:
        names = [r["_name"] for r in results]
        baseline = (int(args.baseline) - 1 if args.baseline.isdigit() else names.index(args.baseline))
    print(leaderboard(results, baseline))
    if args.plot:
        plot(results, args.plot)
    return 0
