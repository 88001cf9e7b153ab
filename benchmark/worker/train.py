"""The evaluator's training loop, as the training worker runs it.

The candidate supplies only a model (and optionally an optimizer and an LR multiplier). Batches,
their order, the number of steps, the loss (fp32 cross-entropy from the logits) and gradient
clipping are the evaluator's. This code runs beside the candidate, so nothing it reports is
trusted: the judge scores the trained state in a fresh process and checks the step's cost from
outside (docs/judge.md).
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from typing import Callable, Optional

import torch
from torch.utils.flop_counter import FlopCounterMode, _FlopCounterMode

from . import guard
from .candidate import LR_HOOK, OPTIMIZER_HOOK, check_aux, check_logits, split_output
from ..result import EvalFailure


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


def default_param_groups(model: torch.nn.Module, spec) -> list:
    """Weight decay on tensors with >= 2 dims (matrices, embeddings), none on norms and biases."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    rest = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    return [{"params": decay, "weight_decay": spec.weight_decay}, {"params": rest, "weight_decay": 0.0}]


def default_optimizer(model: torch.nn.Module, spec) -> torch.optim.Optimizer:
    return torch.optim.AdamW(default_param_groups(model, spec), lr=spec.lr, betas=tuple(spec.betas),
                             fused=True)


def make_optimizer(model, module, spec, config) -> tuple:
    hook = getattr(module, OPTIMIZER_HOOK, None)
    optimizer = default_optimizer(model, spec)
    if callable(hook):
        try:
            optimizer = hook(model, config)
        except BaseException as exc:
            raise EvalFailure("train", "optimizer_error",
                              f"configure_optimizer raised {type(exc).__name__}: {exc}") from exc
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise EvalFailure("train", "optimizer_error",
                              f"configure_optimizer returned {type(optimizer).__name__}; return a "
                              "torch.optim.Optimizer over model.parameters()")
        model_params = {id(p) for p in model.parameters()}
        foreign = [p for g in optimizer.param_groups for p in g["params"] if id(p) not in model_params]
        if foreign:
            raise EvalFailure("train", "optimizer_error",
                              f"the optimizer holds {len(foreign)} tensors that are not model parameters; "
                              "register every trained tensor as an nn.Parameter of the model")
    lr_hook = getattr(module, LR_HOOK, None)
    scheduler = (torch.optim.lr_scheduler.LambdaLR(optimizer, checked_lr_lambda(lr_hook))
                 if callable(lr_hook) else None)
    return optimizer, scheduler


def checked_lr_lambda(hook: Callable[[int], float]) -> Callable[[int], float]:
    """The candidate's lr_lambda, with a clear failure when it returns something other than a
    finite number (torch's own error, raised in its scheduler, names neither the hook nor the step)."""
    def multiplier(step: int) -> float:
        value = hook(step)
        if isinstance(value, torch.Tensor) and value.numel() == 1:
            value = value.item()
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value or abs(value) == float("inf"):
            raise EvalFailure("train", "runtime_error",
                              f"lr_lambda({step}) returned {value!r:.100}; it must return a finite number "
                              "(the multiplier of the base learning rate) at every step")
        return value
    return multiplier


def loss_of(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return guard.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), targets.reshape(-1))


def train_step(model, optimizer, scheduler, window: torch.Tensor, spec, rt: Runtime, params: list,
               first: bool = False) -> torch.Tensor:
    """One optimizer step of the evaluator's loop on `window` (batch, T + 1): the fp32 loss (plus
    the candidate's aux loss), backward, clipping, the step. Returns [loss, objective], detached."""
    window = window.to(rt.device, non_blocking=True)
    batch, width = window.shape
    x, y = window[:, :-1], window[:, 1:]
    with rt.autocast():
        logits, aux = split_output(model(x))
    if first:
        check_logits(logits, batch, width - 1, spec.vocab_size, "train")
    loss = loss_of(logits, y)
    aux = check_aux(aux, "train")
    objective = loss if aux is None else loss + aux.float().to(loss.device)
    optimizer.zero_grad(set_to_none=True)
    objective.backward()
    guard.clip_grad_norm_(params, spec.grad_clip, foreach=True)
    optimizer.step()
    if scheduler is not None:
        scheduler.step()
    return torch.stack([loss.detach(), objective.detach()])


# ops FlopCounterMode's dispatch leaves to the tensor's own handling (its size and layout queries)
_SHAPE_QUERIES = frozenset({"sym_is_contiguous", "is_contiguous", "is_strides_like_format",
                            "is_non_overlapping_and_dense", "size", "sym_size", "stride", "sym_stride",
                            "storage_offset", "sym_storage_offset", "numel", "sym_numel", "dim", "layout"})


def _decomposes(func) -> bool:
    key = torch._C.DispatchKey.CompositeImplicitAutograd
    try:
        return key in func.py_kernels or torch._C._dispatch_has_kernel_for_dispatch_key(func.name(), key)
    except RuntimeError:  # not a dispatcher op (prim::device): FlopCounterMode's own path
        return False


