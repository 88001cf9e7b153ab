"""PLASA candidate: the reference model reorganised around an in-file dataclass config.

* `PLASAConfig` (a frozen dataclass) holds every hyper-parameter and is built from the
  evaluator's config with `PLASAConfig.from_evaluator(config)`;
* layers live in an `nn.ModuleDict` built from a `collections.OrderedDict` (names layer0..layerN);
* bias-free linears come from `functools.partial(nn.Linear, bias=False)`;
* schedule [128, 32, 48, 64]: the third layer is a little less sparse than in the reference.
"""

# EVOLVE-BLOCK-START

import functools
import math
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from typing import List, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

Linear = functools.partial(nn.Linear, bias=False)


@dataclass(frozen=True)
class PLASAConfig:
    vocab_size: int = 49152
    hidden_size: int = 128
    n_layers: int = 4
    n_heads: int = 4
    seq_len: int = 128
    keep_fractions: Tuple[float, ...] = (1.0, 0.25, 0.375, 0.5)
    mlp_width: int = 512
    n_experts: int = 4
    experts_per_token: int = 2
    expert_width: int = 256
    indexer_heads: int = 4
    indexer_dim: int = 32
    indexer_kl_weight: float = 1.0
    moe_balance_weight: float = 0.01
    rope_base: float = 10000.0
    init_std: float = 0.02
    moe_layers: Tuple[int, ...] = field(default=(1, 3))

    @classmethod
    def from_evaluator(cls, config) -> "PLASAConfig":
        return cls(vocab_size=config.vocab_size, hidden_size=config.hidden_size,
                   n_layers=config.n_layers, n_heads=config.n_heads, seq_len=config.seq_len)

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.n_heads

    def top_k(self) -> List[int]:
        n = self.n_layers
        return [max(1, int(self.keep_fractions[(len(self.keep_fractions) * i) // n] * self.seq_len))
                for i in range(n)]


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(dim))

    def forward(self, x):
        x_f = x.float()
        x_f = x_f * torch.rsqrt(x_f.pow(2).mean(-1, keepdim=True) + self.eps)
        return (x_f * (1.0 + self.weight.float())).type_as(x)


def rope_tables(seq_len: int, dim: int, base: float):
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rope(x, cos, sin):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).type_as(x)


class SwiGLU(nn.Module):
    def __init__(self, dim: int, width: int):
        super().__init__()
        self.gate_up = Linear(dim, 2 * width)
        self.down = Linear(width, dim)

    def forward(self, x):
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class LightningIndexer(nn.Module):
    def __init__(self, cfg: PLASAConfig):
        super().__init__()
        self.heads, self.head_dim = cfg.indexer_heads, cfg.indexer_dim
        self.q = Linear(cfg.hidden_size, self.heads * self.head_dim)
        self.k = Linear(cfg.hidden_size, self.head_dim)
        self.w = Linear(cfg.hidden_size, self.heads)

    def forward(self, x, cos, sin):
        B, T, _ = x.shape
        q = apply_rope(self.q(x).view(B, T, self.heads, self.head_dim).transpose(1, 2), cos, sin)
        k = apply_rope(self.k(x), cos, sin)
        dots = torch.relu(q @ k.unsqueeze(1).transpose(-2, -1)) / math.sqrt(self.head_dim)
        w = self.w(x).transpose(1, 2).unsqueeze(-1) / math.sqrt(self.heads)
        return (w * dots).sum(1).float()


def causal_topk_mask(scores, k: int):
    T = scores.size(-1)
    causal = torch.ones(T, T, dtype=torch.bool, device=scores.device).tril()
    if k >= T:
        return causal.expand_as(scores)
    masked = scores.masked_fill(~causal, float("-inf"))
    keep = torch.sort(masked, dim=-1, descending=True, stable=True).indices[..., :k]
    return torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, keep, True) & causal


def indexer_kl(index_scores, keep, attn):
    target = attn.detach().float().sum(1)
    target = target / target.sum(-1, keepdim=True).clamp_min(1e-9)
    log_q = F.log_softmax(index_scores.masked_fill(~keep, float("-inf")), dim=-1).masked_fill(~keep, 0.0)
    return (torch.xlogy(target, target) - target * log_q).sum(-1).mean()


