"""PLASA-Bench experiment model: study patterns, row LDDL (generated)."""

from benchmark.experiments.models import experiment_candidate

build_model, configure_optimizer = experiment_candidate(
    pattern='LDDL', schedule='progressive_sparse', warmup_steps=0)
