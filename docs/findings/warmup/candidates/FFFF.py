"""PLASA-Bench experiment model: study warmup, row FFFF (generated)."""

from benchmark.experiments.models import experiment_candidate

build_model, configure_optimizer = experiment_candidate(
    pattern='FFFF', schedule='progressive_sparse', warmup_steps=0)
