"""Loading a candidate file and calling it through the contract.

Contract: the module defines ``build_model(config) -> nn.Module`` (or a ``PLASAModel`` class taking
``vocab_size, hidden_size, n_layers, n_heads, max_seq_len`` keywords), optionally
``configure_optimizer(model, config)`` and ``lr_lambda(step)``. ``model(input_ids)`` returns logits
(B, T, V); a plain tuple or list ``(logits, aux_loss)``; a mapping with a ``"logits"`` key; a named
tuple or any object with a ``logits`` field (Hugging Face style). ``aux_loss`` (key or field, or
the second item of a plain tuple) is a scalar tensor, a Python number or None; a ``loss`` is
ignored. Named tuples are read by field name, never by position.
"""

from __future__ import annotations

import importlib.util
import os
import sys
import traceback
from types import ModuleType
from collections.abc import Mapping
from typing import Any, Callable, Optional

import torch

from ..result import EvalFailure
from ..spec import ModelConfig

# What the evaluator looks up in a candidate. docs/contract.md states the contract for humans;
# tests/test_contract_docs.py checks it, initial_proposal.txt and evaluator.py's docstring against
# these names (and checks that the worker looks up no others).
BUILD_MODEL = "build_model"            # build_model(config) -> torch.nn.Module
MODEL_CLASS = "PLASAModel"             # ... or, without build_model, this class called with:
MODEL_CLASS_KEYWORDS = ("vocab_size", "hidden_size", "n_layers", "n_heads", "max_seq_len")
OPTIMIZER_HOOK = "configure_optimizer"  # optional: (model, config) -> torch.optim.Optimizer
LR_HOOK = "lr_lambda"                  # optional: (step) -> LR multiplier (a LambdaLR)
TOP_K_ATTRIBUTE = "layer_top_k"        # required on the model: the k each layer keeps


def tail_traceback(exc: BaseException, limit: int = 4000) -> str:
    text = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return text[-limit:]


def raised_in_candidate(exc: BaseException, path: str) -> bool:
    """True when a frame of `exc`'s traceback runs the candidate file (its fault, not ours)."""
    target = str(path)
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == target:
            return True
        tb = tb.tb_next
    cause = exc.__cause__ or exc.__context__
    return cause is not None and cause is not exc and raised_in_candidate(cause, path)


BENCHMARK_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def raised_in_evaluator(exc: BaseException) -> bool:
    """True when `exc` was raised in a frame of the benchmark package: the innermost frame of its
    traceback (a C function's error shows its Python caller). An error raised inside torch while
    the evaluator's loop drives the candidate's model, optimizer or LR schedule (an lr_lambda that
    returns None fails in torch's scheduler, after the candidate's frame has returned) is not."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return os.path.abspath(tb.tb_frame.f_code.co_filename).startswith(BENCHMARK_DIR)


# torch.compile runs a candidate's code inside these packages (a failure there often has no frame of
# the candidate file in its traceback: dynamo raises before the compiled frame runs).
COMPILER_PACKAGES = ("torch._dynamo", "torch._inductor", "torch._functorch", "torch._higher_order_ops")
_COMPILER_PATHS = tuple(os.sep + os.path.join("torch", p.split(".", 1)[1]) + os.sep for p in COMPILER_PACKAGES)
# Dynamo's call wrappers: torch.compiler.disable wraps FlopCounterMode's dispatch, so every error
# under the evaluator's FLOP count passed through one (and read as a compile failure), and a
# compiled module's __call__ passes a call through to eager code after a graph break. Their frames
# count only where the error was raised in them (fullgraph=True that compiled nothing).
_COMPILER_WRAPPERS = (os.sep + os.path.join("torch", "_dynamo", "eval_frame.py"),)


def _compiler_frames(tb) -> bool:
    files = []
    while tb is not None:
        files.append(tb.tb_frame.f_code.co_filename)
        tb = tb.tb_next
    for i, filename in enumerate(files):
        if any(part in filename for part in _COMPILER_PATHS):
            inner = files[i + 1:]
            if not filename.endswith(_COMPILER_WRAPPERS) or all(f.endswith(_COMPILER_WRAPPERS) for f in inner):
                return True
    return False


def compile_failure(exc: BaseException) -> bool:
    """True when `exc` (or an exception in its chain) comes from torch.compile's machinery: its type
    is the compiler's, or it was raised in compiler code (not merely passed through a wrapper)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if type(exc).__module__.startswith(COMPILER_PACKAGES) or _compiler_frames(exc.__traceback__):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


# What torch's allocators say when an allocation fails (the CPU allocator raises a plain
# RuntimeError; CUDA's and MPS's errors say "out of memory").
_ALLOCATOR_WORDS = ("can't allocate memory", "not enough memory", "out of memory")


