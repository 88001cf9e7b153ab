"""Gated DeltaNet in pure PyTorch: the gated delta rule, step by step and chunked.

Per head, with state S (d_k, d_v), decay a_t = exp(g_t) in (0, 1] and write strength beta_t:
    S_t = a_t S_{t-1} + beta_t k_t (v_t - a_t S_{t-1}^T k_t)^T,     o_t = S_t^T q_t.

Chunked form (chunk of C steps entering with state S0; gamma_i = prod_{j<=i} a_j in the chunk):
unrolling gives S_i = gamma_i (S0 + sum_{j<=i} k_j u_j^T / gamma_j), where the pseudo-values
solve the unit lower-triangular system
    u_i + beta_i sum_{j<i} (gamma_i / gamma_j)(k_i . k_j) u_j = beta_i (v_i - gamma_i S0^T k_i),
so U = T (beta V) - T (beta gamma K) S0 with T = (I + A)^{-1}. Then
    O = diag(gamma) Q S0 + ((Q K^T) * M) U,   M_ij = gamma_i / gamma_j (j <= i, else 0),
    S_C = gamma_C S0 + K^T diag(gamma_C / gamma_j) U.
Only the chunk loop is sequential; both forms are tested against each other (outputs, gradients).
On CUDA with `fla` installed, `fla.ops.gated_delta_rule.chunk_gated_delta_rule` is used instead.
"""

from __future__ import annotations

import logging
import math
from typing import Optional

import torch
import torch.nn as nn
import torch.nn.functional as F

log = logging.getLogger(__name__)


def recurrent_gated_delta_rule(q, k, v, g, beta, initial_state: Optional[torch.Tensor] = None):
    """Step by step. q, k: (B, H, T, Dk); v: (B, H, T, Dv); g (log decay), beta: (B, H, T).
    Returns outputs (B, H, T, Dv) and the final state (B, H, Dk, Dv)."""
    B, H, T, Dk = k.shape
    state = (q.new_zeros(B, H, Dk, v.shape[-1]) if initial_state is None else initial_state)
    outs = []
    for t in range(T):
        state = state * g[:, :, t, None, None].exp()
        k_t, v_t, b_t = k[:, :, t], v[:, :, t], beta[:, :, t, None]
        predicted = (state * k_t[..., None]).sum(-2)                             # (B, H, Dv)
        state = state + k_t[..., None] * (b_t * (v_t - predicted))[..., None, :]  # (B, H, Dk, Dv)
        outs.append((state * q[:, :, t, :, None]).sum(-2))                       # (B, H, Dv)
    return torch.stack(outs, dim=2), state


def chunk_gated_delta_rule(q, k, v, g, beta, chunk: int = 64, initial_state: Optional[torch.Tensor] = None):
    """Chunked form of recurrent_gated_delta_rule (same arguments and results)."""
    B, H, T, Dk = k.shape
    Dv = v.shape[-1]
    pad = (-T) % chunk
    if pad:  # zero k, v, beta and g leave the state unchanged; padded outputs are dropped
        q, k, v = (F.pad(x, (0, 0, 0, pad)) for x in (q, k, v))
        g, beta = (F.pad(x, (0, pad)) for x in (g, beta))
    n = q.shape[2] // chunk
    q, k, v = (x.reshape(B, H, n, chunk, x.shape[-1]) for x in (q, k, v))      # (B, H, N, C, D)
    g, beta = (x.reshape(B, H, n, chunk) for x in (g, beta))                    # (B, H, N, C)
    G = g.cumsum(-1)                                                             # log gamma
    lower = torch.ones(chunk, chunk, dtype=torch.bool, device=q.device).tril()
    strict = lower.clone().fill_diagonal_(False)
    decay = (G[..., :, None] - G[..., None, :]).masked_fill(~lower, float("-inf")).exp()  # (B, H, N, C, C)
    A = (beta[..., None] * (k @ k.transpose(-2, -1)) * decay).masked_fill(~strict, 0.0)
    eye = torch.eye(chunk, dtype=q.dtype, device=q.device)
    T_inv_rhs = torch.linalg.solve_triangular(eye + A, torch.cat(
        [beta[..., None] * v, (beta * G.exp())[..., None] * k], dim=-1), upper=False, unitriangular=True)
    u0, w = T_inv_rhs[..., :Dv], T_inv_rhs[..., Dv:]                            # (B,H,N,C,Dv), (..,Dk)
    qk = (q @ k.transpose(-2, -1)) * decay                                       # (B, H, N, C, C)
    state = q.new_zeros(B, H, Dk, Dv) if initial_state is None else initial_state
    outs = []
    for c in range(n):
        u = u0[:, :, c] - w[:, :, c] @ state                                     # (B, H, C, Dv)
        gamma = G[:, :, c].exp()                                                 # (B, H, C)
        outs.append(gamma[..., None] * (q[:, :, c] @ state) + qk[:, :, c] @ u)
        to_end = (G[:, :, c, -1:] - G[:, :, c]).exp()                             # gamma_C / gamma_j
        state = gamma[..., -1, None, None] * state + k[:, :, c].transpose(-2, -1) @ (to_end[..., None] * u)
    out = torch.stack(outs, dim=2).reshape(B, H, n * chunk, Dv)
    return out[:, :, :T], state


