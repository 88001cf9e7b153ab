"""PLASA-Bench experiment model: study patterns, row LPPL (generated)."""

from benchmark.experiments.models import experiment_candidate

build_model, configure_optimizer = experiment_candidate(
    pattern='LPPL', schedule='progressive_sparse', warmup_steps=0)