def _on_meta(value):
    if isinstance(value, torch.Tensor):
        return torch.empty_strided(value.size(), value.stride(), dtype=value.dtype, device="meta")
    return value


class _ExactMode(_FlopCounterMode):
    """FlopCounterMode's dispatch, with one change: an op without a FLOP formula but with a
    decomposition (silu_backward, in the reference's backward) is counted as its decomposition,
    run on meta copies of its arguments, and the op itself runs. FlopCounterMode runs the
    decomposition instead, whose arithmetic differs in the last bits (the reference's gradients by
    4e-8 in fp32, 4e-4 in bf16 autocast), so a counted step trained the model differently, and the
    score depended on which steps were counted: on the installation's secret key. A decomposition
    that cannot run on meta tensors (it reads values) runs as FlopCounterMode runs it: no op's
    FLOPs go uncounted for it."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if (isinstance(func, torch._ops.OpOverload) and func not in self.counter.flop_registry
                and func is not torch.ops.prim.device.default
                and func._overloadpacket.__name__ not in _SHAPE_QUERIES and _decomposes(func)):
            counts = self.counter.flop_counts["Global"]
            before = dict(counts)
            try:
                meta_args, meta_kwargs = torch.utils._pytree.tree_map(_on_meta, (args, kwargs))
                with self:
                    func.decompose(*meta_args, **meta_kwargs)
            except Exception:  # noqa: BLE001 - a decomposition that needs the values: run it, as
                counts.clear()  # FlopCounterMode does (counted, in its own arithmetic)
                counts.update(before)
                return super().__torch_dispatch__(func, types, args, kwargs)
            return func(*args, **kwargs)
        return super().__torch_dispatch__(func, types, args, kwargs)


class ExactFlopCounter(FlopCounterMode):
    """FlopCounterMode's total, counted without changing any result (:class:`_ExactMode`) and
    without its module tracker (hooks on every module; only the total is needed)."""

    def __init__(self) -> None:
        super().__init__(display=False)

    def __enter__(self):
        self.flop_counts.clear()
        self.mode = _ExactMode(self)
        self.mode.__enter__()
        return self

    def __exit__(self, *args):
        done = self.mode.__exit__(*args)
        self.mode = None
        return done

    def _count_flops(self, func_packet, out, args, kwargs):
        if func_packet in self.flop_registry:
            self.flop_counts["Global"][func_packet] += self.flop_registry[func_packet](*args, **kwargs, out_val=out)
        return out


def counted_flops(step: Callable[[], object]) -> tuple:
    """(step()'s result, the FLOPs it ran) under :class:`ExactFlopCounter`: forward, backward and
    the optimizer's step, what a training step really does, with the same arithmetic as a step
    nobody counts."""
    with ExactFlopCounter() as counter:
        out = step()
    return out, int(counter.get_total_flops())


def train(model, optimizer, scheduler, steps: int, next_batch: Callable[[int], tuple], spec,
          rt: Runtime, on_step: Callable[[int, float, Optional[int]], None], progress: bool = False,
          check_every: int = 10) -> int:
    """Exactly `steps` optimizer steps, one batch each: next_batch(step) gives that step's
    (batch, T + 1) token ids and whether to count it (:func:`counted_flops`). `on_step`
    receives (step, loss, flops or None) for every step: the heartbeat the judge watches."""
    from tqdm import tqdm

    params = [p for p in model.parameters() if p.requires_grad]
    model.train()
    pending: list = []
    bar = tqdm(total=steps, desc="train", file=sys.stderr, disable=not progress, mininterval=1.0,
               dynamic_ncols=True)
    for step in range(steps):
        window, counted = next_batch(step)
        run = lambda: train_step(model, optimizer, scheduler, window, spec, rt, params, step == 0)  # noqa: E731
        values, flops = counted_flops(run) if counted else (run(), None)
        pending.append(values)
        losses = [float("nan")]
        if len(pending) == check_every or step == steps - 1 or step == 0:
            values = torch.stack(pending).cpu()  # (n, 2): one device sync per `check_every` steps
            pending = []
            if not bool(guard.isfinite(values).all()):
                bad = step - len(values) + 1 + int((~guard.isfinite(values)).any(1).float().argmax())
                raise EvalFailure("train", "non_finite_loss",
                                  f"the training loss (with aux_loss) became non-finite at step {bad}")
            losses = values[:, 0].tolist()
            bar.update(len(values))
        on_step(step, losses[-1], flops)
    rt.sync()
    bar.close()
    return steps


def forward_logits(model, x: torch.Tensor, rt: Runtime, vocab: int, stage: str,
                   grad: bool = False) -> torch.Tensor:
    """The model's logits for input_ids x (B, T), shape-checked: (B, T, vocab)."""
    with guard.set_grad_enabled(grad), rt.autocast():
        logits, _ = split_output(model(x))
    check_logits(logits, x.shape[0], x.shape[1], vocab, stage)
    return logits
