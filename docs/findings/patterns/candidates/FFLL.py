"""PLASA-Bench experiment model: study patterns, row FFLL (generated)."""

from benchmark.experiments.models import experiment_candidate

build_model, configure_optimizer = experiment_candidate(
    pattern='FFLL', schedule='progressive_sparse', warmup_steps=0)
