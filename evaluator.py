"""PLASA-Bench evaluator: `python evaluator.py CANDIDATE` or `evaluate(program_path, **options)`.

The options (device, overrides, search_id, features, cascade) are what a search config passes
through OpenEvolve's `evaluator.evaluator_args` (0.4.1+); see docs/search.md.

The candidate file must define (the whole contract, which this summary is tested against:
docs/contract.md)

    build_model(config) -> torch.nn.Module

(or a class `PLASAModel(vocab_size=, hidden_size=, n_layers=, n_heads=, max_seq_len=)`), where
`config` is a read-only view of the architecture (vocab_size, hidden_size, n_layers, n_heads,
seq_len, max_seq_len). `model(input_ids)` with input_ids a LongTensor (B, T) returns logits
(B, T, V), or `(logits, aux_loss)`, or an object with `.logits` and optional `.aux_loss`. The
evaluator computes the loss itself (fp32 cross-entropy); a candidate's `.loss` is ignored and
`aux_loss` (a finite scalar) enters the training objective only. Optional:
`configure_optimizer(model, config) -> torch.optim.Optimizer` and `lr_lambda(step) -> float`;
otherwise AdamW as in benchmark/spec.py. Required `model.layer_top_k`: one int k per layer, not
all equal (the reference's: 128, 32, 32, 64).

The official budget: 1000 steps of batch 2 x 128 tokens, 4 layers of hidden 128; a candidate may
have at most 1.10x the reference's parameters and 1.5x the FLOPs of its training step. The
evaluator owns data, tokenizer, batches, steps, seed, loss, validation and every check; the
candidate runs in isolated worker processes. The rules: docs/judge.md; the result: docs/results.md.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchmark.cli import main  # noqa: E402
from benchmark.search.integration import evaluate, evaluate_stage1, evaluate_stage2, evaluate_stage3  # noqa: E402,F401

if __name__ == "__main__":
    sys.exit(main())
