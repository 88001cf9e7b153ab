"""PLASA-Bench experiment model: study patterns, row PPPP (generated)."""

from benchmark.experiments.models import experiment_candidate

build_model, configure_optimizer = experiment_candidate(
    pattern='PPPP', schedule='progressive_sparse', warmup_steps=0)