def _fla_kernel():
    try:
        from fla.ops.gated_delta_rule import chunk_gated_delta_rule as fla_chunk
    except ImportError:
        return None
    return fla_chunk


class ShortConv(nn.Module):
    """Causal depthwise convolution (kernel 4) followed by SiLU."""

    def __init__(self, channels: int, kernel: int = 4):
        super().__init__()
        self.conv = nn.Conv1d(channels, channels, kernel, groups=channels, padding=kernel - 1, bias=False)

    def forward(self, x):                                                        # (B, T, C)
        return F.silu(self.conv(x.transpose(1, 2))[..., : x.shape[1]].transpose(1, 2))


class GatedDeltaNet(nn.Module):
    """A token mixer with the attention layers' interface: forward(x, cos, sin) -> (y, aux)."""

    def __init__(self, dim: int, heads: int = 2, head_dim: int = 64, chunk: int = 64):
        super().__init__()
        self.heads, self.head_dim, self.chunk = heads, head_dim, chunk
        inner = heads * head_dim
        self.q, self.k, self.v = (nn.Linear(dim, inner, bias=False) for _ in range(3))
        self.q_conv, self.k_conv, self.v_conv = (ShortConv(inner) for _ in range(3))
        self.a = nn.Linear(dim, heads, bias=False)       # decay gate
        self.b = nn.Linear(dim, heads, bias=False)       # write strength beta
        self.gate = nn.Linear(dim, inner, bias=False)    # output gate
        self.out = nn.Linear(inner, dim, bias=False)
        self.A_log = nn.Parameter(torch.log(torch.empty(heads).uniform_(1, 16)))
        dt = torch.exp(torch.rand(heads) * (math.log(0.1) - math.log(0.001)) + math.log(0.001))
        self.dt_bias = nn.Parameter(dt + torch.log(-torch.expm1(-dt)))  # softplus^-1(dt)
        self.norm_weight = nn.Parameter(torch.ones(head_dim))

    def _heads(self, x):                                                         # (B, T, H*D) -> (B, H, T, D)
        B, T, _ = x.shape
        return x.view(B, T, self.heads, self.head_dim).transpose(1, 2)

    def _fla(self, q, k, v, g, beta):
        """fla's Triton kernel (layout (B, T, H, D)) when installed; None to use our own."""
        kernel = _fla_kernel()
        if kernel is None:
            return None
        try:
            o, _ = kernel(*(t.transpose(1, 2).contiguous() for t in (q * self.head_dim ** 0.5, k, v)),
                          g.transpose(1, 2).contiguous(), beta.transpose(1, 2).contiguous(),
                          scale=self.head_dim ** -0.5)
        except (TypeError, RuntimeError) as exc:  # an fla release with another signature
            log.warning("fla's chunk_gated_delta_rule failed (%s); using the PyTorch chunked form", exc)
            return None
        return o.transpose(1, 2)

    def forward(self, x, cos=None, sin=None):
        B, T, _ = x.shape
        q = F.normalize(self._heads(self.q_conv(self.q(x))).float(), dim=-1) * self.head_dim ** -0.5
        k = F.normalize(self._heads(self.k_conv(self.k(x))).float(), dim=-1)
        v = self._heads(self.v_conv(self.v(x))).float()
        g = (-self.A_log.float().exp() * F.softplus(self.a(x).float() + self.dt_bias)).transpose(1, 2)  # (B, H, T)
        beta = torch.sigmoid(self.b(x).float()).transpose(1, 2)                 # (B, H, T)
        o = self._fla(q, k, v, g, beta) if x.is_cuda else None
        if o is None:
            o, _ = chunk_gated_delta_rule(q, k, v, g, beta, chunk=self.chunk)    # (B, H, T, Dv)
        o = o * torch.rsqrt(o.pow(2).mean(-1, keepdim=True) + 1e-6) * self.norm_weight
        o = o.transpose(1, 2).reshape(B, T, -1).type_as(x) * F.silu(self.gate(x))
        return self.out(o), x.new_zeros((), dtype=torch.float32)
