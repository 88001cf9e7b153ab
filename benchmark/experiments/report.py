"""summary.md and plots of a study, from its result JSON files.

Per row: validation perplexity mean +- std and 95% CI over seeds, combined_score, rank, step time,
and the original claim where one exists. Plots (PNG): training loss per row (mean over seeds with
a +-1 std band), validation perplexity with 95% CI error bars, and for studies with an x axis
(schedules) perplexity against sequence length, one line per series.
"""

from __future__ import annotations

import json
from pathlib import Path

from .. import stats
from ..fsutil import atomic_write
from ..plotting import loss_band


def load_runs(folder: Path, row: str) -> list:
    runs = []
    for path in sorted((folder / "runs" / row).glob("seed*.json")):
        try:
            runs.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            continue
    return runs


def row_stats(runs: list) -> dict:
    ok = [r for r in runs if r.get("valid")]
    ppl = [r["val_ppl"] for r in ok]
    return {"runs": len(runs), "valid": len(ok), "failed": [r.get("error") for r in runs if not r.get("valid")],
            "ppl": stats.summarize(ppl) if ppl else None,
            "score": stats.summarize([r["combined_score"] for r in ok]) if ok else None,
            "step_ms": stats.mean([r["timings"]["step_ms_median"] for r in ok]) if ok else None,
            "curves": [r.get("loss_curve") or [] for r in ok]}


def _table(study, table: dict) -> str:
    ranked = sorted((name for name in table if table[name]["ppl"]), key=lambda n: table[n]["ppl"]["mean"])
    rank = {name: i + 1 for i, name in enumerate(ranked)}
    lines = ["| rank | row | val_ppl mean +- std | 95% CI | combined_score | seeds | step ms | original claim |",
             "|---|---|---|---|---|---|---|---|"]
    for name in ranked + [n for n in table if n not in rank]:
        s = table[name]
        if s["ppl"]:
            ppl, ci = s["ppl"], s["ppl"]["ci95"]
            cells = [str(rank[name]), name, f"{ppl['mean']:.2f} +- {ppl['std']:.2f}",
                     f"[{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "-", f"{s['score']['mean']:.6f}",
                     f"{s['valid']}/{s['runs']}", f"{s['step_ms']:.1f}"]
        else:
            cells = ["-", name, "FAILED: " + "; ".join(str(e) for e in s["failed"][:1]) if s["failed"] else "no runs",
                     "-", "-", f"0/{s['runs']}", "-"]
        cells.append(study.claims.get(name, ""))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write(study, folder: Path, rows: list) -> Path:
    """Writes folder/summary.md and the PNGs; returns the summary's path."""
    table = {name: row_stats(load_runs(folder, name)) for name in rows}
    runs = [r for name in rows for r in load_runs(folder, name)]
    budget = sorted({(r.get("steps"), r.get("precision"), r.get("device")) for r in runs if r.get("valid")},
                    key=str)
    text = [f"# Study `{study.name}` ({study.version})", "", study.question, "",
            _table(study, table), "",
            "Budget of these runs (steps, precision, device): "
            + (", ".join(f"{s} steps, {p}, {d}" for s, p, d in budget) or "none yet") + ".",
            "Seeds: 42, 43, ...; every run passed the evaluator's causality and state probes unless "
            "listed as FAILED.", ""]
    plots = _plots(study, folder, table)
    text += [f"![{p.stem}]({p.name})" for p in plots]
    summary = folder / "summary.md"
    atomic_write(summary, ("\n".join(text) + "\n").encode())
    return summary


def _plots(study, folder: Path, table: dict) -> list:
    try:
        import matplotlib
    except ImportError:
        return []
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    paths = []
    done = {n: s for n, s in table.items() if s["ppl"]}
    if not done:
        return paths
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name, s in done.items():
        loss_band(ax, s["curves"], name)
    ax.legend(fontsize=7, ncol=2)
    paths.append(_save(fig, folder / "loss_curves.png"))

    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(done)), 4.5))
    names = sorted(done, key=lambda n: done[n]["ppl"]["mean"])
    means = [done[n]["ppl"]["mean"] for n in names]
    errs = [(done[n]["ppl"]["ci95"][1] - done[n]["ppl"]["mean"]) if done[n]["ppl"]["ci95"] else 0 for n in names]
    ax.bar(range(len(names)), means, yerr=errs, capsize=3)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel("validation perplexity (95% CI)")
    ax.set_ylim(min(m - e for m, e in zip(means, errs)) * 0.98, max(m + e for m, e in zip(means, errs)) * 1.02)
    paths.append(_save(fig, folder / "val_ppl.png"))

    rows = {r.name: r for r in study.rows}
    series = sorted({rows[n].series for n in done if rows[n].series})
    if series:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for name in series:
            points = sorted((rows[n].x, done[n]["ppl"]) for n in done if rows[n].series == name)
            xs = [x for x, _ in points]
            ax.errorbar(xs, [p["mean"] for _, p in points],
                        yerr=[(p["ci95"][1] - p["mean"]) if p["ci95"] else 0 for _, p in points],
                        marker="o", capsize=3, label=name)
        ax.set_xscale("log", base=2)
        ax.set_xlabel("sequence length")
        ax.set_ylabel("validation perplexity (95% CI)")
        ax.legend(fontsize=8)
        paths.append(_save(fig, folder / "ppl_vs_length.png"))
    return paths


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path
