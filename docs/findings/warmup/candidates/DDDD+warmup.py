"""PLASA-Bench experiment model: study warmup, row DDDD+warmup (generated)."""

from benchmark.experiments.models import experiment_candidate

build_model, configure_optimizer = experiment_candidate(
    pattern='DDDD', schedule='progressive_sparse', warmup_steps=200)
