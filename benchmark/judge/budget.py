"""The judge's structural and budget verdicts (README "Rules").

Decided from what the judge holds, never from a worker's word alone:
- parameters: the elements of the trained state dict the training worker hands over (every
  parameter and persistent buffer, in fp32 equivalents: an 8-byte element counts twice, so two
  fp32 values cannot hide in one float64; tensors with identical contents, such as tied weights,
  count once) <= spec.max_params_ratio x the reference's. The scoring worker must rebuild the model from
  exactly this state (strict load + the replay probe), so nothing trained can hide outside it;
- token embedding: every tensor with a vocab_size-long dimension has at most vocab_size x
  hidden_size elements (no wider embedding or output layer);
- indexers: every layer whose declared k is below seq_len has its own lightning indexer, a module
  whose path has a part containing "indexer" (``blocks.1.attn.indexer``, ``indexers.1``) and that
  owns trained tensors;
- ``layer_top_k`` (required): n_layers ints in [1, seq_len], not all equal;
- compute: the FLOPs of one whole training step (train-mode forward, backward, optimizer step, on
  real training text; counted by FlopCounterMode in the training worker) <= spec.max_flops_ratio x
  the reference's; and, since that count comes from the candidate's process, the judge reads the
  worker's CPU time per step from /proc and rejects a step that costs far more than its counted
  FLOPs allow on this machine (spec.min_cpu_efficiency of a measured matmul rate, with the
  reference's FLOPs as a floor so small, slow-but-honest models pass).
"""

from __future__ import annotations

import hashlib
import re

import torch

from ..result import EvalFailure, check


