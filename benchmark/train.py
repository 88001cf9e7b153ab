"""The evaluator-owned training loop and validation.

The candidate supplies only a model (and optionally an optimizer and an LR multiplier). Batches,
their order, the number of steps, the loss (fp32 cross-entropy from the logits), gradient clipping
and every metric are computed here with functions captured in :mod:`benchmark.guard`.
"""

from __future__ import annotations

import contextlib
import logging
import math
import statistics
import sys
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import torch

from . import guard
from .candidate import check_aux, check_logits, split_output
from .result import EvalFailure

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    precision: str  # "bf16" or "fp32"

    def autocast(self):
        if self.precision == "bf16":
            return guard.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def resolve_runtime(device: str, precision: Optional[str]) -> Runtime:
    if device == "cuda" and not torch.cuda.is_available():
        raise EvalFailure("setup", "bad_device", "--device cuda was requested but CUDA is not available")
    dev = torch.device(device)
    if precision is None or precision == "bf16":
        supported = (torch.cuda.is_bf16_supported() if dev.type == "cuda"
                     else torch.backends.mkldnn.is_available()
                     and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()))
        if precision == "bf16" and not supported:
            log.warning("bf16 is not supported on this %s; using fp32", dev.type)
        precision = "bf16" if supported else "fp32"
    return Runtime(dev, precision)


def train_windows(tokens: np.ndarray, steps: int, batch: int, seq_len: int, seed: int) -> torch.Tensor:
    """(steps, batch, seq_len + 1) random contiguous windows from the evaluator's own generator."""
    rng = np.random.default_rng([seed, 0x5EED])
    starts = rng.integers(0, len(tokens) - seq_len - 1, size=(steps, batch))
    return torch.from_numpy(tokens[starts[..., None] + np.arange(seq_len + 1)].astype(np.int64))


