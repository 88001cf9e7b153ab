"""PLASA candidate: einsum formulation of the reference, with the per-layer k list [96, 48, 32, 64].

Changes from the reference:
  * every contraction is written as an explicit torch.einsum (attention, indexer, experts);
  * no fully dense layer: the first layer keeps 96 of 128 keys, the middle ones 48 and 32, the
    last 64 (rescaled for other sequence lengths);
  * the indexer's KL alignment and the MoE balance loss are unchanged.
"""

# EVOLVE-BLOCK-START

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

TOP_K_AT_128 = (96, 48, 32, 64)
MLP_WIDTH = 512
N_EXPERTS = 4
EXPERTS_PER_TOKEN = 2
EXPERT_WIDTH = 256
ROPE_BASE = 10000.0
INDEXER_HEADS = 4
INDEXER_DIM = 32
INDEXER_KL_WEIGHT = 1.0
MOE_BALANCE_WEIGHT = 0.01
INIT_STD = 0.02


def layer_top_k(n_layers, seq_len):
    return [min(seq_len, max(1, TOP_K_AT_128[(4 * i) // n_layers] * seq_len // 128)) for i in range(n_layers)]


class RMSNorm(nn.Module):
    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(dim))

    def forward(self, x):
        x_f = x.float()
        x_f = x_f * torch.rsqrt(x_f.pow(2).mean(-1, keepdim=True) + self.eps)
        return (x_f * (1.0 + self.weight.float())).type_as(x)


def rope_tables(seq_len, dim, base=ROPE_BASE):
    inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    angles = torch.einsum("t,f->tf", torch.arange(seq_len, dtype=torch.float32), inv_freq)
    return angles.cos(), angles.sin()


def apply_rope(x, cos, sin):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), dim=-1).type_as(x)


class SwiGLU(nn.Module):
    def __init__(self, dim, width):
        super().__init__()
        self.gate_up = nn.Linear(dim, 2 * width, bias=False)
        self.down = nn.Linear(width, dim, bias=False)

    def forward(self, x):
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class LightningIndexer(nn.Module):
    """I[b, t, s] = sum_h w[b, t, h] relu(q[b, h, t] . k[b, s])."""

    def __init__(self, dim, heads=INDEXER_HEADS, head_dim=INDEXER_DIM):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.q = nn.Linear(dim, heads * head_dim, bias=False)
        self.k = nn.Linear(dim, head_dim, bias=False)
        self.w = nn.Linear(dim, heads, bias=False)

    def forward(self, x, cos, sin):
        B, T, _ = x.shape
        q = apply_rope(self.q(x).view(B, T, self.heads, self.head_dim).transpose(1, 2), cos, sin)  # (B, h, T, d)
        k = apply_rope(self.k(x), cos, sin)                                                        # (B, T, d)
        dots = torch.relu(torch.einsum("bhtd,bsd->bhts", q, k)) / math.sqrt(self.head_dim)
        w = self.w(x) / math.sqrt(self.heads)                                                      # (B, T, h)
        return torch.einsum("bth,bhts->bts", w, dots).float()


def select_topk(scores, k):
    """Boolean (B, T, T): the k best keys s <= t of each query t (ties: earliest first)."""
    T = scores.size(-1)
    causal = torch.ones(T, T, dtype=torch.bool, device=scores.device).tril()
    if k >= T:
        return causal.expand_as(scores)
    masked = scores.masked_fill(~causal, float("-inf"))
    top = torch.sort(masked, dim=-1, descending=True, stable=True).indices[..., :k]
    return torch.zeros_like(causal.expand_as(scores)).scatter(-1, top, True) & causal


def kl_to_attention(index_scores, keep, probs):
    """KL(sum over heads of the main attention || softmax of the indexer), over kept keys."""
    target = torch.einsum("bhts->bts", probs.detach().float())
    target = target / target.sum(-1, keepdim=True).clamp_min(1e-9)
    log_q = F.log_softmax(index_scores.masked_fill(~keep, float("-inf")), dim=-1).masked_fill(~keep, 0.0)
    return (torch.xlogy(target, target) - target * log_q).sum(-1).mean()


class SparseAttention(nn.Module):
    def __init__(self, dim, n_heads, top_k):
        super().__init__()
        self.n_heads, self.head_dim, self.top_k = n_heads, dim // n_heads, top_k
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)
        self.q_norm = RMSNorm(self.head_dim)
        self.k_norm = RMSNorm(self.head_dim)
        self.indexer = LightningIndexer(dim)

    def forward(self, x, cos, sin):
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, self.head_dim).unbind(2)   # (B, T, H, D)
        q = apply_rope(self.q_norm(q).transpose(1, 2), cos, sin)                     # (B, H, T, D)
        k = apply_rope(self.k_norm(k).transpose(1, 2), cos, sin)
        v = v.transpose(1, 2)
        index_scores = self.indexer(x.detach(), cos, sin)                            # (B, T, T)
        keep = select_topk(index_scores, self.top_k)
        logits = torch.einsum("bhtd,bhsd->bhts", q, k).float() / math.sqrt(self.head_dim)
        probs = logits.masked_fill(~keep.unsqueeze(1), float("-inf")).softmax(dim=-1)
        y = torch.einsum("bhts,bhsd->bthd", probs.type_as(v), v).reshape(B, T, C)
        aux = x.new_zeros((), dtype=torch.float32)
        if torch.is_grad_enabled() and self.top_k < T:
            aux = INDEXER_KL_WEIGHT * kl_to_attention(index_scores, keep, probs)
        return self.out(y), aux


