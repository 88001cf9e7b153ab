"""PLASA-Bench experiment model: study schedules, row aggressive_middle@1024 (generated)."""

from benchmark.experiments.models import experiment_candidate

build_model, configure_optimizer = experiment_candidate(
    pattern='PPPPPP', schedule='aggressive_middle', warmup_steps=0)
