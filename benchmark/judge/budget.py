"""The judge's structural and budget verdicts (README "Rules").

Decided from what the judge holds, never from a worker's word alone:
- parameters: the bytes of the trained state dict the training worker hands over (every
  parameter and persistent buffer), counted in fp32 equivalents (bytes / 4) whatever the dtype:
  bytes are what packing cannot change (two bf16 values in an int32 or a float32, two fp32 in a
  float64, four int8 in an int32 all hold the same bytes), so a bf16 tensor counts half an fp32
  one and no dtype buys room; tensors with identical contents, such as tied weights, count once
  <= spec.max_params_ratio x the reference's. The scoring worker must rebuild the model from
  exactly this state (strict load + the replay probe), so nothing trained can hide outside it;
- token embedding: every tensor with a vocab_size-long dimension has at most vocab_size x
  hidden_size x 4 bytes (no wider embedding or output layer than hidden_size in fp32, or the same
  bytes in another dtype);
- indexers: every layer whose declared k is below seq_len has its own lightning indexer, a module
  whose path has a part containing "indexer" (``blocks.1.attn.indexer``, ``indexers.1``) and that
  owns trained tensors;
- ``layer_top_k`` (required): n_layers ints in [1, seq_len], not all equal;
- compute: the FLOPs of one whole training step (train-mode forward, backward, optimizer step, on
  real training text; counted by FlopCounterMode in the training worker) <= spec.max_flops_ratio x
  the reference's; and, since that count comes from the candidate's process, the judge reads the
  worker's CPU time per step from /proc and rejects a step that costs far more than its counted
  FLOPs allow on this machine (spec.min_cpu_efficiency of a measured matmul rate, with the
  reference's FLOPs as a floor so small, slow-but-honest models pass; :class:`Floor`: lower for a
  worker whose threads spin beside other busy processes);
- CPU time of every worker, window by window from its start to its last reply, against the work
  the judge asked of it there (:class:`Work`, :func:`cpu_allowance`: the one formula behind every
  CPU verdict; benchmark/judge/meter.py keeps the windows).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Callable, Optional

import torch

from ..result import EvalFailure, check


def fp32_equivalents(nbytes: int) -> int:
    """What `nbytes` of state count as: fp32 values holding as many bytes (rounded up)."""
    return -(-nbytes // 4)


def parameter_counts(state: dict, vocab: int) -> dict:
    """The state's bytes (`bytes`) and fp32 equivalents (bytes / 4: `total`, `embedding` of the
    vocab-long tensors, `non_embedding`), whatever the dtypes; a tensor whose contents repeat
    another's (tied weights) counts once, unless it is constant (zero-initialised norms are not
    ties)."""
    seen, total, embedding = set(), 0, 0
    for name, tensor in state.items():
        if tensor.numel() > 1 and bool((tensor != tensor.reshape(-1)[0]).any()):
            digest = hashlib.blake2b(tensor.contiguous().view(-1).view(torch.uint8).numpy().tobytes(),
                                     digest_size=16)
            key = (str(tensor.dtype), tuple(tensor.shape), digest.hexdigest())
            if key in seen:
                continue
            seen.add(key)
        size = tensor.numel() * tensor.element_size()  # bytes: the one measure packing cannot change
        total += size
        if vocab in tensor.shape:
            embedding += size
    total_fp32, embedding_fp32 = fp32_equivalents(total), fp32_equivalents(embedding)
    return {"total": total_fp32, "embedding": embedding_fp32, "non_embedding": total_fp32 - embedding_fp32,
            "bytes": total}


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
    most = spec.vocab_size * spec.hidden_size * 4  # bytes of a hidden_size-wide fp32 embedding
    wide = {n: f"{tuple(t.shape)} {str(t.dtype).replace('torch.', '')}" for n, t in state.items()
            if spec.vocab_size in t.shape and t.numel() * t.element_size() > most}
    results.append(check("embedding_width", not wide,
                         f"tensors with a {spec.vocab_size}-long dimension and more than {most:,} bytes "
                         f"({spec.vocab_size} x {spec.hidden_size} fp32 values; every dtype counts by its "
                         f"bytes): {wide}; the token embedding and output layer must be {spec.hidden_size} "
                         "wide in fp32 (or as many bytes in another dtype)" if wide else
                         f"no vocabulary tensor over {spec.hidden_size} fp32 values wide"))
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
    detail = (f"{counts['total']:,} fp32-equivalent parameters and buffers in the state dict "
              f"({counts['bytes']:,} bytes / 4, whatever their dtype; tied copies count once); limit "
              f"{limit:,} ({spec.max_params_ratio}x the reference's {spec.reference_params:,})")
    if counts["total"] <= limit:
        return check("param_budget", True, detail)
    return check("param_budget", False, detail + ": make the model smaller, or store tensors in a smaller "
                 "dtype (a bf16 tensor counts half an fp32 one; packing values into another dtype "
                 "changes nothing, as bytes are counted)")


def flops_check(step_flops: int, spec) -> dict:
    limit = int(spec.reference_step_flops * spec.max_flops_ratio)
    return check("flops_budget", step_flops is not None and 0 < step_flops <= limit,
                 f"{step_flops:,} FLOPs in one training step (forward, backward, optimizer); limit "
                 f"{limit:,} ({spec.max_flops_ratio}x the reference's {spec.reference_step_flops:,})"
                 if step_flops else "the training step's FLOPs were not reported")


@dataclass(frozen=True)
class Work:
    """What the judge asked of a worker in one window of its life."""

    steps: float = 0           # training steps: train-mode forward, backward, optimizer step
    forward_tokens: int = 0    # tokens through forward passes only (probes, replay, canaries, validation)
    fixed_s: float = 0.0       # CPU seconds for what is no counted arithmetic (start-up, compile, hand-over)

    def __add__(self, other: "Work") -> "Work":
        return Work(self.steps + other.steps, self.forward_tokens + other.forward_tokens,
                    self.fixed_s + other.fixed_s)


@dataclass(frozen=True)
class Floor:
    """The share of the machine's matmul rate a CPU allowance assumes, and why (`because`, appended
    to a verdict's detail; empty for the strict floor)."""
    efficiency: float
    because: str = ""

    @staticmethod
    def strict(spec) -> "Floor":
        return Floor(spec.min_cpu_efficiency)

    @staticmethod
    def spinning(spec, other_cores: float) -> "Floor":
        """A worker whose OpenMP threads spin while waiting (OpenMP's default), on a machine other
        processes loaded over the window: its threads burn CPU waiting for partners descheduled."""
        return Floor(spec.spinning_cpu_efficiency, f"; spinning threads beside {other_cores:.1f} cores of other "
                                                   f"processes")


