"""Behaviour probes: causality, batch independence and statelessness, measured on real data.

Every probe compares the logits of two forward passes that must agree for an honest model:
  causality          a window vs the same window with every token after a cut point p replaced
                     (logits at positions <= p must not move);
  batch composition  a window in one batch vs the same window in another batch, another row,
                     later in the run (no mixing across the batch, no state carried over).
Differences are measured relative to the logit scale: max |a - b| / (std(a) + 1e-6).
The hidden probe batches look exactly like validation batches and run among them.
"""

from __future__ import annotations

import hashlib
from typing import Callable, Optional

import numpy as np
import torch

from . import guard
from .result import check

Forward = Callable[[torch.Tensor], torch.Tensor]  # input_ids (B, T) -> fp32 logits (B, T, V)


def relative_diff(ref: torch.Tensor, alt: torch.Tensor, scale: float) -> torch.Tensor:
    """max |ref - alt| over the last dim, per position, relative to `scale`."""
    return (ref.float() - alt.float()).abs().amax(-1) / (scale + 1e-6)


def suffix_swap(x: torch.Tensor, rng: np.random.Generator) -> tuple:
    """Each row keeps tokens [0, p] and takes tokens (p, T) from the next row; returns (x', cuts)."""
    n, T = x.shape
    # stratified over [0, T - 2], so early and late cut points are both probed
    cuts = rng.permutation(((np.arange(n) + rng.random(n)) * (T - 1) / n).astype(int))
    donor = x.roll(1, dims=0) if n > 1 else (x + 1) % (int(x.max()) + 1)
    swapped = x.clone()
    for i, p in enumerate(cuts):
        swapped[i, p + 1:] = donor[i, p + 1:]
    return swapped, cuts


def causality_check(name: str, ref: torch.Tensor, alt: torch.Tensor, cuts, tol: float) -> dict:
    """ref/alt: (n, T, V') logits of original and suffix-swapped rows."""
    scale = float(ref.float().std())
    worst = (0.0, -1, -1, -1)
    for i, p in enumerate(cuts):
        diff = relative_diff(ref[i, : p + 1], alt[i, : p + 1], scale)  # (p + 1,)
        pos = int(diff.argmax())
        if float(diff[pos]) > worst[0]:
            worst = (float(diff[pos]), i, pos, int(p))
    rel, row, pos, cut = worst
    if rel <= tol:
        return check(name, True, f"{len(cuts)} windows, max relative change {rel:.2e} <= {tol:g}")
    absolute = rel * (scale + 1e-6)
    return check(name, False, (
        f"future leak: in window {row}, the logits at position {pos} changed by {absolute:.3g} "
        f"(relative {rel:.3g} > {tol:g}) when only the tokens after position {cut} changed. "
        "A prediction at position t may only use tokens 0..t; check that every attention, top-k "
        "selection, convolution and mixing step masks future positions in train and eval mode."))


def composition_check(name: str, ref: torch.Tensor, alt: torch.Tensor, tol: float) -> dict:
    """ref/alt: (n, T, V') logits of the same windows evaluated in different batches."""
    scale = float(ref.float().std())
    diff = relative_diff(ref, alt, scale)  # (n, T)
    rel = float(diff.max())
    if rel <= tol:
        return check(name, True, f"{ref.shape[0]} windows, max relative change {rel:.2e} <= {tol:g}")
    row, pos = divmod(int(diff.argmax()), diff.shape[1])
    return check(name, False, (
        f"window {row} gave different logits (position {pos} changed by {rel * scale:.3g}, relative "
        f"{rel:.3g} > {tol:g}) when evaluated in another batch, another row and later in the run. "
        "A window's logits may depend only on its own tokens: no mixing across the batch, no cache "
        "or state kept between forward calls."))


