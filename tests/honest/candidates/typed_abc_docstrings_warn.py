"""PLASA candidate: a fully typed, documented rewrite of the reference with an abstract attention base.

Architecture (unchanged in size): 4 pre-norm blocks, RoPE, QK-norm, dense SwiGLU in layers 0 and 2,
top-2-of-4 MoE with a shared expert in layers 1 and 3. Per-layer k = [128, 64, 32, 32]: dense
first layer, then progressively sparser.

Every attention implementation derives from `CausalAttentionBase` (an `abc.ABC`), which owns the
projections and RoPE and leaves only the key selection abstract.
"""

# EVOLVE-BLOCK-START

from __future__ import annotations

import abc
import math
import warnings
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

KEEP_FRACTIONS: Sequence[float] = (1.0, 0.5, 0.25, 0.25)
MLP_WIDTH: int = 512
N_EXPERTS: int = 4
EXPERTS_PER_TOKEN: int = 2
EXPERT_WIDTH: int = 256
ROPE_BASE: float = 10000.0
INDEXER_HEADS: int = 4
INDEXER_DIM: int = 32
INDEXER_KL_WEIGHT: float = 1.0
MOE_BALANCE_WEIGHT: float = 0.01
INIT_STD: float = 0.02


def layer_top_k(n_layers: int, seq_len: int, fractions: Sequence[float] = KEEP_FRACTIONS) -> List[int]:
    """Per-layer number of kept keys: a pure function of depth and sequence length."""
    return [max(1, int(fractions[(len(fractions) * i) // n_layers] * seq_len)) for i in range(n_layers)]


class RMSNorm(nn.Module):
    """RMSNorm with a (1 + weight) scale, weight initialised to zero; computed in fp32."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps: float = eps
        self.weight = nn.Parameter(torch.zeros(dim))

    def forward(self, x: Tensor) -> Tensor:
        x_f = x.float()
        x_f = x_f * torch.rsqrt(x_f.pow(2).mean(-1, keepdim=True) + self.eps)
        return (x_f * (1.0 + self.weight.float())).type_as(x)


def rope_tables(seq_len: int, dim: int, base: float = ROPE_BASE) -> Tuple[Tensor, Tensor]:
    """cos and sin tables, each (seq_len, dim // 2)."""
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate-half RoPE on the last dimension of x (..., T, D)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).type_as(x)


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x))."""

    def __init__(self, dim: int, width: int) -> None:
        super().__init__()
        self.gate_up = nn.Linear(dim, 2 * width, bias=False)
        self.down = nn.Linear(width, dim, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class LightningIndexer(nn.Module):
    """Cheap key scorer: I[t, s] = sum_j w[t, j] * relu(q[t, j] . k[s])."""

    def __init__(self, dim: int, heads: int = INDEXER_HEADS, head_dim: int = INDEXER_DIM) -> None:
        super().__init__()
        self.heads: int = heads
        self.head_dim: int = head_dim
        self.q = nn.Linear(dim, heads * head_dim, bias=False)
        self.k = nn.Linear(dim, head_dim, bias=False)
        self.w = nn.Linear(dim, heads, bias=False)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
        """x: (B, T, C) -> scores (B, T, T) in fp32."""
        B, T, _ = x.shape
        q = apply_rope(self.q(x).view(B, T, self.heads, self.head_dim).transpose(1, 2), cos, sin)
        k = apply_rope(self.k(x), cos, sin)
        dots = torch.relu(q @ k.unsqueeze(1).transpose(-2, -1)) / math.sqrt(self.head_dim)
        w = self.w(x).transpose(1, 2).unsqueeze(-1) / math.sqrt(self.heads)
        return (w * dots).sum(1).float()


class CausalAttentionBase(nn.Module, abc.ABC):
    """Projections, QK-norm and RoPE; subclasses decide which past keys each query may read."""

    def __init__(self, dim: int, n_heads: int) -> None:
        super().__init__()
        self.n_heads: int = n_heads
        self.head_dim: int = dim // n_heads
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)
        self.q_norm = RMSNorm(self.head_dim)
        self.k_norm = RMSNorm(self.head_dim)

    def project(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tuple[Tensor, Tensor, Tensor]:
        B, T, _ = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        return apply_rope(self.q_norm(q), cos, sin), apply_rope(self.k_norm(k), cos, sin), v

    @abc.abstractmethod
    def attend(self, x: Tensor, q: Tensor, k: Tensor, v: Tensor, cos: Tensor, sin: Tensor) -> Tuple[Tensor, Tensor]:
        """Returns (y (B, H, T, D), aux_loss scalar)."""

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tuple[Tensor, Tensor]:
        B, T, C = x.shape
        q, k, v = self.project(x, cos, sin)
        y, aux = self.attend(x, q, k, v, cos, sin)
        return self.out(y.transpose(1, 2).reshape(B, T, C)), aux


class IndexedSparseAttention(CausalAttentionBase):
    """Softmax attention over the lightning indexer's top-k past keys (dense causal if k >= T)."""

    def __init__(self, dim: int, n_heads: int, top_k: int) -> None:
        super().__init__(dim, n_heads)
        self.top_k: int = top_k
        self.indexer = LightningIndexer(dim)

    @staticmethod
    def topk_mask(scores: Tensor, k: int) -> Tensor:
        """(B, T, T) bool: the k best keys s <= t per query t (stable: earlier key wins ties)."""
        T = scores.size(-1)
        causal = torch.ones(T, T, dtype=torch.bool, device=scores.device).tril()
        if k >= T:
            return causal.expand_as(scores)
        masked = scores.masked_fill(~causal, float("-inf"))
        keep = torch.sort(masked, dim=-1, descending=True, stable=True).indices[..., :k]
        return torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, keep, True) & causal

    @staticmethod
    def alignment_kl(index_scores: Tensor, keep: Tensor, attn: Tensor) -> Tensor:
        """KL(head-summed main attention, detached || indexer distribution), over kept keys."""
        target = attn.detach().float().sum(1)
        target = target / target.sum(-1, keepdim=True).clamp_min(1e-9)
        log_q = F.log_softmax(index_scores.masked_fill(~keep, float("-inf")), dim=-1).masked_fill(~keep, 0.0)
        return (torch.xlogy(target, target) - target * log_q).sum(-1).mean()

    def attend(self, x: Tensor, q: Tensor, k: Tensor, v: Tensor, cos: Tensor, sin: Tensor) -> Tuple[Tensor, Tensor]:
        T = x.size(1)
        aux = x.new_zeros((), dtype=torch.float32)
        if self.top_k >= T:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True), aux
        index_scores = self.indexer(x.detach(), cos, sin)
        keep = self.topk_mask(index_scores, self.top_k)
        att = (q @ k.transpose(-2, -1)).float() / math.sqrt(self.head_dim)
        att = att.masked_fill(~keep.unsqueeze(1), float("-inf")).softmax(-1)
        if torch.is_grad_enabled():
            aux = INDEXER_KL_WEIGHT * self.alignment_kl(index_scores, keep, att)
        return att.type_as(v) @ v, aux


