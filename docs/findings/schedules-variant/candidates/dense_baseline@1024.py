"""PLASA-Bench experiment model: study schedules, row dense_baseline@1024 (generated)."""

from benchmark.experiments.models import experiment_candidate

build_model, configure_optimizer = experiment_candidate(
    pattern='PPPPPP', schedule='dense_baseline', warmup_steps=0)
