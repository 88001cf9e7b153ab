"""PLASA-Bench experiment model: study patterns, row LFFL (generated)."""

from benchmark.experiments.models import experiment_candidate

build_model, configure_optimizer = experiment_candidate(
    pattern='LFFL', schedule='progressive_sparse', warmup_steps=0)
