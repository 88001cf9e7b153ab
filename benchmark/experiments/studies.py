"""The research questions as named, versioned studies. Each row is one model and its spec overrides.

- patterns:  4-layer patterns of F/P/D/L at the official budget.
- schedules: the six sparsity schedules x sequence lengths 64, 256, 1024, 6 PLASA layers. Tokens
             per step are held at 256 (the official 2 x 128) where possible: batch 4 at T = 64,
             1 at T = 256, and 1 at T = 1024 (1024 tokens per step: a batch cannot be smaller).
             Validation batches hold 4096 tokens.
- warmup:    DSA (k = T/2) with a dense indexer warm-up for the first 20% of the steps, vs DSA without
             warm-up, vs dense; all in the same total step budget.
The claims are those the original code reported, for the summary to set beside our numbers.
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


def _length_overrides(seq_len: int, n_layers: int) -> dict:
    return {"seq_len": seq_len, "n_layers": n_layers,
            "batch_size": max(1, TOKENS_PER_STEP // seq_len),
            "val_batch_size": max(1, VAL_TOKENS_PER_BATCH // seq_len),
            "probe_windows": max(2, min(8, VAL_TOKENS_PER_BATCH // seq_len // 2))}


PATTERNS = ("PPPP", "FFFF", "LLLL", "LPPL", "PLPL", "LLPP", "PPLL", "LFFL", "FLFL", "LLFF", "FFLL",
            "DDDD", "LDDL", "DLDL", "LLDD", "DDLL")

STUDIES = {
    "patterns": Study(
        "patterns", "patterns-1",
        "Does PLASA beat dense attention, and do PLASA + Gated DeltaNet hybrids beat dense + GDN "
        "hybrids, once every layer is causal?",
        tuple(Row(p, p) for p in PATTERNS),
        claims={"PPPP": "original: PLASA beats dense attention by 62% perplexity",
                "LPPL": "original: PLASA + GDN hybrids beat dense + GDN hybrids",
                "LLLL": "original: all-GDN came last"},
        baseline="FFFF"),
    "schedules": Study(
        "schedules", "schedules-1",
        "Does progressive sparsity beat uniform sparsity, across sequence lengths?",
        tuple(Row(f"{s}@{T}", "P" * 6, schedule=s, overrides=_length_overrides(T, 6), x=T, series=s)
              for s in SCHEDULE_NAMES for T in (64, 256, 1024)),
        claims={f"progressive_sparse@{T}": "original: progressive beats uniform sparsity"
                for T in (64, 256, 1024)},
        baseline="dense_baseline"),
    "warmup": Study(
        "warmup", "warmup-1",
        "Does DSA with a dense indexer warm-up match dense attention?",
        (Row("DDDD+warmup", "DDDD", warmup_fraction=WARMUP_FRACTION), Row("DDDD", "DDDD"),
         Row("FFFF", "FFFF")),
        claims={"DDDD+warmup": "original: DSA with an indexer warm-up matches dense"},
        baseline="FFFF"),
}


def get(name: str) -> Study:
    if name not in STUDIES:
        raise ValueError(f"unknown study {name!r}; choose one of {', '.join(STUDIES)}")
    return STUDIES[name]
