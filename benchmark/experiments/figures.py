"""A study's figures: training loss per row, and the family's paired differences as a dot plot.

Both have one panel per sequence length (a flat study has one): losses and perplexities at
different lengths do not compare. The dot plot shows each comparison's mean paired difference
with its 95% interval and a zero line; a filled dot is a difference detected after Holm's
correction, a hollow one is not. No bars, so no axis is truncated.
"""

from __future__ import annotations

from pathlib import Path

from ..analysis.plotting import line_styles, loss_band
from .analysis import Analysis
from .studies import Study

LOSS_PNG, EFFECTS_PNG = "loss_curves.png", "effects.png"


def groups(study: Study) -> list:
    """The sequence lengths of a study with an x axis, or [0] for a flat study."""
    return sorted({r.x for r in study.rows})


def _title(x: int) -> str:
    return f"T = {x}" if x else ""


def write(study: Study, analysis: Analysis, folder: Path) -> list:
    """Writes the PNGs into folder; returns their names."""
    import matplotlib

    matplotlib.use("Agg")
    x_of = {r.name: r.x for r in study.rows}
    _losses(study, analysis, x_of, folder / LOSS_PNG)
    _effects(analysis, x_of, groups(study), folder / EFFECTS_PNG)
    return [LOSS_PNG, EFFECTS_PNG]


def _losses(study: Study, analysis: Analysis, x_of: dict, path: Path) -> None:
    import matplotlib.pyplot as plt

    xs = groups(study)
    fig, axes = plt.subplots(len(xs), 2, figsize=(13, 4.5 * len(xs)), squeeze=False)
    for (ax_all, ax_end), x in zip(axes, xs):
        done = [r for r in analysis.rows.values() if x_of[r.name] == x and r.curves]
        alpha = min(0.2, max(0.05, 0.6 / max(1, len(done))))  # many rows: fainter bands
        for row, style in zip(done, line_styles(len(done))):
            loss_band(ax_all, row.curves, row.name, band_alpha=alpha, **style)
            loss_band(ax_end, [c[len(c) // 2:] for c in row.curves], row.name, band_alpha=alpha, **style)
        ax_all.set_title(" ".join(filter(None, [_title(x), "whole run"])))
        ax_end.set_title(" ".join(filter(None, [_title(x), "second half (zoomed)"])))
        if done:
            ax_end.legend(fontsize=7, ncol=2)
    _save(fig, path)


def _effects(analysis: Analysis, x_of: dict, xs: list, path: Path) -> None:
    import matplotlib.pyplot as plt

    per_x = {x: [e for e in analysis.effects if x_of[e.row] == x] for x in xs}
    height = max(len(v) for v in per_x.values()) if per_x else 1
    fig, axes = plt.subplots(len(xs), 1, figsize=(10, len(xs) * (1.3 + 0.32 * height)), squeeze=False)
    for ax, x in zip(axes[:, 0], xs):
        for i, e in enumerate(reversed(per_x[x])):
            if e.diff is None:
                continue
            lo, hi = e.diff["ci95"] or (e.diff["mean"], e.diff["mean"])
            color = "tab:blue" if e.detected else "tab:gray"
            ax.errorbar([e.diff["mean"]], [i], xerr=[[e.diff["mean"] - lo], [hi - e.diff["mean"]]],
                        fmt="o", color=color, capsize=3,
                        markerfacecolor=color if e.detected else "white")
        ax.set_yticks(range(len(per_x[x])),
                      [f"{e.row} - {e.reference} (n={e.n})" for e in reversed(per_x[x])], fontsize=7)
        ax.axvline(0.0, color="black", linewidth=0.8)
        ax.set_xlabel("paired difference in val ppl, 95% CI (filled: Holm p < 0.05)")
        ax.set_title(_title(x))
    _save(fig, path)


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
