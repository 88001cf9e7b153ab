"""Adapters for program searches: OpenEvolve (evaluate, the cascade, configs/openevolve.yaml),
ShinkaEvolve (metrics.json / correct.json) and the feedback text their LLMs read."""
