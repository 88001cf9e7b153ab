"""PLASA-Bench experiment model: study patterns, row LLLL (generated)."""

from benchmark.experiments.models import experiment_candidate

build_model, configure_optimizer = experiment_candidate(
    pattern='LLLL', schedule='progressive_sparse', warmup_steps=0)