def state_fingerprint(model: torch.nn.Module) -> str:
    """Hash of every parameter and buffer, bit-exact."""
    digest = hashlib.blake2b(digest_size=16)
    for name, tensor in list(model.named_parameters()) + list(model.named_buffers()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


class HiddenProbes:
    """One probe batch, shaped like a validation batch, run at a random point of validation.

    Its first rows are suffix-swapped copies of validation windows (causality); the rest are
    validation windows in another order and batch composition (batch independence, statelessness).
    The logits of every probed window are kept on a random subset of vocabulary columns plus the
    row maximum, and compared with the logits the same window got in its own batch.
    """

    def __init__(self, inputs: torch.Tensor, batch_size: int, n_causal: int, n_columns: int,
                 vocab: int, rng: np.random.Generator) -> None:
        n = inputs.shape[0]
        n_batches = -(-n // batch_size)
        rows = min(batch_size, n)
        self.causal = rng.choice(n, size=min(n_causal, max(rows // 2, 1)), replace=False)
        others = rng.permutation(n)[: rows - len(self.causal)]
        self.reorder = others
        swapped, self.cuts = suffix_swap(inputs[torch.as_tensor(self.causal)], rng)
        self.batch = torch.cat([swapped, inputs[torch.as_tensor(others, dtype=torch.long)]])  # (rows, T)
        self.position = int(rng.integers(0, n_batches + 1))  # run before real batch `position`
        self.columns = torch.as_tensor(np.sort(rng.choice(vocab, size=min(n_columns, vocab),
                                                          replace=False)))
        self.wanted = {int(w) for w in np.concatenate([self.causal, self.reorder])}
        self.reference: dict = {}
        self.probe_logits: Optional[torch.Tensor] = None

    def _summary(self, logits: torch.Tensor) -> torch.Tensor:
        # logits (n, T, V) -> (n, T, C + 1): chosen columns and the row maximum
        cols = logits.index_select(-1, self.columns.to(logits.device)).float()
        return torch.cat([cols, logits.amax(-1, keepdim=True).float()], dim=-1).cpu()

    def record(self, window_ids: range, logits: torch.Tensor) -> None:
        hits = [(row, w) for row, w in enumerate(window_ids) if w in self.wanted]
        if hits:
            summary = self._summary(logits[[row for row, _ in hits]])
            for (row, w), s in zip(hits, summary):
                self.reference[w] = s

    def record_probe(self, logits: torch.Tensor) -> None:
        self.probe_logits = self._summary(logits)

    def checks(self, tol: float) -> list:
        if self.probe_logits is None:
            return [check("probe:hidden", False, "the probe batch was not evaluated")]
        k = len(self.causal)
        ref_causal = torch.stack([self.reference[int(w)] for w in self.causal])
        ref_other = torch.stack([self.reference[int(w)] for w in self.reorder])
        return [
            causality_check("probe:causality_eval", ref_causal, self.probe_logits[:k], self.cuts, tol),
            composition_check("probe:batch_independence", ref_other, self.probe_logits[k:], tol),
        ]


def forked_forward(forward: Forward, x: torch.Tensor, seed: int, device: torch.device) -> torch.Tensor:
    """A forward pass with the RNG forked and reseeded, so dropout masks repeat exactly."""
    devices = [device] if device.type == "cuda" else []
    with guard.fork_rng(devices=devices):
        guard.manual_seed(seed)
        return forward(x)


def direct_probes(eval_forward: Forward, train_forward: Forward, eval_x: torch.Tensor,
                  train_x: torch.Tensor, tol: float, rng: np.random.Generator, seed: int,
                  device: torch.device, prefix: str) -> list:
    """Causality in eval and train mode and batch independence, on given real windows."""
    results = []
    swapped, cuts = suffix_swap(eval_x, rng)
    ref = eval_forward(eval_x)
    results.append(causality_check(f"{prefix}:causality_eval", ref, eval_forward(swapped), cuts, tol))
    perm = torch.as_tensor(rng.permutation(eval_x.shape[0]))
    if eval_x.shape[0] > 1:
        shuffled = eval_forward(eval_x[perm])
        results.append(composition_check(f"{prefix}:batch_independence", ref[perm], shuffled, tol))
    del ref
    swapped, cuts = suffix_swap(train_x, rng)
    ref = forked_forward(train_forward, train_x, seed, device)
    alt = forked_forward(train_forward, swapped, seed, device)
    results.append(causality_check(f"{prefix}:causality_train", ref, alt, cuts, tol))
    return results
