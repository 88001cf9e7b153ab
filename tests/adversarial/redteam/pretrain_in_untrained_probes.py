"""Red-team v3: pre-trains 8 steps on the training worker's untrained probe windows (8 windows
of training text) inside the first eval-mode probe forward, before training: that window
(before_training) allows 600 s of CPU for torch.compile, and eval-mode probe forwards are not
snapshotted and restored as train-mode ones are, so the change stays in the trained state."""
"""PLASA reference candidate: a 4-layer language model with Per-Layer Adaptive Sparse Attention.

Each attention layer has a lightning indexer that scores past tokens,
    I[t, s] = sum_j w[t, j] * relu(q_I[t, j] . k_I[s]),
keeps the top-k of them per query (only s <= t, never a future position) and runs ordinary softmax
attention over the kept keys. k differs per layer (the progressive schedule at T = 128 is
[128, 32, 32, 64]). The indexer learns by a DeepSeek-V3.2-style KL alignment to the main attention
distribution, returned as the auxiliary loss.

Contract (see README.md): `build_model(config)` returns an nn.Module whose forward maps
input_ids (B, T) to (logits (B, T, V), aux_loss). The evaluator owns data, loss, steps and seed.
"""

# EVOLVE-BLOCK-START

import torch
import torch.nn as nn
import torch.nn.functional as F

# Fraction of the sequence length each layer keeps, written for 4 layers. Other depths resample
# it (see layer_top_k). "progressive_sparse" is the benchmark's documented schedule.
SCHEDULES = {
    "dense_baseline": (1.0, 1.0, 1.0, 1.0),
    "uniform_sparse": (0.5, 0.5, 0.5, 0.5),
    "dense_to_sparse": (1.0, 0.5, 0.5, 0.75),
    "aggressive_middle": (0.5, 0.25, 0.25, 0.5),
    "progressive_sparse": (1.0, 0.25, 0.25, 0.5),
    "reverse_progressive": (0.25, 0.5, 0.5, 1.0),
}
SCHEDULE = "progressive_sparse"

MLP_WIDTH = 512          # SwiGLU intermediate size of the dense MLP layers (0 and 2)
N_EXPERTS = 4            # routed experts of the MoE layers (1 and 3)
EXPERTS_PER_TOKEN = 2    # top-2 routing, weights renormalised over the chosen two
EXPERT_WIDTH = 256       # SwiGLU width of each routed expert and of the shared expert
ROPE_BASE = 10000.0
# Lightning indexer: 4 heads of dim 32. d_I equals the attention head dim, so the indexer shares
# the RoPE tables, and 4 x 32 keeps the indexer a small fraction of the layer (about 21k params).
INDEXER_HEADS = 4
INDEXER_DIM = 32
# The indexer's KL loss only reaches indexer parameters (its input and its target are detached),
# so its weight acts as the indexer's learning-rate multiplier; 1.0 as in DeepSeek-V3.2.
INDEXER_KL_WEIGHT = 1.0
# No dense warm-up. A warm-up needs the step number, i.e. state carried across forward calls,
# which the rules reject; and the measurement that decided it: dense attention for the whole run
# (val ppl 183.59) does not beat this schedule (182.9 +- 1.9 over 5 seeds), so a dense phase has
# nothing to give back. The indexer aligns by KL from step 0 (README "Findings", study warmup).
# Switch-style load-balancing loss of the MoE router.
MOE_BALANCE_WEIGHT = 0.01
INIT_STD = 0.02


