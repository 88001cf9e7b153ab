"""summary.md and plots of a study, from its result JSON files.

Per row: validation perplexity mean +- std and 95% CI over seeds, Welch's and the paired-by-seed
p-value against the study's baseline, combined_score, rank, step time, and the original claim where
one exists (one table per sequence length for studies with an x axis). Plots (PNG): training loss
per row (mean over seeds with a +-1 std band), validation perplexity with 95% CI error bars, and for studies with an x axis
(schedules) perplexity against sequence length, one line per series.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..analysis import stats
from ..fsutil import atomic_write
from ..analysis.plotting import line_styles, loss_band


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
            "by_seed": {r.get("seed"): r["val_ppl"] for r in ok},
            "ppl": stats.summarize(ppl) if ppl else None,
            "score": stats.summarize([r["combined_score"] for r in ok]) if ok else None,
            "step_ms": _mean_known([r["timings"].get("step_ms_median") for r in ok]),
            "curves": [r.get("loss_curve") or [] for r in ok]}


def _baseline_row(study, row) -> str:
    """The row a row is compared with: the baseline row itself (flat studies) or the baseline
    series' row at the same x (studies with an x axis); "" when the study names none."""
    if not study.baseline:
        return ""
    if row.series:
        return next((r.name for r in study.rows if r.series == study.baseline and r.x == row.x), "")
    return study.baseline


def _table(study, rows: dict, table: dict, names: list) -> str:
    """One ranked table of `names`, with p-values against the baseline row."""
    ranked = sorted((n for n in names if table[n]["ppl"]), key=lambda n: table[n]["ppl"]["mean"])
    rank = {name: i + 1 for i, name in enumerate(ranked)}
    lines = ["| rank | row | val_ppl mean +- std | 95% CI | p vs baseline (Welch / paired) | combined_score "
             "| seeds | step ms | original claim |",
             "|---|---|---|---|---|---|---|---|---|"]
    for name in ranked + [n for n in names if n not in rank]:
        s = table[name]
        if s["ppl"]:
            ppl, ci = s["ppl"], s["ppl"]["ci95"]
            base = _baseline_row(study, rows[name])
            cells = [str(rank[name]), name, f"{ppl['mean']:.2f} +- {ppl['std']:.2f}",
                     f"[{ci[0]:.2f}, {ci[1]:.2f}]" if ci else "-",
                     "baseline" if base == name else _p_values(s, table.get(base)),
                     f"{s['score']['mean']:.6f}", f"{s['valid']}/{s['runs']}", f"{s['step_ms']:.1f}" if s["step_ms"] is not None else "-"]
        else:
            cells = ["-", name, "FAILED: " + "; ".join(str(e) for e in s["failed"][:1]) if s["failed"] else "no runs",
                     "-", "-", "-", f"0/{s['runs']}", "-"]
        cells.append(study.claims.get(name, ""))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _p_values(row: dict, base: dict) -> str:
    """"Welch p / paired p" of a row against its baseline; the paired test uses the seeds both have."""
    if not base or not base["ppl"]:
        return "-"
    seeds = sorted(set(row["by_seed"]) & set(base["by_seed"]))
    welch = stats.welch_p(list(row["by_seed"].values()), list(base["by_seed"].values()))
    paired = stats.paired_p([row["by_seed"][k] for k in seeds], [base["by_seed"][k] for k in seeds])
    return " / ".join(f"{p:.2g}" if p is not None else "-" for p in (welch, paired))


def _tables(study, rows: dict, table: dict) -> list:
    """One table for a flat study; one per x (sequence length) for a study with an x axis, since
    perplexities at different lengths do not rank against each other."""
    groups = sorted({rows[n].x for n in table})
    if groups == [0]:
        return [_table(study, rows, table, list(table))]
    out = []
    for x in groups:
        out += [f"### sequence length {x}" if x else "### other rows", "",
                _table(study, rows, table, [n for n in table if rows[n].x == x]), ""]
    return out