def parameter_counts(state: dict, vocab: int) -> dict:
    """Elements of the state; a tensor whose contents repeat another's (tied weights) counts once,
    unless it is constant (zero-initialised norms are not ties). embedding = vocab-long tensors."""
    seen, total, embedding = set(), 0, 0
    for name, tensor in state.items():
        if tensor.numel() > 1 and bool((tensor != tensor.reshape(-1)[0]).any()):
            digest = hashlib.blake2b(tensor.contiguous().view(-1).view(torch.uint8).numpy().tobytes(),
                                     digest_size=16)
            key = (str(tensor.dtype), tuple(tensor.shape), digest.hexdigest())
            if key in seen:
                continue
            seen.add(key)
        size = tensor.numel() * max(1, tensor.element_size() // 4)  # 8-byte types hold two fp32
        total += size
        if vocab in tensor.shape:
            embedding += size
    return {"total": total, "embedding": embedding, "non_embedding": total - embedding}


def indexer_modules(names) -> list:
    """Module paths of indexers: up to the first part naming an indexer, plus a ModuleList index."""
    found = []
    for name in names:
        parts = name.split(".")
        for i, part in enumerate(parts[:-1]):
            if "indexer" in part.lower():
                end = i + 2 if i + 1 < len(parts) - 1 and parts[i + 1].isdigit() else i + 1
                path = ".".join(parts[:end])
                if path not in found:
                    found.append(path)
                break
    return found


def _layer_of(path: str, n_layers: int):
    numbers = [int(n) for n in re.findall(r"(?:^|\.)(\d+)(?=\.|$)", path)]
    return numbers[0] if len(numbers) == 1 and numbers[0] < n_layers else None


def top_k_check(top_k, spec) -> dict:
    ok = (isinstance(top_k, list) and len(top_k) == spec.n_layers
          and all(isinstance(k, int) and not isinstance(k, bool) and 1 <= k <= spec.seq_len for k in top_k))
    if not ok:
        return check("layer_top_k", False,
                     f"layer_top_k={top_k!r}; set model.layer_top_k to a list of {spec.n_layers} ints in "
                     f"[1, {spec.seq_len}], the k each layer keeps (for example [128, 32, 32, 64])")
    if len(set(top_k)) == 1 and spec.require_progressive:
        return check("layer_top_k", False, f"layer_top_k={top_k} is uniform; the progressive principle "
                                           "requires k to differ between layers (for example [128, 32, 32, 64])")
    return check("layer_top_k", True, f"layer_top_k={top_k}")


def structure_checks(state: dict, top_k, spec) -> list:
    results = []
    wide = {n: tuple(t.shape) for n, t in state.items()
            if spec.vocab_size in t.shape and t.numel() > spec.vocab_size * spec.hidden_size}
    results.append(check("embedding_width", not wide,
                         f"tensors with a {spec.vocab_size}-long dimension and more than "
                         f"{spec.vocab_size} x {spec.hidden_size} elements: {wide}; the token embedding "
                         f"and output layer must be {spec.hidden_size} wide" if wide else
                         f"no vocabulary tensor wider than {spec.hidden_size}"))
    top = top_k_check(top_k, spec)
    results.append(top)
    if top["passed"]:
        names = [n for n, t in state.items() if t.is_floating_point()]
        indexers = indexer_modules(names)
        layers = {_layer_of(p, spec.n_layers) for p in indexers}
        sparse = [i for i, k in enumerate(top_k) if k < spec.seq_len]
        if len(indexers) >= spec.n_layers:
            missing = []
        elif None in layers:
            missing = sparse if len(indexers) < len(sparse) else []
        else:
            missing = [i for i in sparse if i not in layers]
        results.append(check("indexer_per_layer", not missing,
                             f"{len(indexers)} indexer modules ({', '.join(indexers[:8])}); layers "
                             f"{missing} keep k < {spec.seq_len} but have no lightning indexer: give "
                             "each sparse layer a module named '*indexer*' with parameters" if missing else
                             f"{len(indexers)} indexer modules for the {len(sparse)} sparse layers"))
    return results


def param_check(counts: dict, spec) -> dict:
    limit = int(spec.reference_params * spec.max_params_ratio)
    return check("param_budget", counts["total"] <= limit,
                 f"{counts['total']:,} parameters and buffers in the state dict; limit {limit:,} "
                 f"({spec.max_params_ratio}x the reference's {spec.reference_params:,})")


def flops_check(step_flops: int, spec) -> dict:
    limit = int(spec.reference_step_flops * spec.max_flops_ratio)
    return check("flops_budget", step_flops is not None and 0 < step_flops <= limit,
                 f"{step_flops:,} FLOPs in one training step (forward, backward, optimizer); limit "
                 f"{limit:,} ({spec.max_flops_ratio}x the reference's {spec.reference_step_flops:,})"
                 if step_flops else "the training step's FLOPs were not reported")


def cpu_check(cpu_s_per_step: float, step_flops: int, rate: float, spec, margin: float = 1.0,
              steps: str = "") -> dict:
    """The training step's CPU time, read from outside the worker, against its counted FLOPs
    (`margin` times the allowance: the early verdict over the first steps; `steps` names them)."""
    counted = max(step_flops or 0, spec.reference_step_flops)
    allowed = margin * counted / (rate * spec.min_cpu_efficiency)
    ratio = cpu_s_per_step / allowed if allowed else float("inf")
    detail = (f"{1000 * cpu_s_per_step:.0f} ms of CPU per training step{steps}; {1000 * allowed:.0f} ms allowed for "
              f"{counted / 1e9:.1f} GFLOPs at {spec.min_cpu_efficiency:g} of this machine's measured "
              f"{rate / 1e9:.0f} GFLOP per CPU-second" + (f", x{margin:g} this early" if margin != 1 else ""))
    if ratio <= 1:
        return check("cpu_budget", True, detail)
    return check("cpu_budget", False, detail + ": the step does far more work than its counted FLOPs "
                 "(work hidden from the FLOP counter, extra passes in the optimizer, or extremely "
                 "inefficient code; vectorise Python loops over tokens or heads)")


def raise_on_failure(stage: str, checks: list) -> None:
    failed = [c for c in checks if not c["passed"]]
    if failed:
        raise EvalFailure(stage, failed[0]["name"].split(":")[0],
                          "; ".join(f"{c['name']}: {c['detail']}" for c in failed), checks=checks)
