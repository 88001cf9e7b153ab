"""Experiment models: layer patterns over the reference candidate's own blocks.

Letters (one per layer):
  F  dense causal softmax attention      the reference's SparseAttention with k = T
  P  PLASA                               the same module, k from the named schedule for layer i
  D  DSA                                 the same module, k = T / 2 in every layer
  L  Gated DeltaNet                      benchmark.experiments.gdn.GatedDeltaNet (2 heads of 64)
F, P and D are one implementation with different k, so comparisons measure sparsity only. Every
model is the reference PLASAModel (embedding, RMSNorm, SwiGLU/MoE blocks, LM head) with the token
mixer of each block chosen by its letter; nothing of the reference is copied.

The indexer warm-up (study `warmup`): for the first N optimizer steps every D layer runs dense
attention and trains only its indexer, by KL to the dense attention distribution (the rest of the
model is frozen: its gradients are dropped); then normal sparse training. The step count lives in
a buffer that only the optimizer advances, so validation stays stateless.
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


def _attention(k_of: Callable[[int, int, int, str], int]):
    def make(dim, n_heads, layer, n_layers, seq_len, schedule):
        return reference().SparseAttention(dim, n_heads, k_of(layer, n_layers, seq_len, schedule))
    return make


LAYER_TYPES = {
    "F": _attention(lambda i, n, T, schedule: T),
    "P": _attention(lambda i, n, T, schedule: reference().layer_top_k(schedule, n, T)[i]),
    "D": _attention(lambda i, n, T, schedule: max(1, T // 2)),
    "L": lambda dim, n_heads, layer, n_layers, seq_len, schedule: GatedDeltaNet(dim),
}


def validate_pattern(pattern: str, n_layers: int) -> None:
    unknown = sorted(set(pattern) - set(LAYER_TYPES))
    if unknown or len(pattern) != n_layers:
        raise ValueError(f"pattern {pattern!r}: need {n_layers} letters from {''.join(LAYER_TYPES)}")


def build_pattern_model(config, pattern: str, schedule: str = "progressive_sparse",
                        warmup_steps: int = 0) -> torch.nn.Module:
    validate_pattern(pattern, config.n_layers)
    ref = reference()
    model = ref.PLASAModel(vocab_size=config.vocab_size, hidden_size=config.hidden_size,
                           n_layers=config.n_layers, n_heads=config.n_heads,
                           max_seq_len=config.seq_len, schedule=schedule)
    for i, (letter, block) in enumerate(zip(pattern, model.blocks)):
        block.attn = LAYER_TYPES[letter](config.hidden_size, config.n_heads, i, config.n_layers,
                                         config.seq_len, schedule)
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
                         warmup_steps: int = 0) -> tuple:
    """(build_model, configure_optimizer or None) for a generated candidate file."""
    def build_model(config):
        return build_pattern_model(config, pattern, schedule, warmup_steps)

    if not warmup_steps:
        return build_model, None

    def configure_optimizer(model, config):
        from ..spec import SPEC
        from ..worker.train import default_param_groups

        return WarmupAdamW(model, default_param_groups(model, SPEC), lr=SPEC.lr, betas=tuple(SPEC.betas))

    return build_model, configure_optimizer


def candidate_source(study: str, row: str, pattern: str, schedule: str, warmup_steps: int) -> str:
    return (f'"""PLASA-Bench experiment model: study {study}, row {row} (generated)."""\n\n'
            "from benchmark.experiments.models import experiment_candidate\n\n"
            f"build_model, configure_optimizer = experiment_candidate(\n"
            f"    pattern={pattern!r}, schedule={schedule!r}, warmup_steps={warmup_steps})\n")