def write(study, folder: Path, rows: list) -> Path:
    """Writes folder/summary.md and the PNGs; returns the summary's path."""
    by_row = {name: load_runs(folder, name) for name in rows}
    table = {name: row_stats(runs) for name, runs in by_row.items()}
    runs = [r for row_runs in by_row.values() for r in row_runs]
    study_rows = {r.name: r for r in study.rows}
    budget = sorted({(r.get("steps"), r.get("precision"), r.get("device")) for r in runs if r.get("valid")},
                    key=str)
    baseline = (f" p vs baseline: Welch's t-test, and the t-test paired by seed (runs of one seed share "
                f"the data order), against {study.baseline}"
                + (" at the same length." if any(r.series for r in study.rows) else ".")
                if study.baseline else "")
    text = [f"# Study `{study.name}` ({study.version})", "", study.question, "",
            *_tables(study, study_rows, table), "",
            "Budget of these runs (steps, precision, device): "
            + (", ".join(f"{s} steps, {p}, {d}" for s, p, d in budget) or "none yet") + ".",
            "Seeds: 42, 43, ...; every run passed the evaluator's causality and state probes unless "
            "listed as FAILED." + baseline,
            *([study.claims_source] if study.claims_source else []), ""]
    plots = _plots(study, study_rows, folder, table)
    text += [f"![{p.stem}]({p.name})" for p in plots]
    summary = folder / "summary.md"
    atomic_write(summary, ("\n".join(text) + "\n").encode())
    return summary


def _plots(study, rows: dict, folder: Path, table: dict) -> list:
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
    fig, (ax_all, ax_end) = plt.subplots(1, 2, figsize=(13, 5))
    alpha = min(0.2, max(0.05, 0.6 / len(done)))  # many rows: fainter bands
    for (name, s), style in zip(done.items(), line_styles(len(done))):
        loss_band(ax_all, s["curves"], name, band_alpha=alpha, **style)
        loss_band(ax_end, [c[len(c) // 2:] for c in s["curves"]], name, band_alpha=alpha, **style)
    ax_all.set_title("whole run")
    ax_end.set_title("second half (zoomed)")
    ax_end.legend(fontsize=7, ncol=2)
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

    done_series = {rows[n].series for n in done}
    series = [n for n in dict.fromkeys(r.series for r in study.rows) if n and n in done_series]
    if series:
        paths.append(_length_plot(study, rows, done, series, folder / "ppl_vs_length.png"))
    return paths


def _length_plot(study, rows: dict, done: dict, series: list, path: Path) -> Path:
    """Perplexity against sequence length, one line per series (x slightly dodged so the error
    bars stay apart); beside it, the same relative to the baseline series at each length."""
    import matplotlib.pyplot as plt

    def points(name):
        return {rows[n].x: done[n]["ppl"] for n in done if rows[n].series == name}

    base = points(study.baseline) if study.baseline else {}
    fig, axes = plt.subplots(1, 2 if base else 1, figsize=(13 if base else 7, 4.5), squeeze=False)
    for i, (name, style) in enumerate(zip(series, line_styles(len(series)))):
        shift = 2 ** (0.03 * (i - (len(series) - 1) / 2))
        pts = sorted(points(name).items())
        half = [(p["ci95"][1] - p["mean"]) if p["ci95"] else 0 for _, p in pts]
        axes[0][0].errorbar([x * shift for x, _ in pts], [p["mean"] for _, p in pts], yerr=half,
                            marker="o", capsize=3, label=name, **style)
        if base:
            rel = [(x, p, h) for (x, p), h in zip(pts, half) if x in base]
            axes[0][1].errorbar([x * shift for x, _, _ in rel], [p["mean"] / base[x]["mean"] for x, p, _ in rel],
                                yerr=[h / base[x]["mean"] for x, _, h in rel], marker="o", capsize=3,
                                label=name, **style)
    for ax in axes[0]:
        ax.set_xscale("log", base=2)
        ax.set_xlabel("sequence length")
    axes[0][0].set_ylabel("validation perplexity (95% CI)")
    axes[0][0].legend(fontsize=8)
    if base:
        axes[0][1].axhline(1.0, color="grey", linewidth=0.8)
        axes[0][1].set_ylabel(f"perplexity / {study.baseline} at the same length")
    return _save(fig, path)


def _save(fig, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    import matplotlib.pyplot as plt

    plt.close(fig)
    return path


def _mean_known(values: list):
    known = [v for v in values if isinstance(v, (int, float))]
    return stats.mean(known) if known else None