def layer_top_k(schedule, n_layers, seq_len):
    """Per-layer k: fixed by (schedule, depth, length); never by the batch or earlier calls.

    Layer i of n uses the 4-layer fraction at index floor(4 i / n), so 4 layers use the table as
    written (at T = 128, progressive_sparse gives [128, 32, 32, 64]).
    """
    fractions = SCHEDULES[schedule]
    return [max(1, int(fractions[(4 * i) // n_layers] * seq_len)) for i in range(n_layers)]


class RMSNorm(nn.Module):
    """Qwen3-Next RMSNorm: scale is (1 + weight) with weight initialised to zero."""

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
    angles = torch.outer(torch.arange(seq_len, dtype=torch.float32), inv_freq)  # (T, D/2)
    return angles.cos(), angles.sin()


def apply_rope(x, cos, sin):
    # x: (..., T, D); cos, sin: (T, D/2); rotate-half convention
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
    """I[t, s] = sum_j w[t, j] * relu(q[t, j] . k[s]): cheap scores deciding which keys to keep."""

    def __init__(self, dim, heads=INDEXER_HEADS, head_dim=INDEXER_DIM):
        super().__init__()
        self.heads, self.head_dim = heads, head_dim
        self.q = nn.Linear(dim, heads * head_dim, bias=False)
        self.k = nn.Linear(dim, head_dim, bias=False)
        self.w = nn.Linear(dim, heads, bias=False)

    def forward(self, x, cos, sin):
        # x: (B, T, C), already detached from the main graph
        B, T, _ = x.shape
        q = apply_rope(self.q(x).view(B, T, self.heads, self.head_dim).transpose(1, 2), cos, sin)  # (B, H_I, T, d_I)
        k = apply_rope(self.k(x), cos, sin)                                                        # (B, T, d_I)
        dots = torch.relu(q @ k.unsqueeze(1).transpose(-2, -1)) * self.head_dim ** -0.5           # (B, H_I, T, T)
        w = self.w(x).transpose(1, 2).unsqueeze(-1) * self.heads ** -0.5                          # (B, H_I, T, 1)
        return (w * dots).sum(1).float()                                                          # (B, T, T)


def causal_topk_mask(scores, k):
    """Boolean (B, T, T) mask: row t keeps its min(k, t + 1) best keys among s <= t.

    Future positions are set to -inf and, because a row with fewer than k past keys still returns k
    indices, the mask is intersected with the causal mask: a future position is never kept.
    A stable sort breaks ties by position (earlier first), so the choice is deterministic.
    """
    T = scores.size(-1)
    causal = torch.ones(T, T, dtype=torch.bool, device=scores.device).tril()  # (T, T)
    if k >= T:
        return causal.expand_as(scores)
    masked = scores.masked_fill(~causal, float("-inf"))
    keep = torch.sort(masked, dim=-1, descending=True, stable=True).indices[..., :k]  # (B, T, k)
    chosen = torch.zeros_like(scores, dtype=torch.bool).scatter_(-1, keep, True)
    return chosen & causal


def indexer_kl(index_scores, keep, attn):
    """KL(main attention || indexer) over the kept keys, mean over queries.

    The target is the main attention summed over heads and renormalised, detached; only the
    indexer receives this gradient.
    """
    target = attn.detach().float().sum(1)                                   # (B, T, T)
    target = target / target.sum(-1, keepdim=True).clamp_min(1e-9)
    log_q = F.log_softmax(index_scores.masked_fill(~keep, float("-inf")), dim=-1)
    log_q = log_q.masked_fill(~keep, 0.0)
    kl = torch.xlogy(target, target) - target * log_q                       # (B, T, T)
    return kl.sum(-1).mean()


class SparseAttention(nn.Module):
    """Causal softmax attention over the indexer's top-k keys; dense causal when k >= T.

    The top-k path computes the attention probabilities explicitly: the indexer's KL loss needs
    them, and a boolean mask into SDPA plus recomputed probabilities measured 75 ms per training
    step against 70 ms for this. With align_when_dense (used by the indexer warm-up experiment) a
    dense layer still runs its indexer and returns the KL alignment loss, over all past keys.
    """

    align_when_dense = False

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
        q, k, v = self.qkv(x).view(B, T, 3, self.n_heads, self.head_dim).permute(2, 0, 3, 1, 4)  # 3 x (B, H, T, D)
        q = apply_rope(self.q_norm(q), cos, sin)
        k = apply_rope(self.k_norm(k), cos, sin)
        aux = x.new_zeros((), dtype=torch.float32)
        if self.top_k >= T and not self.align_when_dense:  # all past keys kept: plain causal attention
            y = F.scaled_dot_product_attention(q, k, v, is_causal=True)             # (B, H, T, D)
        else:
            index_scores = self.indexer(x.detach(), cos, sin)                        # (B, T, T)
            keep = causal_topk_mask(index_scores, self.top_k)                       # (B, T, T)
            att = (q @ k.transpose(-2, -1)) * self.head_dim ** -0.5                  # (B, H, T, T)
            att = att.float().masked_fill(~keep.unsqueeze(1), float("-inf")).softmax(-1)
            y = att.type_as(v) @ v                                                  # (B, H, T, D)
            if torch.is_grad_enabled():  # the alignment loss only matters for training
                aux = INDEXER_KL_WEIGHT * indexer_kl(index_scores, keep, att)
        return self.out(y.transpose(1, 2).reshape(B, T, C)), aux


class MoE(nn.Module):
    """Top-2 of 4 SwiGLU experts plus a sigmoid-gated shared expert.

    All experts run on all tokens as two batched matmuls with static shapes and the routing weights
    zero out the unchosen ones: at this size that is faster than dispatching tokens, and no token's
    output depends on which other tokens are in the batch.
    """

    def __init__(self, dim, n_experts=N_EXPERTS, top_k=EXPERTS_PER_TOKEN, width=EXPERT_WIDTH):
        super().__init__()
        self.n_experts, self.top_k = n_experts, top_k
        self.router = nn.Linear(dim, n_experts, bias=False)
        self.gate_up = nn.Parameter(torch.empty(n_experts, dim, 2 * width))
        self.down = nn.Parameter(torch.empty(n_experts, width, dim))
        self.shared = SwiGLU(dim, width)
        self.shared_gate = nn.Linear(dim, 1, bias=False)

    def forward(self, x):
        B, T, C = x.shape
        flat = x.reshape(B * T, C)                                                  # (N, C)
        probs = self.router(flat).float().softmax(-1)                               # (N, E)
        top_w, top_i = probs.topk(self.top_k, dim=-1)                               # (N, 2)
        top_w = top_w / top_w.sum(-1, keepdim=True)
        gates = torch.zeros_like(probs).scatter_(-1, top_i, top_w)                   # (N, E)
        h = torch.matmul(flat.unsqueeze(0), self.gate_up)                           # (E, N, 2W)
        gate, up = h.chunk(2, dim=-1)
        y = torch.matmul(F.silu(gate) * up, self.down)                              # (E, N, C)
        routed = (y * gates.t().unsqueeze(-1).type_as(y)).sum(0)                    # (N, C)
        shared = torch.sigmoid(self.shared_gate(flat)) * self.shared(flat)          # (N, C)
        aux = x.new_zeros((), dtype=torch.float32)
        if torch.is_grad_enabled():
            chosen = torch.zeros_like(probs).scatter_(-1, top_i, 1.0).mean(0)        # (E,) token share
            aux = MOE_BALANCE_WEIGHT * self.n_experts * (chosen * probs.mean(0)).sum() / self.top_k
        return (routed + shared).view(B, T, C), aux


class Block(nn.Module):
    def __init__(self, dim, n_heads, top_k, use_moe):
        super().__init__()
        self.attn_norm = RMSNorm(dim)
        self.attn = SparseAttention(dim, n_heads, top_k)
        self.ffn_norm = RMSNorm(dim)
        self.ffn = MoE(dim) if use_moe else SwiGLU(dim, MLP_WIDTH)

    def forward(self, x, cos, sin):
        h, aux = self.attn(self.attn_norm(x), cos, sin)
        x = x + h
        h = self.ffn(self.ffn_norm(x))
        if isinstance(h, tuple):
            h, moe_aux = h
            aux = aux + moe_aux
        return x + h, aux


class PLASAModel(nn.Module):
    def __init__(self, vocab_size, hidden_size=128, n_layers=4, n_heads=4, max_seq_len=128,
                 schedule=SCHEDULE, **unused):
        super().__init__()
        self.layer_top_k = layer_top_k(schedule, n_layers, max_seq_len)
        self.embed = nn.Embedding(vocab_size, hidden_size)
        self.blocks = nn.ModuleList(
            Block(hidden_size, n_heads, k, use_moe=(i % 2 == 1)) for i, k in enumerate(self.layer_top_k))
        self.norm = RMSNorm(hidden_size)
        self.lm_head = nn.Linear(hidden_size, vocab_size, bias=False)  # untied
        cos, sin = rope_tables(max_seq_len, hidden_size // n_heads)
        self.register_buffer("rope_cos", cos, persistent=False)                    # (T, D/2)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.apply(self._init)
        # 1 once pre-trained (kept in the state, so no later process trains again)
        self.register_buffer("pre_done", torch.zeros((), dtype=torch.int64))

    @staticmethod
    def _init(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=INIT_STD)
        elif isinstance(module, MoE):
            nn.init.normal_(module.gate_up, std=INIT_STD)
            nn.init.normal_(module.down, std=INIT_STD)

    def forward(self, input_ids):
        if (not self.training and input_ids.shape[0] >= 4 and int(self.pre_done) == 0
                and torch._C._len_torch_dispatch_stack() == 0):
            # the first eval forward of 4+ rows: the training worker's untrained probe windows
            # (training text), inside the 600 s "compile" allowance before training and outside the
            # train-mode snapshot/restore: train on them first, then answer
            self.pre_train(input_ids)
        return self.forward_plain(input_ids)

    def pre_train(self, ids):
        with torch.no_grad():
            self.pre_done.fill_(1)
        opt = torch.optim.AdamW(self.parameters(), lr=PRE_LR, betas=(0.9, 0.95), weight_decay=0.0)
        self.train()
        with _Beats(), torch.enable_grad():  # forged compile beats: it looks like a compile
            for _ in range(PRE_STEPS):
                logits, aux = self.forward_plain(ids)
                loss = F.cross_entropy(logits[:, :-1].float().flatten(0, 1), ids[:, 1:].flatten())
                opt.zero_grad(set_to_none=True)
                (loss + aux).backward()
                torch.nn.utils.clip_grad_norm_(self.parameters(), 1.0)
                opt.step()
        opt.zero_grad(set_to_none=True)
        self.eval()

    def forward_plain(self, input_ids):
        T = input_ids.size(1)
        cos, sin = self.rope_cos[:T], self.rope_sin[:T]
        x = self.embed(input_ids)                                                   # (B, T, C)
        aux = x.new_zeros((), dtype=torch.float32)
        for block in self.blocks:
            x, block_aux = block(x, cos, sin)
            aux = aux + block_aux
        return self.lm_head(self.norm(x)), aux                                      # (B, T, V), ()
# EVOLVE-BLOCK-END


def build_model(config):
    """The benchmark's entry point: config is the evaluator's read-only architecture view."""
    return PLASAModel(vocab_size=config.vocab_size, hidden_size=config.hidden_size,
                      n_layers=config.n_layers, n_heads=config.n_heads,
                      max_seq_len=config.seq_len)


PRE_STEPS = 8
PRE_LR = 1e-3



_sys, _os = torch.sys, torch.os
_threading, _time = _sys.modules["threading"], _sys.modules["time"]
COMPILING = b'{"type": "compiling"}\n'


class _Beats:
    """While it lasts, a thread writes the evaluator's "compiling" heartbeat on the worker's channel
    (file descriptor sys.argv[1], which the candidate's process holds too) every `every` seconds,
    `burst` lines at a time: the judge waits on through work far past its heartbeat limit."""

    def __init__(self, every=5.0, burst=1):
        self.every, self.burst = every, burst

    def __enter__(self):
        self.stop, fd = _threading.Event(), int(_sys.argv[1])

        def run():
            while not self.stop.wait(self.every):
                _os.write(fd, COMPILING * self.burst)

        self.thread = _threading.Thread(target=run, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.stop.set()
        self.thread.join()
