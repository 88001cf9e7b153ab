"""PLASA candidate written in the style of the DeepSeek-V3.2-Exp reference code (model.py).

* `ModelArgs` dataclass, `Indexer` with `wq_b`/`wk`/`weights_proj` and a LayerNorm on the keys,
  index scores `sum_h weights[h] * relu(q_h . k) * softmax_scale`;
* top-k selection turned into an additive `index_mask` (0 for kept keys, -inf otherwise) that is
  added together with the additive causal mask to the attention scores;
* the indexer is trained with the KL alignment loss (its input detached), returned as aux.
Per-layer k: [128, 48, 32, 64] (`index_topk` per layer).
"""

# EVOLVE-BLOCK-START

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class ModelArgs:
    vocab_size: int = 49152
    dim: int = 128
    n_layers: int = 4
    n_heads: int = 4
    max_seq_len: int = 128
    inter_dim: int = 512
    moe_inter_dim: int = 256
    n_routed_experts: int = 4
    n_activated_experts: int = 2
    n_dense_layers: int = 1            # layer 0 dense, then MoE / dense alternating
    rope_theta: float = 10000.0
    index_n_heads: int = 4
    index_head_dim: int = 32
    index_topk: Tuple[int, ...] = (128, 48, 32, 64)
    balance_coef: float = 0.01
    kl_coef: float = 1.0

    def topk_for(self, layer_id: int) -> int:
        k = self.index_topk[(len(self.index_topk) * layer_id) // self.n_layers]
        return min(self.max_seq_len, max(1, k * self.max_seq_len // 128))


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.dim, self.eps = dim, eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        x = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        return (self.weight * x).to(dtype)


def precompute_freqs_cis(args: ModelArgs, dim: int) -> torch.Tensor:
    freqs = 1.0 / (args.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    t = torch.arange(args.max_seq_len, dtype=torch.float32)
    freqs = torch.outer(t, freqs)
    return torch.stack((freqs.cos(), freqs.sin()), dim=-1)  # (T, D/2, 2), real-valued


def apply_rotary_emb(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """x: (B, T, H, D) interleaved pairs; freqs: (T, D/2, 2)."""
    dtype = x.dtype
    xr = x.float().unflatten(-1, (-1, 2))                      # (B, T, H, D/2, 2)
    cos, sin = freqs[..., 0].unsqueeze(1), freqs[..., 1].unsqueeze(1)   # (T, 1, D/2)
    out = torch.stack((xr[..., 0] * cos - xr[..., 1] * sin, xr[..., 0] * sin + xr[..., 1] * cos), dim=-1)
    return out.flatten(-2).to(dtype)


class Indexer(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.n_heads = args.index_n_heads
        self.head_dim = args.index_head_dim
        self.wq_b = nn.Linear(args.dim, self.n_heads * self.head_dim, bias=False)
        self.wk = nn.Linear(args.dim, self.head_dim, bias=False)
        self.k_norm = nn.LayerNorm(self.head_dim)
        self.weights_proj = nn.Linear(args.dim, self.n_heads, bias=False)
        self.softmax_scale = self.head_dim ** -0.5

    def forward(self, x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
        bsz, seqlen, _ = x.shape
        q = apply_rotary_emb(self.wq_b(x).view(bsz, seqlen, self.n_heads, self.head_dim), freqs)
        k = apply_rotary_emb(self.k_norm(self.wk(x)).unsqueeze(2), freqs).squeeze(2)
        weights = self.weights_proj(x.float()) * self.n_heads ** -0.5 * self.softmax_scale  # (B, T, H)
        index_score = torch.einsum("bthd,bsd->bths", q.float(), k.float()).relu()
        return (index_score * weights.unsqueeze(-1)).sum(dim=2)                              # (B, T, S)


class Attention(nn.Module):
    def __init__(self, layer_id: int, args: ModelArgs):
        super().__init__()
        self.n_heads = args.n_heads
        self.head_dim = args.dim // args.n_heads
        self.index_topk = args.topk_for(layer_id)
        self.kl_coef = args.kl_coef
        self.wq = nn.Linear(args.dim, args.dim, bias=False)
        self.wkv = nn.Linear(args.dim, 2 * args.dim, bias=False)
        self.wo = nn.Linear(args.dim, args.dim, bias=False)
        self.q_norm = RMSNorm(self.head_dim)
        self.k_norm = RMSNorm(self.head_dim)
        self.indexer = Indexer(args)
        self.softmax_scale = self.head_dim ** -0.5

    def forward(self, x: torch.Tensor, freqs: torch.Tensor, mask: torch.Tensor):
        bsz, seqlen, _ = x.shape
        q = self.q_norm(self.wq(x).view(bsz, seqlen, self.n_heads, self.head_dim))
        k, v = self.wkv(x).view(bsz, seqlen, 2, self.n_heads, self.head_dim).unbind(2)
        q, k = apply_rotary_emb(q, freqs), apply_rotary_emb(self.k_norm(k), freqs)
        scores = torch.einsum("bshd,bthd->bsht", q, k).float() * self.softmax_scale   # (B, S, H, T)
        aux = x.new_zeros((), dtype=torch.float32)
        index_score: Optional[torch.Tensor] = None
        if self.index_topk < seqlen:
            index_score = self.indexer(x.detach(), freqs) + mask          # causal: future -> -inf
            topk_indices = index_score.topk(self.index_topk, dim=-1)[1]    # (B, S, k)
            index_mask = torch.full((bsz, seqlen, seqlen), float("-inf"), device=x.device)
            index_mask = index_mask.scatter_(-1, topk_indices, 0.0)
            scores = scores + index_mask.unsqueeze(2)
        scores = (scores + mask.unsqueeze(1)).softmax(dim=-1)              # (B, S, H, T)
        out = torch.einsum("bsht,bthd->bshd", scores.type_as(v), v)
        if index_score is not None and torch.is_grad_enabled():
            keep = torch.isfinite(index_mask + mask)                       # kept and causal
            target = scores.detach().sum(2)
            target = target / target.sum(-1, keepdim=True).clamp_min(1e-9)
            log_q = F.log_softmax(index_score.masked_fill(~keep, float("-inf")), dim=-1).masked_fill(~keep, 0.0)
            aux = self.kl_coef * (torch.xlogy(target, target) - target * log_q).sum(-1).mean()
        return self.wo(out.flatten(2)), aux


class MLP(nn.Module):
    def __init__(self, dim: int, inter_dim: int):
        super().__init__()
        self.w1 = nn.Linear(dim, inter_dim, bias=False)
        self.w2 = nn.Linear(inter_dim, dim, bias=False)
        self.w3 = nn.Linear(dim, inter_dim, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))


class Gate(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.topk = args.n_activated_experts
        self.weight = nn.Parameter(torch.empty(args.n_routed_experts, args.dim))

    def forward(self, x: torch.Tensor):
        scores = F.linear(x.float(), self.weight.float()).softmax(dim=-1)
        weights, indices = scores.topk(self.topk, dim=-1)
        return weights / weights.sum(dim=-1, keepdim=True), indices, scores


class MoE(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.n_routed_experts = args.n_routed_experts
        self.topk = args.n_activated_experts
        self.balance_coef = args.balance_coef
        self.gate = Gate(args)
        self.experts = nn.ModuleList(MLP(args.dim, args.moe_inter_dim) for _ in range(args.n_routed_experts))
        self.shared_experts = MLP(args.dim, args.moe_inter_dim)
        self.shared_gate = nn.Linear(args.dim, 1, bias=False)

    def forward(self, x: torch.Tensor):
        shape = x.size()
        x = x.view(-1, shape[-1])
        weights, indices, scores = self.gate(x)
        y = torch.zeros_like(x)
        for i, expert in enumerate(self.experts):  # every expert on every token: static shapes
            w_i = (weights * (indices == i)).sum(-1, keepdim=True)
            y = y + expert(x) * w_i.type_as(x)
        z = torch.sigmoid(self.shared_gate(x)) * self.shared_experts(x)
        aux = x.new_zeros((), dtype=torch.float32)
        if torch.is_grad_enabled():
            load = F.one_hot(indices, self.n_routed_experts).float().sum(1).mean(0)
            aux = self.balance_coef * self.n_routed_experts * (load * scores.mean(0)).sum() / self.topk
        return (y + z).view(shape), aux


class Block(nn.Module):
    def __init__(self, layer_id: int, args: ModelArgs):
        super().__init__()
        self.attn = Attention(layer_id, args)
        self.is_moe = layer_id >= args.n_dense_layers and layer_id % 2 == 1
        self.ffn = MoE(args) if self.is_moe else MLP(args.dim, args.inter_dim)
        self.attn_norm = RMSNorm(args.dim)
        self.ffn_norm = RMSNorm(args.dim)

    def forward(self, x: torch.Tensor, freqs: torch.Tensor, mask: torch.Tensor):
        h, aux = self.attn(self.attn_norm(x), freqs, mask)
        x = x + h
        if self.is_moe:
            h, moe_aux = self.ffn(self.ffn_norm(x))
            return x + h, aux + moe_aux
        return x + self.ffn(self.ffn_norm(x)), aux


class Transformer(nn.Module):
    def __init__(self, args: ModelArgs):
        super().__init__()
        self.args = args
        self.layer_top_k = [args.topk_for(i) for i in range(args.n_layers)]
        self.embed = nn.Embedding(args.vocab_size, args.dim)
        self.layers = nn.ModuleList(Block(i, args) for i in range(args.n_layers))
        self.norm = RMSNorm(args.dim)
        self.head = nn.Linear(args.dim, args.vocab_size, bias=False)
        self.register_buffer("freqs_cis", precompute_freqs_cis(args, args.dim // args.n_heads), persistent=False)
        for name, p in self.named_parameters():
            if p.dim() >= 2:
                nn.init.normal_(p, mean=0.0, std=0.02)

    def forward(self, tokens: torch.Tensor):
        seqlen = tokens.size(1)
        h = self.embed(tokens)
        freqs = self.freqs_cis[:seqlen]
        mask = torch.full((seqlen, seqlen), float("-inf"), device=tokens.device).triu_(1)
        aux = h.new_zeros((), dtype=torch.float32)
        for layer in self.layers:
            h, layer_aux = layer(h, freqs, mask)
            aux = aux + layer_aux
        return self.head(self.norm(h)), aux
# EVOLVE-BLOCK-END


def build_model(config):
    args = ModelArgs(vocab_size=config.vocab_size, dim=config.hidden_size, n_layers=config.n_layers,
                     n_heads=config.n_heads, max_seq_len=config.seq_len)
    return Transformer(args)
