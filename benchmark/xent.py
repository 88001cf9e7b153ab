"""Log-sum-exp over the 49,152-way vocabulary without a full-size temporary: one row block at a
time through a small fp32 buffer that stays in cache (max, subtract, exp in place, sum).

The judge's cross-entropy of handed-over logits rests on it. Measured on the 2-core AMD EPYC:
1.1 ns per logit, against 2.5 ns for torch.logsumexp plus max-with-indices in 64-row chunks.
(The same blocks as a training loss, forward and backward, measured 30 ms per step against
F.cross_entropy's 24 ms, so the training loop keeps F.cross_entropy.)
"""

from __future__ import annotations

import torch

from .spec import SPEC

CHUNK = SPEC.ce_chunk  # rows per block (16 x 49,152 fp32 = 3 MiB)


def row_logsumexp(flat: torch.Tensor, chunk: int = CHUNK) -> tuple:
    """(log-sum-exp, maximum) of each row of a (N, V) tensor of any float dtype, as fp32 (N,)
    tensors; exact to fp32 rounding (max |error| 1.3e-6 against float64 on N(0, 9) logits)."""
    n, v = flat.shape
    lse = torch.empty(n, dtype=torch.float32, device=flat.device)
    top = torch.empty(n, dtype=torch.float32, device=flat.device)
    buf = torch.empty(min(chunk, max(n, 1)), v, dtype=torch.float32, device=flat.device)
    for start in range(0, n, chunk):
        rows = flat[start:start + chunk]
        part = buf[:len(rows)]
        if rows.dtype != torch.float32:
            part.copy_(rows)
            rows = part
        peak = torch.amax(rows, -1, keepdim=True)
        torch.sub(rows, peak, out=part)
        torch.sum(part.exp_(), -1, out=lse[start:start + chunk])
        lse[start:start + chunk].log_().add_(peak.squeeze(-1))
        top[start:start + chunk] = peak.squeeze(-1)
    return lse, top
