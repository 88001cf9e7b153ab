"""References to everything the evaluator relies on, captured before any candidate is imported.

The training and validation code call these captured objects, never the module attributes, and
:func:`verify` checks after model build, training and validation that the module attributes are
still the same objects: a candidate that patches torch (or the clock) is caught and named.
"""

from __future__ import annotations

import random
import time

import numpy as np
import torch
import torch.nn.functional as F

from ..result import EvalFailure, check


def _settle_torch() -> None:
    """Let torch finish patching itself before we capture: importing dynamo wraps
    torch.manual_seed, and the first optimizer of a class wraps that class's step."""
    import torch._dynamo  # noqa: F401

    param = torch.zeros(1, requires_grad=True)
    param.grad = torch.zeros(1)
    for fused in (False, True):
        try:
            opt = torch.optim.AdamW([param], fused=fused)
        except RuntimeError:
            continue
        torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
        opt.step()


def _wrap_manual_seed() -> None:
    """What importing dynamo does to torch.manual_seed (torch/_dynamo/__init__.py), done without
    importing it (a second of CPU): a later import then leaves it as it is."""
    if torch.manual_seed is torch.random.manual_seed:
        torch.manual_seed = torch._disable_dynamo(torch.manual_seed)
        torch.jit._builtins._register_builtin(torch.manual_seed, "aten::manual_seed")


cross_entropy = F.cross_entropy
log_softmax = F.log_softmax
clip_grad_norm_ = torch.nn.utils.clip_grad_norm_
manual_seed = torch.random.manual_seed  # the function torch.manual_seed is or wraps
fork_rng = torch.random.fork_rng
set_grad_enabled = torch.set_grad_enabled
autocast = torch.autocast
perf_counter = time.perf_counter
isfinite = torch.isfinite
np_seed = np.random.seed
py_seed = random.seed

# (owner, attribute name): the objects whose identity is verified.
_WATCHED = (
    (F, "cross_entropy"), (F, "log_softmax"), (torch, "logsumexp"), (torch, "isfinite"),
    (torch.Tensor, "backward"), (torch.autograd, "backward"), (torch.Tensor, "float"),
    (torch.Tensor, "item"), (torch.Tensor, "argmax"), (torch.Tensor, "gather"),
    (torch.nn.utils, "clip_grad_norm_"), (torch.optim.Optimizer, "zero_grad"),
    (torch.optim.AdamW, "step"), (torch.optim.lr_scheduler.LambdaLR, "step"),
    (torch.nn.Module, "__call__"), (torch.nn.Module, "train"), (torch.nn.Module, "eval"),
    (torch.nn.Module, "parameters"), (torch.nn.Module, "named_parameters"),
    (torch, "manual_seed"), (torch.random, "fork_rng"), (torch, "no_grad"), (torch, "autocast"),
    (torch, "set_grad_enabled"), (time, "perf_counter"), (time, "time"),
    (np.random, "seed"), (np.random, "default_rng"), (random, "seed"),
)
# Only the training worker steps an optimizer: a scoring worker does not watch them (a model
# that builds its own optimizer there wraps their step, as the first optimizer of a class does).
_TRAINING_ONLY = ((torch.optim.Optimizer, "zero_grad"), (torch.optim.AdamW, "step"),
                  (torch.optim.lr_scheduler.LambdaLR, "step"))
_ORIGINAL: list = []  # (owner, name, label, the object), recorded by arm()


def arm(role: str, source: bytes) -> bool:
    """Records the watched objects, once per process, before any candidate code runs. The
    training worker first lets torch patch itself (imports dynamo, builds an optimizer: a second of
    CPU), a scoring worker whose candidate names "compile" imports dynamo, and any other scoring
    worker only wraps torch.manual_seed as dynamo would. Returns whether dynamo was imported. (A
    model that reaches torch.compile under another name imports dynamo later, in its own time,
    which changes nothing watched: manual_seed is wrapped already.)"""
    if _ORIGINAL:
        raise RuntimeError("the guard is armed once per process")
    compiles = role == "train" or b"compile" in source
    if role == "train":
        _settle_torch()
    elif compiles:
        import torch._dynamo  # noqa: F401
    _wrap_manual_seed()
    watched = [w for w in _WATCHED if role == "train" or w not in _TRAINING_ONLY]
    _ORIGINAL.extend((owner, name, f"{getattr(owner, '__name__', owner)}.{name}", getattr(owner, name))
                     for owner, name in watched)
    return compiles


def verify(stage: str) -> dict:
    """A passed check, or EvalFailure('tamper') naming every replaced function."""
    if not _ORIGINAL:
        raise RuntimeError("the guard verifies only once armed")
    changed = [label for owner, name, label, original in _ORIGINAL if getattr(owner, name, None) is not original]
    if changed:
        raise EvalFailure(stage, "tamper",
                          f"the candidate replaced evaluator functions after {stage}: "
                          + ", ".join(changed),
                          checks=[check(f"tamper:{stage}", False, ", ".join(changed))])
    return check(f"tamper:{stage}", True, f"{len(_ORIGINAL)} functions unchanged")


def seed_everything(seed: int) -> None:
    py_seed(seed)
    np_seed(seed % 2**32)
    manual_seed(seed)
