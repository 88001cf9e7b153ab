"""summary.md and figures of a study, from its run files; nothing is run.

The text is a function of the run files and the study's declaration only (render), so a test can
recompute it from the committed runs and compare. Sections: the hypotheses and whether each holds,
the family of paired comparisons (difference by seed with 95% CI, paired p, Holm p, reading), the
rows (mean +- std over seeds, layer k, steps, step time, the original claim), and the runs used,
left out and missing, with the commands that regenerate the report and produce the missing runs.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from pathlib import Path

from ..fsutil import atomic_write
from ..judge.runner import REPO_ROOT
from ..spec import SPEC
from . import figures
from .analysis import ALPHA, BELOW, Analysis, analyse, fmt_p
from .results import Collection, collect
from .studies import CLAIM_SEEDS, Study, family

log = logging.getLogger(__name__)


def commands(study: Study, folder: Path) -> dict:
    """The command lines that regenerate the report and produce the missing runs."""
    out = Path(folder).resolve().parent
    out = os.path.relpath(out, REPO_ROOT) if out.is_relative_to(REPO_ROOT) else str(out)
    base = f"python -m benchmark experiment {study.name}"
    return {"report": f"{base} --report-only --out {out}",
            "runs": f"{base} --seeds {CLAIM_SEEDS} --out {out}"}


def _by_length(study: Study, names: list) -> list:
    """[(title, names)]: one group per sequence length of a study with an x axis, else one."""
    x_of = {r.name: r.x for r in study.rows}
    xs = sorted({x_of[n] for n in names})
    return [(f"### T = {x}" if x else "", [n for n in names if x_of[n] == x]) for x in xs]


def _hypotheses(analysis: Analysis) -> list:
    lines = ["## Hypotheses", ""]
    for i, v in enumerate(analysis.verdicts, 1):
        expected = {"lower": "each row lower than its reference", "higher": "each row higher than its "
                    "reference", "same": "no difference from its reference"}[v.expect]
        lines.append(f"{i}. {v.text}. Expected: {expected}. **{v.verdict}.**")
        lines += [f"   - {e.row} vs {e.reference}: {e.words()}" for e in v.effects]
    return lines + [""]


def _comparisons(study: Study, analysis: Analysis) -> list:
    lines = [f"## Comparisons: the study's family of {len(analysis.effects)}, Holm-corrected together", ""]
    for title, names in _by_length(study, list(dict.fromkeys(e.row for e in analysis.effects))):
        lines += [title, ""] if title else []
        lines += ["| row - reference | seeds paired | diff [95% CI] (val ppl) | relative | paired p | Holm p "
                  "| reading |", "|---|---|---|---|---|---|---|"]
        for e in (e for e in analysis.effects if e.row in names):
            d = e.diff
            cells = [f"{e.row} - {e.reference}", str(e.n)]
            if e.tested:
                lo, hi = d["ci95"]
                cells += [f"{d['mean']:+.2f} [{lo:+.2f}, {hi:+.2f}]", f"{e.relative:+.1f}%",
                          fmt_p(d["p"]), fmt_p(e.holm)]
            else:
                cells += ["-", "-", "-", "-"]
            reading = e.reading() + (f"; {BELOW}" if e.tested and e.n < CLAIM_SEEDS else "")
            lines.append("| " + " | ".join(cells + [reading]) + " |")
        lines.append("")
    return lines


def _rows(study: Study, analysis: Analysis) -> list:
    labelled = any(r.label for r in study.rows)
    lines = ["## Rows", ""]
    for title, names in _by_length(study, [r.name for r in study.rows]):
        lines += [title, ""] if title else []
        lines += ["| row |" + (" what |" if labelled else "") + " layer k | steps | valid / runs "
                  "| val_ppl mean +- std | step ms | original claim |",
                  "|---|" + ("---|" if labelled else "") + "---|---|---|---|---|---|"]
        for row in (r for r in study.rows if r.name in names):
            s = analysis.rows[row.name]
            runs = len(s.by_seed) + len(s.failed)
            cells = [row.name] + ([row.label] if labelled else []) + [
                ", ".join(map(str, s.layer_top_k)) if s.layer_top_k else "-",
                ", ".join(map(str, s.steps)) or "-",
                f"{len(s.by_seed)} / {runs}" + (f" ({BELOW})" if runs and len(s.by_seed) < CLAIM_SEEDS else ""),
                f"{s.ppl['mean']:.2f} +- {s.ppl['std']:.2f}" if s.ppl else
                ("FAILED: " + str(s.failed[0]) if s.failed else "no runs"),
                f"{s.step_ms:.1f}" if s.step_ms is not None else "-", study.claims.get(row.name, "")]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return lines


def _runs(study: Study, folder: Path, collection: Collection) -> list:
    runs = [r for by_seed in collection.runs.values() for r in by_seed.values()]
    seeds = sorted({r.get("seed") for r in runs})
    budget = sorted({(r.get("precision"), r.get("device"), (r.get("environment") or {}).get("threads"))
                     for r in runs}, key=str)
    cmd = commands(study, folder)
    lines = ["## Runs", "",
             (f"Runs used: {len(runs)}, seeds {', '.join(map(str, seeds))}, evaluator {collection.spec_version}, "
              + "; ".join(f"{p}, {d}, {t} thread{'s' if t != 1 else ''}" for p, d, t in budget) + ". "
              "Every run passed the evaluator's causality and state probes unless its row shows FAILED.")
             if runs else "No runs yet."]
    if collection.left_out:
        reasons = Counter(why for _, why in collection.left_out)
        lines.append("Left out (never mixed in): " + "; ".join(f"{n} run files of {why}"
                                                               for why, n in sorted(reasons.items())) + ".")
    missing = collection.missing(study)
    if collection.spec_version and collection.spec_version != SPEC.version:
        lines.append(f"These runs were made by evaluator {collection.spec_version}; the evaluator is now "
                     f"{SPEC.version}, so the command below re-runs every run of the study with it.")
    if missing:
        by_seeds = {}
        for row, s in missing.items():
            by_seeds.setdefault(tuple(s), []).append(row)
        lines.append(f"Missing for the {CLAIM_SEEDS} seeds a claim needs: " + "; ".join(
            f"seeds {', '.join(map(str, s))} of " + ("every row" if len(rows) == len(study.rows) else ", ".join(rows))
            for s, rows in by_seeds.items()) + ".")
    lines += ["", f"- Regenerate this report from the run files: `{cmd['report']}`",
              f"- Produce the missing runs (keeps every current run) and then the report: `{cmd['runs']}`", ""]
    return lines


def render(study: Study, folder: Path) -> tuple:
    """(summary.md text, analysis, figure names) of the study's runs under folder; figures only
    when there are runs."""
    collection = collect(study, folder)
    analysis = analyse(study, collection)
    plots = [figures.LOSS_PNG, figures.EFFECTS_PNG] if collection.runs else []
    text = [f"# Study `{study.name}` ({study.version})", "", study.question, "",
            f"How to read: each comparison is row - reference in validation perplexity, paired by seed "
            f"(runs of one seed share the data order), with the 95% t interval of the difference and the "
            f"paired t-test (the interval is per comparison, not corrected); Holm's correction runs over the study's {len(family(study))} comparisons, "
            f"declared in benchmark/experiments/studies.py before any run (every row against "
            f"{study.baseline}" + (" at the same length" if any(r.series for r in study.rows) else "")
            + ", plus those its hypotheses and controls name). A difference is detected at Holm p < "
            f"{ALPHA}; a claim needs {CLAIM_SEEDS} seeds. Negative: the row has the lower perplexity.", "",
            *(_hypotheses(analysis) if study.hypotheses else []), *_comparisons(study, analysis),
            *_rows(study, analysis), *_runs(study, folder, collection),
            *([study.claims_source, ""] if study.claims_source else []),
            *[f"![{Path(p).stem}]({p})" for p in plots]]
    return "\n".join(text) + "\n", analysis, plots


def write(study: Study, folder: Path) -> Path:
    """Writes folder/summary.md and the figures; returns the summary's path."""
    text, analysis, plots = render(study, folder)
    if plots:
        try:
            figures.write(study, analysis, folder)
        except ImportError:
            log.warning("matplotlib is not installed: %s has no figures", folder)
    summary = folder / "summary.md"
    atomic_write(summary, text.encode())
    return summary
