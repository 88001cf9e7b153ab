"""The research questions as named, versioned studies, each with its analysis declared up front.

A study is rows (one model and its spec overrides each), a baseline, and hypotheses: the claims of
the original work it tests, each a set of comparisons "row vs reference" with an expected
direction. Its family of comparisons, fixed before any run, is every row against the baseline
(at the same sequence length) plus every comparison a hypothesis or a control names; the report
tests each as a paired difference by seed and corrects the family's p-values by Holm.

- patterns:          4-layer patterns of F/P/D/L at the official budget.
- schedules:         the six sparsity schedules x T = 64, 256, 1024, 6 PLASA layers, defined as
                     the schedules document defines them (layers 0-1, 2-3, 4-5 take the early,
                     middle and late fraction). Tokens per step are held at 256 (the official
                     2 x 128) where possible: batch 4 at T = 64, 1 at T = 256, and 1 at T = 1024
                     (1024 tokens per step: a batch cannot be smaller). Validation batches hold
                     4096 tokens.
- schedules-variant: the same with our earlier resampling of the 4-layer table (layer i of 6 takes
                     fraction floor(4 i / 6)), which changes layer 4 of every non-uniform schedule.
- warmup:            DSA (k = T/2) with a dense indexer warm-up of 20% of the budget, inside the
                     budget (the main model loses those steps) and on top of it (the original
                     protocol), each beside DSA at the same main-model steps, and dense.
A run belongs to a row when its study version lies between the row's `since` and the study's
version: bump the version whenever a row's definition changes, and give unchanged rows `since`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .sources import (CLAIMS_SOURCE, ORIGINAL_PATTERN_PPL, SCHEDULES_DOC, SCHEDULES_DOC_EXPECTED,
                      WARMUP_SOURCE)

SCHEDULE_NAMES = ("dense_baseline", "uniform_sparse", "dense_to_sparse", "aggressive_middle",
                  "progressive_sparse", "reverse_progressive")
ADAPTIVE = ("dense_to_sparse", "aggressive_middle", "progressive_sparse")  # the document's proposals
LENGTHS = (64, 256, 1024)
TOKENS_PER_STEP = 256
VAL_TOKENS_PER_BATCH = 4096
WARMUP_FRACTION = 0.2
CLAIM_SEEDS = 5  # seeds a row needs before a comparison involving it may carry a claim


@dataclass(frozen=True)
class Row:
    name: str
    pattern: str
    schedule: str = "progressive_sparse"
    layer_map: str = "resample"   # how a 4-layer schedule maps onto n layers (models.LAYER_MAPS)
    warmup_fraction: float = 0.0  # indexer warm-up steps, as a share of the budget
    warmup_on_top: bool = False   # warm-up steps added to the budget instead of taken from it
    steps_fraction: float = 1.0   # the row's budget as a share of the study's budget
    overrides: dict = field(default_factory=dict)
    x: int = 0            # the sequence length of a study with an x axis, 0 when none
    series: str = ""      # the schedule a row belongs to, "" when none
    label: str = ""       # what the row is, in words
    since: str = ""       # the study version from which this definition holds ("" = the current)


@dataclass(frozen=True)
class Hypothesis:
    text: str             # the source's claim, in its words
    comparisons: tuple    # ((row, reference), ...): each tested as row - reference, paired by seed
    expect: str = "lower"  # "lower" / "higher": every row's val_ppl vs its reference; "same": no difference


@dataclass(frozen=True)
class Study:
    name: str
    version: str
    question: str
    rows: tuple
    baseline: str         # the row (or, with an x axis, the series) every row is tested against
    hypotheses: tuple = ()
    controls: tuple = ()  # further declared comparisons ((row, reference), ...), without a claim
    claims: dict = field(default_factory=dict)  # row name -> what the original work reported
    claims_source: str = ""  # where claims and hypotheses come from, printed under the tables


def row_steps(row: Row, budget: int) -> tuple:
    """(optimizer steps, warm-up steps) of a row in a study run with `budget` steps; the main
    model trains for the difference."""
    warmup = int(round(row.warmup_fraction * budget))
    main = int(round(row.steps_fraction * budget))
    return (main + warmup if row.warmup_on_top else main), warmup


def reference_of(study: Study, row: Row) -> str:
    """The baseline row a row is compared with: the baseline itself, or the baseline series'
    row at the row's sequence length."""
    if row.series:
        return next(r.name for r in study.rows if r.series == study.baseline and r.x == row.x)
    return study.baseline


