"""PLASA-Bench experiment model: study schedules, row uniform_sparse@256 (generated)."""

from benchmark.experiments.models import experiment_candidate

build_model, configure_optimizer = experiment_candidate(
    pattern='PPPPPP', schedule='uniform_sparse', warmup_steps=0)
