"""PLASA-Bench experiment model: study schedules, row dense_to_sparse@64 (generated)."""

from benchmark.experiments.models import experiment_candidate

build_model, configure_optimizer = experiment_candidate(
    pattern='PPPPPP', schedule='dense_to_sparse', warmup_steps=0)
