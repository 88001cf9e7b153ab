"""Whose fault a failure is: the candidate's (runtime_error, with what to change) or the
evaluator's (evaluator_error, never cached). A search reads the one and re-runs the other."""

from __future__ import annotations

import pytest

import torch

from benchmark.spec import Spec
from tests.adversarial.cheats import REFERENCE
from tests.conftest import evaluate_tiny


def test_an_error_raised_inside_torch_is_not_the_evaluators_and_one_raised_in_its_code_is():
    from benchmark.worker.candidate import raised_in_evaluator

    optimizer = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    try:
        torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: None)  # fails in torch's scheduler
    except TypeError as exc:
        assert not raised_in_evaluator(exc)
    else:
        raise AssertionError("LambdaLR accepted None")
    try:
        Spec().replace(no_such_field=1)
    except ValueError as exc:
        assert raised_in_evaluator(exc)


@pytest.mark.evaluation
def test_an_lr_lambda_that_returns_none_is_the_candidates_error_naming_the_hook(tmp_path):
    """A red-team find: an ordinary slip (no return after the warm-up branch) read as the
    evaluator's failure, since torch's scheduler raised after the candidate's frame returned."""
    path = tmp_path / "lr_none.py"
    path.write_text(REFERENCE.read_text() + "\n\ndef lr_lambda(step):\n    if step < 1:\n        return 1.0\n")
    result = evaluate_tiny(path)
    assert not result["valid"] and result["error_type"] == "runtime_error", (result.get("error_type"), result.get("error"))
    assert "lr_lambda(1) returned None" in result["error"]
