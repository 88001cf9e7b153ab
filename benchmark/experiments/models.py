"""Experiment models: layer patterns over the reference candidate's own blocks.

Letters (one per layer):
  F  dense causal softmax attention      the reference's SparseAttention with k = T
  P  PLASA                               the same module, k from the named schedule for layer i,
                                         mapped onto the depth by a named layer map (LAYER_MAPS)
  D  DSA                                 the same module, k = T / 2 in every layer
  L  Gated DeltaNet                      benchmark.experiments.gdn.GatedDeltaNet (2 heads of 64)
F, P and D are one implementation with different k, so comparisons measure sparsity only. Every
model is the reference PLASAModel (embedding, RMSNorm, SwiGLU/MoE blocks, LM head) with the token
mixer of each block chosen by its letter; nothing of the reference is copied.

The indexer warm-up (study `warmup`): for the first N optimizer steps every D layer runs dense
attention and trains only its indexer, by KL to the dense attention distribution (the rest of the
model is frozen: its gradients are dropped); then normal sparse training. The step count lives in
a buffer that only the optimizer advances, so validation stays stateless. Whether the warm-up is
inside the budget or on top of it is only the run's step count (studies.row_steps).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Callable

import torch

from .gdn import GatedDeltaNet

REFERENCE = Path(__file__).resolve().parents[2] / "initial_program.py"


def reference():
    """The repository's initial_program.py as a module (imported once)."""
    import sys

    name = "plasa_reference_candidate"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, REFERENCE)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def resampled_top_k(schedule: str, n_layers: int, seq_len: int) -> list:
    """The reference's own depth rule: layer i of n takes the 4-layer fraction floor(4 i / n)
    (at 6 layers: fractions 0, 0, 1, 2, 2, 3). Our earlier variant of the 6-layer schedules."""
    return reference().layer_top_k(schedule, n_layers, seq_len)


