"""The pre-declared analysis of a study, from its runs: per-row summaries, the family of paired
comparisons with Holm-corrected p-values, and a verdict for each hypothesis, in words made from
those numbers.

Every comparison is row - reference in validation perplexity, paired by seed (the seeds both rows
have valid runs of): the mean difference, its Student-t 95% interval and the paired t-test's p.
The family is studies.family(study), fixed before any run; Holm's step-down correction runs over
all of it (a comparison without data counts as p = 1). A difference is "detected" when its Holm p
is below ALPHA; a comparison with fewer than CLAIM_SEEDS pairs is marked as below the seeds a
claim needs, whatever its p.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

from ..analysis import stats
from .results import Collection
from .studies import CLAIM_SEEDS, Study, family

ALPHA = 0.05
BELOW = f"below the {CLAIM_SEEDS} seeds a claim needs"


@dataclass
class RowSummary:
    name: str
    by_seed: dict         # seed -> val_ppl of the valid runs
    failed: list          # errors of the failed runs
    ppl: Optional[dict]   # stats.summarize of the valid runs' val_ppl
    steps: list           # distinct optimizer steps of the runs
    step_ms: Optional[float]
    layer_top_k: Optional[list]
    curves: list          # loss curves of the valid runs


@dataclass
class Effect:
    row: str
    reference: str
    seeds: list                 # the seeds paired
    diff: Optional[dict]        # stats.paired_difference of row - reference
    relative: Optional[float]   # the mean difference in % of the reference's mean over those seeds
    holm: Optional[float] = None

    @property
    def n(self) -> int:
        return len(self.seeds)

    @property
    def detected(self) -> bool:
        return self.holm is not None and self.holm < ALPHA

    def numbers(self) -> str:
        d = self.diff
        ci = f" [{d['ci95'][0]:+.2f}, {d['ci95'][1]:+.2f}]" if d["ci95"] else ""
        return f"diff {d['mean']:+.2f}{ci} ppl ({self.relative:+.1f}%), Holm p = {fmt_p(self.holm)}"

    @property
    def tested(self) -> bool:
        return self.diff is not None and self.diff["p"] is not None

    def reading(self) -> str:
        """What the numbers say, in words: lower / higher than the reference, or no difference."""
        if not self.tested:
            return f"untested: {self.n} paired seed{'s' if self.n != 1 else ''}"
        if not self.detected:
            return "no difference detected"
        return f"{'lower' if self.diff['mean'] < 0 else 'higher'} than {self.reference}"

    def words(self) -> str:
        """The reading with its numbers, e.g. "no difference detected (diff +0.30 [-1.20, +1.80]
        ppl (+0.2%), Holm p = 1.00; n = 5)"."""
        if not self.tested:
            return self.reading()
        return (f"{self.reading()} ({self.numbers()}; n = {self.n}"
                + (f", {BELOW})" if self.n < CLAIM_SEEDS else ")"))


@dataclass
class Verdict:
    text: str
    expect: str
    effects: list
    verdict: str


def fmt_p(p: Optional[float]) -> str:
    if p is None:
        return "-"
    return f"{p:.2f}" if p >= 0.095 else f"{p:.2g}"


def summarize_row(name: str, runs: dict) -> RowSummary:
    ok = {seed: r for seed, r in runs.items() if r.get("valid")}
    ppl = [r["val_ppl"] for r in ok.values()]
    times = [r["timings"].get("step_ms_median") for r in ok.values() if isinstance(r.get("timings"), dict)]
    times = [t for t in times if isinstance(t, (int, float))]
    return RowSummary(name, {seed: r["val_ppl"] for seed, r in ok.items()},
                      [r.get("error") for r in runs.values() if not r.get("valid")],
                      stats.summarize(ppl) if ppl else None,
                      sorted({r.get("steps") for r in runs.values() if r.get("steps")}),
                      stats.mean(times) if times else None,
                      next((r.get("layer_top_k") for r in ok.values() if r.get("layer_top_k")), None),
                      [r.get("loss_curve") or [] for r in ok.values()])


def effect(rows: dict, row: str, reference: str, holm: Optional[float] = None) -> Effect:
    a, b = rows[row].by_seed, rows[reference].by_seed
    common = sorted(set(a) & set(b))
    diff = stats.paired_difference([a[s] for s in common], [b[s] for s in common])
    relative = 100 * diff["mean"] / stats.mean([b[s] for s in common]) if diff else None
    return Effect(row, reference, common, diff, relative, holm)


def verdict(expect: str, effects: list) -> str:
    """A hypothesis expecting every row `lower` / `higher` than its reference, or the `same`."""
    tested = [e for e in effects if e.tested]
    if not tested:
        return "untested: runs missing"
    sign = {"lower": -1, "higher": 1, "same": 0}[expect]
    against = [e for e in tested if e.detected and (sign == 0 or e.diff["mean"] * sign < 0)]
    agree = [e for e in tested if e.detected and sign and e.diff["mean"] * sign > 0]
    if against:
        out = (f"contradicted: {len(against)} of {len(effects)} comparisons detect a difference"
               + ("" if sign == 0 else " the other way"))
    elif sign == 0:
        out = "not contradicted: no difference detected (which shows no equivalence; see the intervals)"
    elif len(agree) == len(effects):
        out = "holds"
    else:
        out = f"not shown: {len(agree)} of {len(effects)} comparisons detect the expected difference"
    if len(tested) < len(effects):
        out += f"; {len(effects) - len(tested)} comparisons untested (runs missing)"
    if any(e.n < CLAIM_SEEDS for e in tested):
        out += f"; {BELOW}"
    return out


@dataclass
class Analysis:
    rows: dict       # row -> RowSummary
    effects: list    # the family, in studies.family order, with Holm p
    verdicts: list   # one per hypothesis


def analyse(study: Study, collection: Collection) -> Analysis:
    rows = {r.name: summarize_row(r.name, collection.runs.get(r.name, {})) for r in study.rows}
    effects = [effect(rows, row, ref) for row, ref in family(study)]
    for e, p in zip(effects, stats.holm([e.diff["p"] if e.diff else None for e in effects])):
        e.holm = p
    holm_of = {frozenset((e.row, e.reference)): e.holm for e in effects}
    verdicts = []
    for h in study.hypotheses:
        hyp_effects = [effect(rows, row, ref, holm_of[frozenset((row, ref))]) for row, ref in h.comparisons]
        verdicts.append(Verdict(h.text, h.expect, hyp_effects, verdict(h.expect, hyp_effects)))
    return Analysis(rows, effects, verdicts)
