"""Feedback a search's LLM can act on: failed checks with evidence, the loss curve, timings.

Standard library only. Used for OpenEvolve artifacts and ShinkaEvolve's text_feedback; each
piece is kept well under OpenEvolve's 20 KB artifact limit.
"""

from __future__ import annotations

from ..result import failed_checks
from ..spec import Spec

MAX_CHARS = 4000


def _clip(text: str, limit: int = MAX_CHARS) -> str:
    return text if len(text) <= limit else text[: limit - 20] + "\n... (truncated)"


def failure_text(result: dict) -> str:
    lines = [f"FAILED at stage '{result.get('stage')}' ({result.get('error_type')}): {result.get('error')}"]
    for c in failed_checks(result):
        lines.append(f"- check {c['name']}: {c['detail']}")
    return _clip("\n".join(lines))


def curve_text(result: dict) -> str:
    curve = result.get("loss_curve") or []
    return ", ".join(f"step {s}: {loss:.3f}" for s, loss in curve)


def timing_text(result: dict) -> str:
    t = result.get("timings", {})
    keys = ("total_s", "data_s", "build_s", "probes_s", "train_s", "validation_s", "step_ms_median",
            "tokens_per_s", "wall_s")
    return ", ".join(f"{k}={t[k]:.3g}" for k in keys if isinstance(t.get(k), (int, float)))


def seeds_text(result: dict) -> str:
    """The noise-aware stage's summary: n_seeds, mean score and spread, per-seed perplexity."""
    if "n_seeds" not in result or not result.get("seeds"):
        return ""
    per_seed = ", ".join(f"seed {r.get('seed')}: {r.get('val_ppl', float('nan')):.3f}" for r in result["seeds"])
    std = result.get("combined_score_std")
    spread = f" +- {std:.3g} (std)" if isinstance(std, (int, float)) else ""
    return (f"n_seeds {result['n_seeds']}: combined_score is the mean, {result.get('combined_score', 0.0):.6g}"
            f"{spread}; val_ppl {per_seed}")


def text_feedback(result: dict) -> str:
    if not result.get("valid"):
        body = failure_text(result)
        if result.get("traceback"):
            body += "\n" + _clip(result["traceback"], 2000)
        return body
    parts = [f"val_ppl {result.get('val_ppl', float('nan')):.3f}, val_loss "
             f"{result.get('val_loss', float('nan')):.4f}, val_acc {result.get('val_acc', float('nan')):.4f}"
             if "val_ppl" in result else f"passed {result.get('mode')} checks"]
    if "val_ppl" in result:
        ref = Spec().reference_val_ppl
        parts.append(f"relative_score {ref / result['val_ppl']:.4f} (the reference's val_ppl {ref:g} / "
                     "this val_ppl; above 1 beats the reference)")
    seeds = seeds_text(result)
    if seeds:
        parts.append(seeds)
    if result.get("layer_top_k"):
        parts.append(f"layer_top_k {result['layer_top_k']}")
    if result.get("loss_curve"):
        parts.append("train loss: " + curve_text(result))
    parts.append("timings: " + timing_text(result))
    return _clip("\n".join(parts))


def artifacts(result: dict) -> dict:
    """OpenEvolve artifacts: short strings, each under MAX_CHARS."""
    out = {"summary": text_feedback(result)}
    if not result.get("valid"):
        out["failed_checks"] = failure_text(result)
        tail = result.get("traceback") or result.get("log_tail")
        if tail:
            out["traceback_tail"] = _clip(tail, 3000)
    if result.get("loss_curve"):
        out["loss_curve"] = curve_text(result)
    if seeds_text(result):
        out["seeds"] = seeds_text(result)
    out["timings"] = timing_text(result)
    return out
