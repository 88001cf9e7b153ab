"""PLASA-Bench experiment model: study schedules, row reverse_progressive@1024 (generated)."""

from benchmark.experiments.models import experiment_candidate

build_model, configure_optimizer = experiment_candidate(
    pattern='PPPPPP', schedule='reverse_progressive', warmup_steps=0)
