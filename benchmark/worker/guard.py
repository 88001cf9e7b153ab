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


_settle_torch()

cross_entropy = F.cross_entropy
log_softmax = F.log_softmax
clip_grad_norm_ = torch.nn.utils.clip_grad_norm_
manual_seed = torch.manual_seed
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
_ORIGINAL = {f"{getattr(owner, '__name__', owner)}.{name}": getattr(owner, name)
             for owner, name in _WATCHED}


def verify(stage: str) -> dict:
    """A passed check, or EvalFailure('tamper') naming every replaced function."""
    changed = [label for (owner, name), (label, original) in zip(_WATCHED, _ORIGINAL.items())
               if getattr(owner, name, None) is not original]
    if changed:
        raise EvalFailure(stage, "tamper",
                          f"the candidate replaced evaluator functions after {stage}: "
                          + ", ".join(changed),
                          checks=[check(f"tamper:{stage}", False, ", ".join(changed))])
    return check(f"tamper:{stage}", True, f"{len(_WATCHED)} functions unchanged")


def seed_everything(seed: int) -> None:
    py_seed(seed)
    np_seed(seed % 2**32)
    manual_seed(seed)