def thirds_top_k(schedule: str, n_layers: int, seq_len: int) -> list:
    """The schedules document's definition: the first, middle and last third of the layers take
    the early, middle and late fraction of the reference's 4-layer table (its entries 0, 1 = 2,
    and 3); at 6 layers, layers 0-1, 2-3 and 4-5, e.g. progressive (1, 1, 1/4, 1/4, 1/2, 1/2)."""
    fractions = reference().SCHEDULES[schedule]
    if n_layers % 3 or fractions[1] != fractions[2]:
        raise ValueError(f"schedule {schedule!r} at {n_layers} layers has no thirds definition")
    early, middle, late = fractions[0], fractions[1], fractions[3]
    return [max(1, int((early, middle, late)[3 * i // n_layers] * seq_len)) for i in range(n_layers)]


# how a 4-layer schedule maps onto n layers, by name (Row.layer_map)
LAYER_MAPS = {"resample": resampled_top_k, "thirds": thirds_top_k}


def _attention(k_of: Callable[[int, int], int]):
    def make(dim, n_heads, seq_len, scheduled_k):
        return reference().SparseAttention(dim, n_heads, k_of(seq_len, scheduled_k))
    return make


# letter -> make(dim, n_heads, seq_len, k the schedule gives this layer) -> token mixer
LAYER_TYPES = {
    "F": _attention(lambda T, scheduled_k: T),
    "P": _attention(lambda T, scheduled_k: scheduled_k),
    "D": _attention(lambda T, scheduled_k: max(1, T // 2)),
    "L": lambda dim, n_heads, seq_len, scheduled_k: GatedDeltaNet(dim),
}


def validate_pattern(pattern: str, n_layers: int) -> None:
    unknown = sorted(set(pattern) - set(LAYER_TYPES))
    if unknown or len(pattern) != n_layers:
        raise ValueError(f"pattern {pattern!r}: need {n_layers} letters from {''.join(LAYER_TYPES)}")


def build_pattern_model(config, pattern: str, schedule: str = "progressive_sparse",
                        warmup_steps: int = 0, layer_map: str = "resample") -> torch.nn.Module:
    validate_pattern(pattern, config.n_layers)
    scheduled = LAYER_MAPS[layer_map](schedule, config.n_layers, config.seq_len)
    ref = reference()
    model = ref.PLASAModel(vocab_size=config.vocab_size, hidden_size=config.hidden_size,
                           n_layers=config.n_layers, n_heads=config.n_heads,
                           max_seq_len=config.seq_len, schedule=schedule)
    for letter, block, k in zip(pattern, model.blocks, scheduled):
        block.attn = LAYER_TYPES[letter](config.hidden_size, config.n_heads, config.seq_len, k)
    model.apply(model._init)
    model.layer_top_k = [getattr(b.attn, "top_k", config.seq_len) for b in model.blocks]
    model.pattern = pattern
    if warmup_steps:
        return WarmupModel(model, warmup_steps, config.seq_len)
    return model


class WarmupModel(torch.nn.Module):
    """Dense D layers with indexer-only training for the first `warmup_steps` optimizer steps."""

    def __init__(self, inner: torch.nn.Module, warmup_steps: int, seq_len: int):
        super().__init__()
        self.inner, self.warmup_steps, self.seq_len = inner, warmup_steps, seq_len
        self.layer_top_k = inner.layer_top_k
        self.sparse_k = {i: b.attn.top_k for i, b in enumerate(inner.blocks) if hasattr(b.attn, "top_k")}
        self.register_buffer("optimizer_steps", torch.zeros((), dtype=torch.long))

    @property
    def warming_up(self) -> bool:
        return int(self.optimizer_steps) < self.warmup_steps

    def forward(self, input_ids):
        warm = self.warming_up
        for i, k in self.sparse_k.items():
            attn = self.inner.blocks[i].attn
            attn.top_k = self.seq_len if warm else k
            attn.align_when_dense = warm
        return self.inner(input_ids)


class WarmupAdamW(torch.optim.AdamW):
    """AdamW that, during the warm-up, updates only indexer parameters, and counts steps."""

    def __init__(self, model: WarmupModel, groups: list, **kwargs):
        super().__init__(groups, **kwargs)
        self.model = model
        indexer = {id(p) for n, p in model.named_parameters() if ".indexer." in n}
        self.frozen = [p for p in model.parameters() if id(p) not in indexer]

    @torch.no_grad()
    def step(self, closure=None):
        if self.model.warming_up:
            for p in self.frozen:
                p.grad = None  # AdamW skips parameters without a gradient: no update, no decay
        loss = super().step(closure)
        self.model.optimizer_steps += 1
        return loss


def experiment_candidate(pattern: str, schedule: str = "progressive_sparse",
                         warmup_steps: int = 0, layer_map: str = "resample") -> tuple:
    """(build_model, configure_optimizer or None) for a generated candidate file."""
    def build_model(config):
        return build_pattern_model(config, pattern, schedule, warmup_steps, layer_map)

    if not warmup_steps:
        return build_model, None

    def configure_optimizer(model, config):
        from ..spec import SPEC
        from ..worker.train import default_param_groups

        return WarmupAdamW(model, default_param_groups(model, SPEC), lr=SPEC.lr, betas=tuple(SPEC.betas))

    return build_model, configure_optimizer


def candidate_source(study: str, row: str, pattern: str, schedule: str, warmup_steps: int,
                     layer_map: str = "resample") -> str:
    return (f'"""PLASA-Bench experiment model: study {study}, row {row} (generated)."""\n\n'
            "from benchmark.experiments.models import experiment_candidate\n\n"
            f"build_model, configure_optimizer = experiment_candidate(\n"
            f"    pattern={pattern!r}, schedule={schedule!r}, warmup_steps={warmup_steps}, "
            f"layer_map={layer_map!r})\n")