class MoE(nn.Module):
    """Top-2 of 4 SwiGLU experts, computed densely (static shapes), plus a gated shared expert."""

    def __init__(self, dim: int, n_experts: int = N_EXPERTS, top_k: int = EXPERTS_PER_TOKEN,
                 width: int = EXPERT_WIDTH) -> None:
        super().__init__()
        self.n_experts: int = n_experts
        self.top_k: int = top_k
        self.router = nn.Linear(dim, n_experts, bias=False)
        self.gate_up = nn.Parameter(torch.empty(n_experts, dim, 2 * width))
        self.down = nn.Parameter(torch.empty(n_experts, width, dim))
        self.shared = SwiGLU(dim, width)
        self.shared_gate = nn.Linear(dim, 1, bias=False)

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        B, T, C = x.shape
        flat = x.reshape(B * T, C)
        probs = self.router(flat).float().softmax(-1)
        top_w, top_i = probs.topk(self.top_k, dim=-1)
        gates = torch.zeros_like(probs).scatter_(-1, top_i, top_w / top_w.sum(-1, keepdim=True))
        gate, up = torch.matmul(flat.unsqueeze(0), self.gate_up).chunk(2, dim=-1)
        y = torch.matmul(F.silu(gate) * up, self.down)
        routed = (y * gates.t().unsqueeze(-1).type_as(y)).sum(0)
        shared = torch.sigmoid(self.shared_gate(flat)) * self.shared(flat)
        aux = x.new_zeros((), dtype=torch.float32)
        if torch.is_grad_enabled():
            chosen = torch.zeros_like(probs).scatter_(-1, top_i, 1.0).mean(0)
            aux = MOE_BALANCE_WEIGHT * self.n_experts * (chosen * probs.mean(0)).sum() / self.top_k
        return (routed + shared).view(B, T, C), aux


