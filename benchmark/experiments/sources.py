"""What the original work claimed, and where: the figures the study reports set beside ours.

The original code's runs could see future tokens, trained on overlapping train/validation windows
and ran one seed each, so only the direction and rank of its figures compare with ours.
"""

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

SCHEDULES_DOC = (
    "Hypotheses, schedule definitions and expectations: the schedules document, "
    "Open-Superintelligence-Lab/deepseek-sparse-attention-research "
    "experiments/exp3_adaptive_per_layer_sparsity/README.md (commit 45fd107), sections "
    '"Sparsity Schedules", "Expected Results" and "Research Motivation" (Exp2\'s -41%). Its '
    "figures are validation losses of runs that could see future tokens, one seed each: compare "
    "directions, not values.")

# schedule -> the document's expectation at T = 64, 256, 1024 ("Expected Results", Hypothesis 1)
SCHEDULES_DOC_EXPECTED = {
    "dense_baseline": ("Good", "Good", "Best"),
    "uniform_sparse": ("OK", "OK", "Poor (-41%)"),
    "aggressive_middle": ("Good", "Good", "Good"),
    "progressive_sparse": ("Good", "OK", "OK"),
    "reverse_progressive": ("Poor", "Poor", "Poor"),
}

WARMUP_SOURCE = CLAIMS_SOURCE.format(
    "the expected results of blueberry-llm experiments/exp4_deepseek_sparse_attention/QUICK_START.md "
    "(200 warm-up steps before the training steps)")
