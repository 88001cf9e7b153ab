"""Structural and budget checks of a built model, before any training.

Rules (README "Rules"):
- parameters <= spec.max_params_ratio x the reference candidate's;
- forward FLOPs per token (FlopCounterMode, batch 1, T = seq_len) <= spec.max_flops_ratio x the
  reference's;
- the token embedding (an nn.Embedding with vocab_size rows) has width hidden_size;
- every layer has a lightning indexer: at least n_layers submodules whose name contains
  "indexer" and that own parameters;
- `layer_top_k`, when declared, is one int in [1, seq_len] per layer and not uniform.
"""

from __future__ import annotations

import torch
from torch.utils.flop_counter import FlopCounterMode

from .result import EvalFailure, check


def parameter_counts(model: torch.nn.Module, vocab: int) -> dict:
    seen, total, embedding = set(), 0, 0
    for module in model.modules():
        for p in module.parameters(recurse=False):
            if id(p) in seen:
                continue
            seen.add(id(p))
            total += p.numel()
            if isinstance(module, torch.nn.Embedding) and module.num_embeddings == vocab:
                embedding += p.numel()
    return {"total": total, "embedding": embedding, "non_embedding": total - embedding}


def flops_per_token(forward, seq_len: int, device: torch.device) -> int:
    ids = torch.zeros(1, seq_len, dtype=torch.long, device=device)
    with FlopCounterMode(display=False) as counter:
        forward(ids)
    return int(counter.get_total_flops() // seq_len)


def structure_checks(model: torch.nn.Module, spec) -> list:
    results = []
    embeddings = [m for m in model.modules()
                  if isinstance(m, torch.nn.Embedding) and m.num_embeddings == spec.vocab_size]
    widths = sorted({m.embedding_dim for m in embeddings})
    results.append(check("embedding_width", widths == [spec.hidden_size],
                         f"token embedding widths {widths}; required [{spec.hidden_size}] "
                         f"(an nn.Embedding({spec.vocab_size}, {spec.hidden_size}))"))
    indexers = [name for name, m in model.named_modules()
                if "indexer" in name.rsplit(".", 1)[-1].lower()
                and any(True for _ in m.parameters())]
    results.append(check("indexer_per_layer", len(indexers) >= spec.n_layers,
                         f"{len(indexers)} indexer modules with parameters ({', '.join(indexers[:8])}); "
                         f"required at least one per layer ({spec.n_layers}), named '*indexer*'"))
    top_k = getattr(model, "layer_top_k", None)
    if top_k is not None:
        ok = (isinstance(top_k, (list, tuple)) and len(top_k) == spec.n_layers
              and all(isinstance(k, int) and not isinstance(k, bool) and 1 <= k <= spec.seq_len
                      for k in top_k))
        detail = (f"layer_top_k={list(top_k) if isinstance(top_k, (list, tuple)) else top_k!r}; "
                  f"required {spec.n_layers} ints in [1, {spec.seq_len}]")
        if ok and len(set(top_k)) == 1 and spec.require_progressive:
            ok, detail = False, f"layer_top_k={list(top_k)} is uniform; the progressive principle " \
                                "requires k to differ between layers"
        results.append(check("layer_top_k", ok, detail))
    return results


def budget_checks(counts: dict, flops: int, spec) -> list:
    max_params = int(spec.reference_params * spec.max_params_ratio)
    max_flops = int(spec.reference_flops_per_token * spec.max_flops_ratio)
    return [
        check("param_budget", counts["total"] <= max_params,
              f"{counts['total']:,} parameters; limit {max_params:,} "
              f"({spec.max_params_ratio}x the reference's {spec.reference_params:,})"),
        check("flops_budget", flops <= max_flops,
              f"{flops:,} forward FLOPs per token; limit {max_flops:,} "
              f"({spec.max_flops_ratio}x the reference's {spec.reference_flops_per_token:,})"),
    ]


def raise_on_failure(stage: str, checks: list) -> None:
    failed = [c for c in checks if not c["passed"]]
    if failed:
        raise EvalFailure(stage, failed[0]["name"].split(":")[0],
                          "; ".join(f"{c['name']}: {c['detail']}" for c in failed), checks=checks)