class SparseAttention(nn.Module):
    def __init__(self, cfg: PLASAConfig, top_k: int):
        super().__init__()
        self.cfg, self.top_k = cfg, top_k
        self.n_heads, self.head_dim = cfg.n_heads, cfg.head_dim
        self.qkv = Linear(cfg.hidden_size, 3 * cfg.hidden_size)
        self.out = Linear(cfg.hidden_size, cfg.hidden_size)
        self.q_norm = RMSNorm(self.head_dim)
        self.k_norm = RMSNorm(self.head_dim)
        self.indexer = LightningIndexer(cfg)

    def forward(self, x, cos, sin):
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q = apply_rope(self.q_norm(q), cos, sin)
        k = apply_rope(self.k_norm(k), cos, sin)
        aux = x.new_zeros((), dtype=torch.float32)
        if self.top_k >= T:
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            index_scores = self.indexer(x.detach(), cos, sin)
            keep = causal_topk_mask(index_scores, self.top_k)
            att = (q @ k.transpose(-2, -1)).float() / math.sqrt(self.head_dim)
            att = att.masked_fill(~keep.unsqueeze(1), float("-inf")).softmax(-1)
            y = att.type_as(v) @ v
            if torch.is_grad_enabled():
                aux = self.cfg.indexer_kl_weight * indexer_kl(index_scores, keep, att)
        return self.out(y.transpose(1, 2).reshape(B, T, C)), aux


class MoE(nn.Module):
    def __init__(self, cfg: PLASAConfig):
        super().__init__()
        self.cfg = cfg
        E, C, W = cfg.n_experts, cfg.hidden_size, cfg.expert_width
        self.router = Linear(C, E)
        self.gate_up = nn.Parameter(torch.empty(E, C, 2 * W))
        self.down = nn.Parameter(torch.empty(E, W, C))
        self.shared = SwiGLU(C, W)
        self.shared_gate = Linear(C, 1)

    def forward(self, x):
        B, T, C = x.shape
        flat = x.reshape(B * T, C)
        probs = self.router(flat).float().softmax(-1)
        top_w, top_i = probs.topk(self.cfg.experts_per_token, dim=-1)
        gates = torch.zeros_like(probs).scatter_(-1, top_i, top_w / top_w.sum(-1, keepdim=True))
        gate, up = torch.matmul(flat.unsqueeze(0), self.gate_up).chunk(2, dim=-1)
        y = torch.matmul(F.silu(gate) * up, self.down)
        routed = (y * gates.t().unsqueeze(-1).type_as(y)).sum(0)
        shared = torch.sigmoid(self.shared_gate(flat)) * self.shared(flat)
        aux = x.new_zeros((), dtype=torch.float32)
        if torch.is_grad_enabled():
            chosen = torch.zeros_like(probs).scatter_(-1, top_i, 1.0).mean(0)
            aux = (self.cfg.moe_balance_weight * self.cfg.n_experts * (chosen * probs.mean(0)).sum()
                   / self.cfg.experts_per_token)
        return (routed + shared).view(B, T, C), aux


class Block(nn.Module):
    def __init__(self, cfg: PLASAConfig, top_k: int, use_moe: bool):
        super().__init__()
        self.attn_norm = RMSNorm(cfg.hidden_size)
        self.attn = SparseAttention(cfg, top_k)
        self.ffn_norm = RMSNorm(cfg.hidden_size)
        self.ffn = MoE(cfg) if use_moe else SwiGLU(cfg.hidden_size, cfg.mlp_width)

    def forward(self, x, cos, sin):
        h, aux = self.attn(self.attn_norm(x), cos, sin)
        x = x + h
        h = self.ffn(self.ffn_norm(x))
        if isinstance(h, tuple):
            h, moe_aux = h
            aux = aux + moe_aux
        return x + h, aux


class PLASAModel(nn.Module):
    def __init__(self, cfg: PLASAConfig):
        super().__init__()
        self.cfg = cfg
        self.layer_top_k = cfg.top_k()
        self.embed = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.blocks = nn.ModuleDict(OrderedDict(
            (f"layer{i}", Block(cfg, k, use_moe=i in cfg.moe_layers)) for i, k in enumerate(self.layer_top_k)))
        self.norm = RMSNorm(cfg.hidden_size)
        self.lm_head = Linear(cfg.hidden_size, cfg.vocab_size)
        cos, sin = rope_tables(cfg.seq_len, cfg.head_dim, cfg.rope_base)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(functools.partial(self._init, std=cfg.init_std))

    @staticmethod
    def _init(module, std):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=std)
        elif isinstance(module, MoE):
            nn.init.normal_(module.gate_up, std=std)
            nn.init.normal_(module.down, std=std)

    def forward(self, input_ids):
        T = input_ids.size(1)
        cos, sin = self.rope_cos[:T], self.rope_sin[:T]
        x = self.embed(input_ids)
        aux = x.new_zeros((), dtype=torch.float32)
        for name, block in self.blocks.items():
            x, block_aux = block(x, cos, sin)
            aux = aux + block_aux
        return self.lm_head(self.norm(x)), aux
# EVOLVE-BLOCK-END


def build_model(config):
    cfg = PLASAConfig.from_evaluator(config)
    if config.get("max_seq_len", cfg.seq_len) < cfg.seq_len:
        cfg = replace(cfg, seq_len=config.get("max_seq_len"))
    return PLASAModel(cfg)
