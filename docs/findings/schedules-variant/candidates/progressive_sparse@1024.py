"""PLASA-Bench experiment model: study schedules, row progressive_sparse@1024 (generated)."""

from benchmark.experiments.models import experiment_candidate

build_model, configure_optimizer = experiment_candidate(
    pattern='PPPPPP', schedule='progressive_sparse', warmup_steps=0)
