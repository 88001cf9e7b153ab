"""PLASA-Bench experiment model: study patterns, row DLDL (generated)."""

from benchmark.experiments.models import experiment_candidate

build_model, configure_optimizer = experiment_candidate(
    pattern='DLDL', schedule='progressive_sparse', warmup_steps=0)
