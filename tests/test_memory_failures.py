"""A failure names its real cause: an allocation that fails is "out of memory" (memory_limit, with
what to change), never "torch.compile failed" for a model that compiles nothing. The evaluator's
FLOP count runs the forward inside dynamo's call wrapper (torch.compiler.disable around
FlopCounterMode's dispatch), so every error there used to read as a compile failure."""

from __future__ import annotations

import pytest
import torch

from benchmark.worker.candidate import compile_failure, memory_message, out_of_memory
from benchmark.worker.train import counted_flops
from tests.adversarial.cheats import REFERENCE
from tests.conftest import evaluate_tiny

# More bytes than any 64-bit process can map (2**47): the allocation fails on every machine.
HUGE = "torch.empty(10**14)"


def _raised(fn) -> BaseException:
    try:
        fn()
    except BaseException as exc:  # noqa: BLE001
        return exc
    raise AssertionError("nothing was raised")


def test_an_error_under_the_flop_count_is_not_a_compile_failure():
    exc = _raised(lambda: counted_flops(lambda: torch.empty(10**14)))
    assert not compile_failure(exc)
    assert "can't allocate memory" in out_of_memory(exc)
    shape = _raised(lambda: counted_flops(lambda: torch.ones(2, 3) @ torch.ones(2, 3)))
    assert not compile_failure(shape) and out_of_memory(shape) is None


def test_a_real_compiler_error_is_still_a_compile_failure():
    """fullgraph=True under the FLOP count compiles nothing: dynamo's wrapper raises a plain
    RuntimeError itself; and a compiler exception anywhere in the chain."""
    model = torch.compile(torch.nn.Linear(3, 3), fullgraph=True)
    assert compile_failure(_raised(lambda: counted_flops(lambda: model(torch.ones(2, 3)))))
    from torch._dynamo.exc import Unsupported

    def traced():
        try:
            raise Unsupported("data-dependent branch")
        except Unsupported as inner:
            raise ValueError("while compiling") from inner

    assert compile_failure(_raised(traced))


def test_only_the_allocators_errors_are_out_of_memory():
    class Hostile(RuntimeError):
        def __str__(self):
            raise AssertionError("the worker ran the candidate's __str__")

    assert out_of_memory(MemoryError()) == "MemoryError"
    assert out_of_memory(RuntimeError("shape mismatch")) is None
    assert out_of_memory(Hostile("out of memory")) is None
    wrapped = _raised(lambda: _chain(RuntimeError("CUDA out of memory. Tried to allocate 4 TiB")))
    assert out_of_memory(wrapped).startswith("CUDA out of memory")
    assert "--memory-limit" in memory_message("train", "x") and "out of memory during train" in memory_message("train", "x")


def _chain(cause: BaseException):
    try:
        raise cause
    except RuntimeError as exc:
        raise KeyError("in the model") from exc


@pytest.mark.evaluation
@pytest.mark.parametrize("where, anchor, stage", [
    ("forward", "        T = input_ids.size(1)\n", "budget"),
    ("build_model", '    """The benchmark\'s entry point: config is the evaluator\'s read-only architecture view."""\n',
     "build"),
])
def test_a_huge_allocation_is_reported_as_out_of_memory(tmp_path, where, anchor, stage):
    text = REFERENCE.read_text()
    assert anchor in text
    indent = anchor[:len(anchor) - len(anchor.lstrip())]
    path = tmp_path / f"huge_in_{where}.py"
    path.write_text(text.replace(anchor, f"{anchor}{indent}_scratch = {HUGE}\n", 1))
    result = evaluate_tiny(path)
    assert not result["valid"] and result["error_type"] == "memory_limit", (result.get("error_type"), result.get("error"))
    assert result["stage"] == stage and result["error"].startswith(f"out of memory during {stage}")
    assert "torch.compile" not in result["error"] and "can't allocate memory" in result["error"]