def out_of_memory(exc: BaseException) -> Optional[str]:
    """The allocator's first line when `exc` (or an exception in its chain) is a failed allocation:
    MemoryError, torch.OutOfMemoryError, or a RuntimeError of torch's allocators. Only these types'
    own messages are read (a candidate's exception class runs no code here)."""
    seen = set()
    oom_type = getattr(torch, "OutOfMemoryError", MemoryError)
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        kind = type(exc)
        if kind is MemoryError or kind is oom_type or kind is RuntimeError:
            text = BaseException.__str__(exc)
            if kind is not RuntimeError or any(word in text.lower() for word in _ALLOCATOR_WORDS):
                return (text.strip().splitlines() or [kind.__name__])[0][:300] or kind.__name__
        exc = exc.__cause__ or exc.__context__
    return None


def memory_message(stage: str, allocator: str) -> str:
    """The failure message of an allocation that failed during `stage`."""
    return (f"out of memory during {stage}: {allocator} (the model asked for more memory than the worker "
            "may use: look for a tensor sized by a wrong dimension, such as (T, T, vocab) or a count "
            "written as a size, allocate less, or keep fewer tensors alive; the evaluator's --memory-limit "
            "caps the worker)")


MODULE_NAME = "candidate"  # the candidate module's name (its classes' and functions' __module__)


def import_candidate(path: str, module_name: str = MODULE_NAME) -> ModuleType:
    """Executes the candidate file as a module; any exception becomes an EvalFailure('load')."""
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise EvalFailure("load", "import_error", f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except SyntaxError as exc:
        raise EvalFailure("load", "syntax_error",
                          f"syntax error at line {exc.lineno}: {exc.msg}") from exc
    except BaseException as exc:  # SystemExit and KeyboardInterrupt included
        allocator = out_of_memory(exc)
        if allocator is not None:
            raise EvalFailure("load", "memory_limit", memory_message("load", allocator)) from exc
        raise EvalFailure("load", "import_error",
                          f"importing the candidate raised {type(exc).__name__}: {exc}\n"
                          + tail_traceback(exc)) from exc
    return module


def build(module: ModuleType, config: ModelConfig) -> torch.nn.Module:
    """Calls build_model(config), or PLASAModel(**architecture) when there is no build_model."""
    factory: Optional[Callable[[], Any]] = None
    build_model = getattr(module, BUILD_MODEL, None)
    model_class = None if callable(build_model) else getattr(module, MODEL_CLASS, None)
    if callable(build_model):
        factory = lambda: build_model(config)  # noqa: E731
    elif isinstance(model_class, type):
        factory = lambda: model_class(**{k: getattr(config, k) for k in MODEL_CLASS_KEYWORDS})  # noqa: E731
    if factory is None:
        raise EvalFailure("build", "missing_entry_point",
                          f"the candidate defines neither {BUILD_MODEL}(config) nor a {MODEL_CLASS} class")
    try:
        model = factory()
    except BaseException as exc:
        allocator = out_of_memory(exc)
        if allocator is not None:
            raise EvalFailure("build", "memory_limit", memory_message("build", allocator)) from exc
        raise EvalFailure("build", "build_error",
                          f"building the model raised {type(exc).__name__}: {exc}\n"
                          + tail_traceback(exc)) from exc
    if not isinstance(model, torch.nn.Module):
        raise EvalFailure("build", "build_error",
                          f"build_model returned {type(model).__name__}, not a torch.nn.Module")
    return model


def _field(output: Any, name: str) -> Any:
    if isinstance(output, Mapping):
        return output.get(name)
    return getattr(output, name, None)


def split_output(output: Any) -> tuple:
    """(logits, aux_loss or None) from any of the contract's output forms; `loss` is ignored."""
    if isinstance(output, torch.Tensor):
        return output, None
    named = isinstance(output, tuple) and hasattr(output, "_fields")
    if isinstance(output, (tuple, list)) and not named:
        if output and isinstance(output[0], torch.Tensor):
            return output[0], output[1] if len(output) > 1 else None
    else:
        logits = _field(output, "logits")
        if isinstance(logits, torch.Tensor):
            return logits, _field(output, "aux_loss")
    raise EvalFailure("forward", "bad_output",
                      f"model(input_ids) returned {type(output).__name__} without logits; return the "
                      "logits tensor (B, T, V), a tuple (logits, aux_loss), a dict with a 'logits' key, "
                      "or an object or named tuple with a 'logits' field")


def check_logits(logits: torch.Tensor, batch: int, seq: int, vocab: int, stage: str) -> None:
    if tuple(logits.shape) != (batch, seq, vocab):
        raise EvalFailure(stage, "bad_output_shape",
                          f"logits have shape {tuple(logits.shape)}; expected ({batch}, {seq}, {vocab})")
    if not logits.is_floating_point():
        raise EvalFailure(stage, "bad_output", f"logits have dtype {logits.dtype}; expected a float")


def check_aux(aux: Any, stage: str) -> Optional[torch.Tensor]:
    if aux is None:
        return None
    if isinstance(aux, (int, float)) and not isinstance(aux, bool):
        return None if aux == 0 else torch.tensor(float(aux))
    if not isinstance(aux, torch.Tensor) or aux.numel() != 1:
        raise EvalFailure(stage, "bad_aux_loss",
                          f"aux_loss must be a scalar tensor, a number or None, got {type(aux).__name__}"
                          + (f" of shape {tuple(aux.shape)}" if isinstance(aux, torch.Tensor) else ""))
    return aux.reshape(())