def eval_windows(tokens: np.ndarray, seq_len: int, max_targets: Optional[int]) -> tuple:
    """Non-overlapping (inputs, targets), each (n, seq_len); every target token scored once."""
    n = (len(tokens) - 1) // seq_len
    if max_targets is not None:
        n = min(n, max(1, max_targets // seq_len))
    flat = torch.from_numpy(tokens[: n * seq_len + 1].astype(np.int64))
    return flat[:-1].view(n, seq_len), flat[1:].view(n, seq_len)


def default_param_groups(model: torch.nn.Module, spec) -> list:
    """Weight decay on tensors with >= 2 dims (matrices, embeddings), none on norms and biases."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    rest = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return [{"params": decay, "weight_decay": spec.weight_decay}, {"params": rest, "weight_decay": 0.0}]


def default_optimizer(model: torch.nn.Module, spec, device: torch.device) -> torch.optim.Optimizer:
    return torch.optim.AdamW(default_param_groups(model, spec), lr=spec.lr, betas=tuple(spec.betas),
                             fused=True)


def make_optimizer(model, module, spec, config, device) -> tuple:
    hook = getattr(module, "configure_optimizer", None)
    optimizer = default_optimizer(model, spec, device)
    if callable(hook):
        try:
            optimizer = hook(model, config)
        except BaseException as exc:
            raise EvalFailure("train", "optimizer_error",
                              f"configure_optimizer raised {type(exc).__name__}: {exc}") from exc
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise EvalFailure("train", "optimizer_error",
                              f"configure_optimizer returned {type(optimizer).__name__}, "
                              "not a torch.optim.Optimizer")
        model_params = {id(p) for p in model.parameters()}
        foreign = [p for g in optimizer.param_groups for p in g["params"] if id(p) not in model_params]
        if foreign:
            raise EvalFailure("train", "optimizer_error",
                              f"the optimizer holds {len(foreign)} tensors that are not model parameters")
    lr_hook = getattr(module, "lr_lambda", None)
    scheduler = (torch.optim.lr_scheduler.LambdaLR(optimizer, lr_hook) if callable(lr_hook) else None)
    return optimizer, scheduler


@dataclass
class TrainStats:
    steps: int = 0
    step_times: list = field(default_factory=list)
    losses: list = field(default_factory=list)
    train_s: float = 0.0

    @property
    def train_loss(self) -> float:
        tail = self.losses[-100:]
        return float(sum(tail) / len(tail)) if tail else float("nan")

    @property
    def step_ms_median(self) -> float:
        return 1000 * statistics.median(self.step_times) if self.step_times else float("nan")

    def curve(self, every: int = 100) -> list:
        points = []
        for end in range(every, len(self.losses) + 1, every):
            chunk = self.losses[end - every:end]
            points.append([end, round(sum(chunk) / len(chunk), 4)])
        if self.losses and len(self.losses) % every:
            tail = self.losses[-(len(self.losses) % every):]
            points.append([len(self.losses), round(sum(tail) / len(tail), 4)])
        return points


def loss_of(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return guard.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1))


def train(model, optimizer, scheduler, windows: torch.Tensor, spec, rt: Runtime,
          progress: bool = True, on_progress: Optional[Callable[[TrainStats], None]] = None,
          check_every: int = 10) -> TrainStats:
    """Exactly len(windows) optimizer steps, one batch each."""
    from tqdm import tqdm

    stats = TrainStats()
    params = [p for p in model.parameters() if p.requires_grad]
    windows = windows.to(rt.device)
    steps, batch, width = windows.shape
    model.train()
    pending: list = []
    bar = tqdm(total=steps, desc="train", file=sys.stderr, disable=not progress, mininterval=1.0,
               dynamic_ncols=True)
    clock = guard.perf_counter
    start = clock()
    for step in range(steps):
        t0 = clock()
        x, y = windows[step, :, :-1], windows[step, :, 1:]
        with rt.autocast():
            logits, aux = split_output(model(x))
        if step == 0:
            check_logits(logits, batch, width - 1, spec.vocab_size, "train")
        loss = loss_of(logits, y)
        aux = check_aux(aux, "train")
        objective = loss if aux is None else loss + aux.float()
        optimizer.zero_grad(set_to_none=True)
        objective.backward()
        guard.clip_grad_norm_(params, spec.grad_clip, foreach=True)
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        pending.append(torch.stack([loss.detach(), objective.detach()]))
        if len(pending) == check_every or step == steps - 1:
            values = torch.stack(pending).cpu()  # (n, 2): one device sync per `check_every` steps
            pending = []
            if not bool(guard.isfinite(values).all()):
                bad = step - len(values) + 1 + int((~guard.isfinite(values)).any(1).float().argmax())
                raise EvalFailure("train", "non_finite_loss",
                                  f"the training loss (with aux_loss) became non-finite at step {bad}")
            stats.losses.extend(values[:, 0].tolist())
            bar.set_postfix(loss=f"{stats.train_loss:.3f}", refresh=False)
            bar.update(len(values))
            if on_progress is not None:
                on_progress(stats)
        rt.sync()
        stats.step_times.append(clock() - t0)
        stats.steps += 1
    stats.train_s = clock() - start
    bar.close()
    return stats


@dataclass
class ValStats:
    loss_sum: float = 0.0
    correct: int = 0
    count: int = 0
    validation_s: float = 0.0

    def metrics(self) -> dict:
        val_loss = self.loss_sum / self.count
        val_ppl = math.exp(val_loss) if val_loss < 700 else float("inf")
        return {"val_loss": val_loss, "val_ppl": val_ppl, "val_acc": self.correct / self.count,
                "combined_score": 1.0 / val_ppl if math.isfinite(val_ppl) else 0.0}


def forward_logits(model, x: torch.Tensor, rt: Runtime, vocab: int, stage: str,
                   grad: bool = False) -> torch.Tensor:
    """The model's logits for input_ids x (B, T), shape-checked: (B, T, vocab)."""
    with guard.set_grad_enabled(grad), rt.autocast():
        logits, _ = split_output(model(x))
    check_logits(logits, x.shape[0], x.shape[1], vocab, stage)
    return logits


def score_batch(stats: ValStats, logits: torch.Tensor, targets: torch.Tensor, chunk: int) -> None:
    """Sum of token cross-entropies (fp32 per chunk, accumulated in float64) and top-1 hits,
    `chunk` rows at a time so the fp32 copy of the logits stays small."""
    flat, tgt = logits.reshape(-1, logits.shape[-1]), targets.reshape(-1)
    for start in range(0, flat.shape[0], chunk):
        rows = flat[start:start + chunk].float()
        t = tgt[start:start + chunk]
        loss = float(guard.cross_entropy(rows, t, reduction="sum"))
        if not math.isfinite(loss):
            raise EvalFailure("validate", "non_finite_logits",
                              "the model produced NaN/Inf logits in validation")
        stats.loss_sum += loss
        stats.correct += int((rows.argmax(-1) == t).sum())
        stats.count += t.numel()


def validate(model, inputs: torch.Tensor, targets: torch.Tensor, spec, rt: Runtime,
             probes=None, progress: bool = True) -> ValStats:
    """Scores every window once; the hidden probe batch (if any) runs among the real batches."""
    from tqdm import tqdm

    stats = ValStats()
    n, bs = inputs.shape[0], spec.val_batch_size
    starts = list(range(0, n, bs))
    model.eval()

    def logits_of(x: torch.Tensor) -> torch.Tensor:
        return forward_logits(model, x.to(rt.device), rt, spec.vocab_size, "validate")

    clock = guard.perf_counter
    t0 = clock()
    for b, start in enumerate(tqdm(starts, desc="validate", file=sys.stderr, disable=not progress,
                                   mininterval=1.0, dynamic_ncols=True)):
        if probes is not None and b == probes.position:
            probes.record_probe(logits_of(probes.batch))
        ids = range(start, min(start + bs, n))
        logits = logits_of(inputs[start:ids.stop])
        score_batch(stats, logits, targets[start:ids.stop].to(rt.device), spec.ce_chunk)
        if probes is not None:
            probes.record(ids, logits)
    if probes is not None and probes.position >= len(starts):
        probes.record_probe(logits_of(probes.batch))
    rt.sync()
    stats.validation_s = clock() - t0
    return stats