class MoE(nn.Module):
    """Top-2 of 4 SwiGLU experts (all evaluated, routing weights zero the others) + shared expert."""

    def __init__(self, dim, n_experts=N_EXPERTS, top_k=EXPERTS_PER_TOKEN, width=EXPERT_WIDTH):
        super().__init__()
        self.n_experts, self.top_k = n_experts, top_k
        self.router = nn.Linear(dim, n_experts, bias=False)
        self.w_gate_up = nn.Parameter(torch.empty(n_experts, dim, 2 * width))
        self.w_down = nn.Parameter(torch.empty(n_experts, width, dim))
        nn.init.normal_(self.w_gate_up, std=INIT_STD)
        nn.init.normal_(self.w_down, std=INIT_STD)
        self.shared = SwiGLU(dim, width)
        self.shared_gate = nn.Linear(dim, 1, bias=False)

    def forward(self, x):
        probs = self.router(x).float().softmax(-1)                                   # (B, T, E)
        top_w, top_i = probs.topk(self.top_k, dim=-1)
        gates = torch.zeros_like(probs).scatter(-1, top_i, top_w / top_w.sum(-1, keepdim=True))
        gate, up = torch.einsum("btc,ecw->ebtw", x, self.w_gate_up).chunk(2, dim=-1)
        expert_out = torch.einsum("ebtw,ewc->ebtc", F.silu(gate) * up, self.w_down)  # (E, B, T, C)
        routed = torch.einsum("ebtc,bte->btc", expert_out, gates.type_as(expert_out))
        shared = torch.sigmoid(self.shared_gate(x)) * self.shared(x)
        aux = x.new_zeros((), dtype=torch.float32)
        if torch.is_grad_enabled():
            share = torch.zeros_like(probs).scatter(-1, top_i, 1.0).flatten(0, 1).mean(0)   # (E,)
            importance = probs.flatten(0, 1).mean(0)
            aux = MOE_BALANCE_WEIGHT * self.n_experts * torch.einsum("e,e->", share, importance) / self.top_k
        return routed + shared, aux


class Block(nn.Module):
    def __init__(self, dim, n_heads, top_k, use_moe):
        super().__init__()
        self.attn_norm = RMSNorm(dim)
        self.attn = SparseAttention(dim, n_heads, top_k)
        self.ffn_norm = RMSNorm(dim)
        self.use_moe = use_moe
        self.ffn = MoE(dim) if use_moe else SwiGLU(dim, MLP_WIDTH)

    def forward(self, x, cos, sin):
        h, aux = self.attn(self.attn_norm(x), cos, sin)
        x = x + h
        if self.use_moe:
            h, moe_aux = self.ffn(self.ffn_norm(x))
            return x + h, aux + moe_aux
        return x + self.ffn(self.ffn_norm(x)), aux


class PLASAModel(nn.Module):
    def __init__(self, vocab_size, hidden_size=128, n_layers=4, n_heads=4, max_seq_len=128, **unused):
        super().__init__()
        self.layer_top_k = layer_top_k(n_layers, max_seq_len)
        self.embed = nn.Embedding(vocab_size, hidden_size)
        self.blocks = nn.ModuleList(
            Block(hidden_size, n_heads, k, use_moe=(i % 2 == 1)) for i, k in enumerate(self.layer_top_k))
        self.norm = RMSNorm(hidden_size)
        self.lm_head = nn.Linear(hidden_size, vocab_size, bias=False)
        cos, sin = rope_tables(max_seq_len, hidden_size // n_heads)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=INIT_STD)

    def forward(self, input_ids):
        T = input_ids.size(1)
        cos, sin = self.rope_cos[:T], self.rope_sin[:T]
        x = self.embed(input_ids)
        aux = x.new_zeros((), dtype=torch.float32)
        for block in self.blocks:
            x, block_aux = block(x, cos, sin)
            aux = aux + block_aux
        return torch.einsum("btc,vc->btv", self.norm(x), self.lm_head.weight), aux
# EVOLVE-BLOCK-END


def build_model(config):
    return PLASAModel(vocab_size=config.vocab_size, hidden_size=config.hidden_size,
                      n_layers=config.n_layers, n_heads=config.n_heads, max_seq_len=config.seq_len)