def strict_then_lenient(judge: Callable[[Optional[Floor]], dict],
                        lenient: Callable[[], Optional[Floor]]) -> tuple:
    """(verdict, the floor it was reached at): `judge` at the strict floor (None) first; a failing
    verdict is judged again at the lower floor `lenient()` grants, where it grants one. The one rule
    for every CPU verdict (the meter's windows, the training steps)."""
    verdict = judge(None)
    if not verdict["passed"] and (floor := lenient()) is not None:
        return judge(floor), floor
    return verdict, None


def counted_flops(step_flops, token_flops, spec) -> tuple:
    """(FLOPs of a training step, of a forward token) that allowances use: the worker's counts,
    raised to the reference's and capped at spec.max_flops_ratio times it (a count is the
    candidate's word: an inflated one buys no CPU)."""
    cap = spec.max_flops_ratio
    step = min(max(step_flops or 0, spec.reference_step_flops), cap * spec.reference_step_flops)
    token = min(max(token_flops or 0, spec.reference_flops_per_token), cap * spec.reference_flops_per_token)
    return step, token


def cpu_allowance(work: Work, step_flops, token_flops, rate: float, spec, floor: Optional[Floor] = None) -> float:
    """CPU seconds `work` may take on this machine (`rate`: its measured fp32 matmul FLOPs per
    CPU-second): the fixed seconds, plus the FLOPs of its steps and forward tokens at the floor's
    efficiency (spec.min_cpu_efficiency by default) of the rate. The one formula behind every CPU
    verdict."""
    step, token = counted_flops(step_flops, token_flops, spec)
    efficiency = (floor or Floor.strict(spec)).efficiency
    return work.fixed_s + (work.steps * step + work.forward_tokens * token) / (rate * efficiency)


def describe(work: Work, step_flops, token_flops, rate: float, spec, floor: Optional[Floor] = None) -> str:
    """The work an allowance is for, in words."""
    floor = floor or Floor.strict(spec)
    step, token = counted_flops(step_flops, token_flops, spec)
    parts = [f"{work.fixed_s:g} s fixed"] if work.fixed_s else []
    if work.steps:
        parts.append(f"{work.steps:g} training steps of {step / 1e9:.1f} GFLOP")
    if work.forward_tokens:
        parts.append(f"{work.forward_tokens:,} forward tokens of {token / 1e6:.1f} MFLOP")
    return ((", ".join(parts) or "no work") + f" (FLOPs at {floor.efficiency:g} of this machine's "
            f"{rate / 1e9:.0f} GFLOP per CPU-second{floor.because})")


def window_check(name: str, who: str, used_s: float, work: Work, step_flops, token_flops, rate: float,
                 spec, fix: str, floor: Optional[Floor] = None) -> dict:
    """A worker's CPU seconds in one window of its life against what its work allows."""
    allowed = cpu_allowance(work, step_flops, token_flops, rate, spec, floor)
    detail = (f"{who} used {used_s:.1f} s of CPU; {allowed:.1f} s allowed for "
              f"{describe(work, step_flops, token_flops, rate, spec, floor)}")
    return check(name, used_s <= allowed, detail if used_s <= allowed else f"{detail}: {fix}")


def cpu_check(cpu_s_per_step: float, step_flops: int, rate: float, spec, margin: float = 1.0,
              steps: str = "", floor: Optional[Floor] = None) -> dict:
    """The training step's CPU time, read from outside the worker, against its counted FLOPs
    (`margin` times the allowance: the early verdict over the first steps; `steps` names them)."""
    floor = floor or Floor.strict(spec)
    counted = counted_flops(step_flops, None, spec)[0]
    allowed = margin * cpu_allowance(Work(steps=1), step_flops, None, rate, spec, floor)
    ratio = cpu_s_per_step / allowed if allowed else float("inf")
    detail = (f"{1000 * cpu_s_per_step:.0f} ms of CPU per training step{steps}; {1000 * allowed:.0f} ms allowed for "
              f"{counted / 1e9:.1f} GFLOPs at {floor.efficiency:g} of this machine's measured "
              f"{rate / 1e9:.0f} GFLOP per CPU-second{floor.because}" + (f", x{margin:g} this early" if margin != 1 else ""))
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
