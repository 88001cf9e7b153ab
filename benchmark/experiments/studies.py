"""The research questions as named, versioned studies. Each row is one model and its spec overrides.

- patterns:  4-layer patterns of F/P/D/L at the official budget.
- schedules: the six sparsity schedules x sequence lengths 64, 256, 1024, 6 PLASA layers. Tokens
             per step are held at 256 (the official 2 x 128) where possible: batch 4 at T = 64,
             1 at T = 256, and 1 at T = 1024 (1024 tokens per step: a batch cannot be smaller).
             Validation batches hold 4096 tokens.
- warmup:    DSA (k = T/2) with a dense indexer warm-up for the first 20% of the steps, vs DSA without
             warm-up, vs dense; all in the same total step budget.
The claims are what the original code reported, set beside our numbers in each summary;
CLAIMS_SOURCE says where they come from and why only their ranks compare.
"""

from __future__ import annotations

from dataclasses import dataclass, field

SCHEDULE_NAMES = ("dense_baseline", "uniform_sparse", "dense_to_sparse", "aggressive_middle",
                  "progressive_sparse", "reverse_progressive")
TOKENS_PER_STEP = 256
VAL_TOKENS_PER_BATCH = 4096
WARMUP_FRACTION = 0.2


@dataclass(frozen=True)
class Row:
    name: str
    pattern: str
    schedule: str = "progressive_sparse"
    warmup_fraction: float = 0.0  # share of the run's steps spent in the indexer warm-up
    overrides: dict = field(default_factory=dict)
    x: int = 0            # the x axis of a line plot (sequence length), 0 when none
    series: str = ""      # the line a row belongs to (schedule name), "" when none


@dataclass(frozen=True)
class Study:
    name: str
    version: str
    question: str
    rows: tuple
    claims: dict = field(default_factory=dict)  # row name -> what the original code claimed
    baseline: str = ""    # the row (or, with an x axis, the series) each row is tested against
    claims_source: str = ""  # where the claims come from, printed under the tables


def _length_overrides(seq_len: int, n_layers: int) -> dict:
    return {"seq_len": seq_len, "n_layers": n_layers,
            "batch_size": max(1, TOKENS_PER_STEP // seq_len),
            "val_batch_size": max(1, VAL_TOKENS_PER_BATCH // seq_len),
            "probe_windows": max(2, min(8, VAL_TOKENS_PER_BATCH // seq_len // 2))}


PATTERNS = ("PPPP", "FFFF", "LLLL", "LPPL", "PLPL", "LLPP", "PPLL", "LFFL", "FLFL", "LLFF", "FFLL",
            "DDDD", "LDDL", "DLDL", "LLDD", "DDLL")

CLAIMS_SOURCE = ("Original claim: what the original code reported, from runs that could see "
                 "future tokens, on overlapping train/validation windows, one seed each: compare ranks, "
                 "not values. Sources: {}.")
# pattern -> (validation perplexity, rank, patterns ranked) as the original READMEs report them:
# exp3's table of 11 F/P/L patterns, exp1's table of 8 F/D/L hybrids (its D rows; F rows repeat exp3)
ORIGINAL_PATTERN_PPL = {
    "PPPP": (73.81, 1, 11), "LPPL": (81.56, 2, 11), "PLPL": (121.72, 3, 11),
    "PPLL": (146.89, 4, 11), "LLPP": (153.83, 5, 11), "FFFF": (194.90, 6, 11),
    "LFFL": (221.58, 7, 11), "LLFF": (237.74, 8, 11), "FLFL": (250.02, 9, 11),
    "FFLL": (367.99, 10, 11), "LLLL": (916.43, 11, 11),
    "LDDL": (569.18, 5, 8), "LLDD": (598.67, 6, 8), "DLDL": (682.44, 7, 8), "DDLL": (873.12, 8, 8),
}

STUDIES = {
    "patterns": Study(
        "patterns", "patterns-1",
        "Does PLASA beat dense attention, and do PLASA + Gated DeltaNet hybrids beat dense + GDN "
        "hybrids, once every layer is causal?",
        tuple(Row(p, p) for p in PATTERNS),
        claims={p: f"original: {ppl:.2f} (rank {rank}/{n})"
                for p, (ppl, rank, n) in ORIGINAL_PATTERN_PPL.items()},
        baseline="FFFF",
        claims_source=CLAIMS_SOURCE.format(
            "validation perplexity (rank) of the F/P/L patterns from alpha-research "
            "benchmark/plasa_attention/exp3_plasa_gdn_hybrid/README.md, of the D hybrids from "
            "blueberry-llm experiments/exp1_dsa_gdn_hybrid/README.md (its 8-row table)")),
    "schedules": Study(
        "schedules", "schedules-1",
        "Does progressive sparsity beat uniform sparsity, across sequence lengths?",
        tuple(Row(f"{s}@{T}", "P" * 6, schedule=s, overrides=_length_overrides(T, 6), x=T, series=s)
              for s in SCHEDULE_NAMES for T in (64, 256, 1024)),
        claims={f"progressive_sparse@{T}": "original: 33.9% lower loss than uniform DSA "
                "(4.30 vs 6.51 at T = 128)" for T in (64, 256, 1024)},
        baseline="dense_baseline",
        claims_source=CLAIMS_SOURCE.format(
            "validation loss of all-PLASA (exp3) against the DSA hybrids' average (exp1), "
            "alpha-research benchmark/plasa_attention/exp3_plasa_gdn_hybrid/README.md")),
    "warmup": Study(
        "warmup", "warmup-1",
        "Does DSA with a dense indexer warm-up match dense attention?",
        (Row("DDDD+warmup", "DDDD", warmup_fraction=WARMUP_FRACTION), Row("DDDD", "DDDD"),
         Row("FFFF", "FFFF")),
        claims={"DDDD+warmup": "original: matches dense (both ~1.06 ppl, expected in exp4)"},
        baseline="FFFF",
        claims_source=CLAIMS_SOURCE.format(
            "the expected results of blueberry-llm "
            "experiments/exp4_deepseek_sparse_attention/QUICK_START.md (200 warm-up steps)")),
}


def get(name: str) -> Study:
    if name not in STUDIES:
        raise ValueError(f"unknown study {name!r}; choose one of {', '.join(STUDIES)}")
    return STUDIES[name]