class Block(nn.Module):
    """Pre-norm residual block: x + attn(norm(x)), then x + ffn(norm(x))."""

    def __init__(self, dim: int, n_heads: int, top_k: int, use_moe: bool) -> None:
        super().__init__()
        self.attn_norm = RMSNorm(dim)
        self.attn: CausalAttentionBase = IndexedSparseAttention(dim, n_heads, top_k)
        self.ffn_norm = RMSNorm(dim)
        self.moe: Optional[MoE] = MoE(dim) if use_moe else None
        self.mlp: Optional[SwiGLU] = None if use_moe else SwiGLU(dim, MLP_WIDTH)

    def forward(self, x: Tensor, cos: Tensor, sin: Tensor) -> Tuple[Tensor, Tensor]:
        h, aux = self.attn(self.attn_norm(x), cos, sin)
        x = x + h
        if self.moe is not None:
            h, moe_aux = self.moe(self.ffn_norm(x))
            return x + h, aux + moe_aux
        assert self.mlp is not None
        return x + self.mlp(self.ffn_norm(x)), aux


class PLASAModel(nn.Module):
    """Decoder-only LM with per-layer adaptive sparse attention."""

    def __init__(self, vocab_size: int, hidden_size: int = 128, n_layers: int = 4, n_heads: int = 4,
                 max_seq_len: int = 128, **unused: object) -> None:
        super().__init__()
        if hidden_size % n_heads != 0:
            raise ValueError(f"hidden_size {hidden_size} is not divisible by n_heads {n_heads}")
        self.layer_top_k: List[int] = layer_top_k(n_layers, max_seq_len)
        self.embed = nn.Embedding(vocab_size, hidden_size)
        self.blocks = nn.ModuleList(
            [Block(hidden_size, n_heads, k, use_moe=(i % 2 == 1)) for i, k in enumerate(self.layer_top_k)])
        self.norm = RMSNorm(hidden_size)
        self.lm_head = nn.Linear(hidden_size, vocab_size, bias=False)
        cos, sin = rope_tables(max_seq_len, hidden_size // n_heads)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init)

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=INIT_STD)
        elif isinstance(module, MoE):
            nn.init.normal_(module.gate_up, std=INIT_STD)
            nn.init.normal_(module.down, std=INIT_STD)

    def forward(self, input_ids: Tensor) -> Tuple[Tensor, Tensor]:
        """input_ids (B, T) -> (logits (B, T, V), aux_loss ())."""
        T = input_ids.size(1)
        cos, sin = self.rope_cos[:T], self.rope_sin[:T]
        x = self.embed(input_ids)
        aux = x.new_zeros((), dtype=torch.float32)
        for block in self.blocks:
            x, block_aux = block(x, cos, sin)
            aux = aux + block_aux
        return self.lm_head(self.norm(x)), aux
# EVOLVE-BLOCK-END


def build_model(config) -> nn.Module:
    """Entry point. Warns (once, at build time) when the config departs from the tuned setting."""
    if config.hidden_size // config.n_heads != INDEXER_DIM:
        warnings.warn(f"head_dim {config.hidden_size // config.n_heads} != indexer dim {INDEXER_DIM}; "
                      "the indexer still works but was tuned for equal sizes", RuntimeWarning, stacklevel=2)
    if config.n_layers != len(KEEP_FRACTIONS):
        warnings.warn(f"KEEP_FRACTIONS has {len(KEEP_FRACTIONS)} entries, resampled for {config.n_layers} "
                      "layers", stacklevel=2)
    warnings.warn("PLASA: MoE experts run densely on every token (static shapes); FLOPs count all 4",
                  UserWarning, stacklevel=2)
    return PLASAModel(vocab_size=config.vocab_size, hidden_size=config.hidden_size,
                      n_layers=config.n_layers, n_heads=config.n_heads, max_seq_len=config.seq_len)