def family(study: Study) -> list:
    """The study's comparisons (row, reference), in a fixed order, each pair once: every
    non-baseline row against the baseline, then the hypotheses', then the controls'."""
    pairs = [(r.name, reference_of(study, r)) for r in study.rows if reference_of(study, r) != r.name]
    pairs += [pair for h in study.hypotheses for pair in h.comparisons] + list(study.controls)
    out, seen = [], set()
    for row, ref in pairs:
        if frozenset((row, ref)) not in seen:
            seen.add(frozenset((row, ref)))
            out.append((row, ref))
    return out


def accepted_versions(study: Study, row: Row) -> set:
    """Study versions whose runs of `row` are runs of its current definition."""
    prefix, current = study.version.rsplit("-", 1)
    first = int(row.since.rsplit("-", 1)[1]) if row.since else int(current)
    return {f"{prefix}-{n}" for n in range(first, int(current) + 1)}


def _length_overrides(seq_len: int, n_layers: int) -> dict:
    return {"seq_len": seq_len, "n_layers": n_layers,
            "batch_size": max(1, TOKENS_PER_STEP // seq_len),
            "val_batch_size": max(1, VAL_TOKENS_PER_BATCH // seq_len),
            "probe_windows": max(2, min(8, VAL_TOKENS_PER_BATCH // seq_len // 2))}


PATTERNS = ("PPPP", "FFFF", "LLLL", "LPPL", "PLPL", "LLPP", "PPLL", "LFFL", "FLFL", "LLFF", "FFLL",
            "DDDD", "LDDL", "DLDL", "LLDD", "DDLL")
# hybrid with a sparse letter -> its dense twin (the same GDN placement with F)
TWINS = {p: p.replace(s, "F") for s in "PD" for p in PATTERNS if s in p and "L" in p}


def _twins(letter: str) -> tuple:
    return tuple((p, f) for p, f in TWINS.items() if letter in p)


def _at(schedule: str, T: int) -> str:
    return f"{schedule}@{T}"


def _schedule_hypotheses() -> tuple:
    others = [s for s in SCHEDULE_NAMES if s != "aggressive_middle"]
    return (
        Hypothesis('Hypothesis 1, "Aggressive-Middle wins": it performs best at every length',
                   tuple((_at("aggressive_middle", T), _at(s, T)) for T in LENGTHS for s in others)),
        Hypothesis('Hypothesis 2, "Aggressive-Middle > Uniform (validates middle redundancy)"',
                   tuple((_at("aggressive_middle", T), _at("uniform_sparse", T)) for T in LENGTHS)),
        Hypothesis('Hypothesis 2, "Progressive > Reverse-Progressive (validates early foundation '
                   'importance)"',
                   tuple((_at("progressive_sparse", T), _at("reverse_progressive", T)) for T in LENGTHS)),
        Hypothesis('Hypothesis 2, "Any adaptive > Uniform at 1024 (solves Exp2 failure)", read as '
                   'each adaptive schedule the document proposes (Reverse-Progressive is its control)',
                   tuple((_at(s, 1024), _at("uniform_sparse", 1024)) for s in ADAPTIVE)),
        Hypothesis('Exp2\'s result the document starts from: uniform sparse attention is "-41% '
                   'worse" than dense at 1024 tokens (loss 6.91 vs 4.10)',
                   ((_at("uniform_sparse", 1024), _at("dense_baseline", 1024)),), expect="higher"),
    )


def _schedules(name: str, version: str, layer_map: str, definition: str) -> Study:
    return Study(
        name, version,
        "Do the schedules document's hypotheses hold: which per-layer sparsity schedule is best, "
        f"and does any beat uniform sparsity, across sequence lengths? Schedules {definition}.",
        tuple(Row(_at(s, T), "P" * 6, schedule=s, layer_map=layer_map,
                  overrides=_length_overrides(T, 6), x=T, series=s)
              for s in SCHEDULE_NAMES for T in LENGTHS),
        baseline="uniform_sparse",
        hypotheses=_schedule_hypotheses(),
        claims={_at(s, T): f"document expects: {word}" for s, words in SCHEDULES_DOC_EXPECTED.items()
                for T, word in zip(LENGTHS, words)},
        claims_source=SCHEDULES_DOC)


STUDIES = {
    "patterns": Study(
        "patterns", "patterns-1",
        "Does PLASA beat dense attention, and do PLASA + Gated DeltaNet hybrids beat dense + GDN "
        "hybrids, once every layer is causal?",
        tuple(Row(p, p) for p in PATTERNS),
        baseline="FFFF",
        hypotheses=(
            Hypothesis("exp3: PLASA beats dense attention (PPPP 73.81 vs FFFF 194.90 val ppl)",
                       (("PPPP", "FFFF"),)),
            Hypothesis("exp3: every PLASA + GDN hybrid beats its dense + GDN twin (81.56-153.83 vs "
                       "221.58-367.99)", _twins("P")),
            Hypothesis("exp1: every DSA + GDN hybrid is worse than its dense + GDN twin (569.18-873.12 "
                       "vs 221.58-367.99)", _twins("D"), expect="higher"),
        ),
        claims={p: f"original: {ppl:.2f} (rank {rank}/{n})"
                for p, (ppl, rank, n) in ORIGINAL_PATTERN_PPL.items()},
        claims_source=CLAIMS_SOURCE.format(
            "validation perplexity (rank) of the F/P/L patterns from alpha-research "
            "benchmark/plasa_attention/exp3_plasa_gdn_hybrid/README.md, of the D hybrids from "
            "blueberry-llm experiments/exp1_dsa_gdn_hybrid/README.md (its 8-row table)")),
    "schedules": _schedules("schedules", "schedules-2", "thirds",
                            "as the document defines them for 6 layers: layers 0-1, 2-3 and 4-5 "
                            "take the early, middle and late fraction (progressive: 1, 1, 1/4, 1/4, "
                            "1/2, 1/2)"),
    "schedules-variant": _schedules("schedules-variant", "schedules-1", "resample",
                                    "in our earlier variant, not the document's definition: layer "
                                    "i of 6 takes the 4-layer fraction floor(4 i / 6), so layer 4 "
                                    "differs in every non-uniform schedule (progressive: 1, 1, 1/4, "
                                    "1/4, 1/4, 1/2)"),
    "warmup": Study(
        "warmup", "warmup-2",
        "Does DSA with a dense indexer warm-up match dense attention, and what does the warm-up "
        "itself do once the main model gets the same number of steps?",
        (Row("FFFF", "FFFF", label="dense attention", since="warmup-1"),
         Row("DDDD", "DDDD", label="DSA (k = T/2), no warm-up", since="warmup-1"),
         Row("DDDD+warmup", "DDDD", warmup_fraction=WARMUP_FRACTION, since="warmup-1",
             label="warm-up inside the budget: the first 20% of the steps warm up the indexer, "
                   "the main model gets the other 80%"),
         Row("DDDD+warmup-on-top", "DDDD", warmup_fraction=WARMUP_FRACTION, warmup_on_top=True,
             label="warm-up on top of the budget (the original protocol): 20% extra steps warm up "
                   "the indexer, then the main model gets the whole budget"),
         Row("DDDD-short", "DDDD", steps_fraction=1 - WARMUP_FRACTION,
             label="DSA without warm-up, 80% of the budget: the main-model steps of DDDD+warmup")),
        baseline="FFFF",
        hypotheses=(
            Hypothesis("exp4: DSA with a dense indexer warm-up (200 steps before training) matches "
                       "dense attention (both ~1.06 ppl expected)",
                       (("DDDD+warmup-on-top", "FFFF"),), expect="same"),
        ),
        controls=(("DDDD+warmup", "DDDD-short"), ("DDDD+warmup-on-top", "DDDD"),
                  ("DDDD-short", "DDDD")),
        claims={"DDDD+warmup-on-top": "original: matches dense (both ~1.06 ppl, expected in exp4)"},
        claims_source=WARMUP_SOURCE),
}


def get(name: str) -> Study:
    if name not in STUDIES:
        raise ValueError(f"unknown study {name!r}; choose one of {', '.join(STUDIES)}")
    return STUDIES[name]
