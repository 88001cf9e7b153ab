"""The judge's arithmetic on handed-over logits: the loss and accuracy that define the score."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from benchmark.judge.scoring import Score, log_probs, score_batch

V = 1000


def reference(logits: torch.Tensor, targets: torch.Tensor) -> tuple:
    """Per-window summed cross-entropy (float64) and argmax hits, the textbook way."""
    flat = logits.double().reshape(-1, logits.shape[-1])
    ce = F.cross_entropy(flat, targets.reshape(-1), reduction="none").view(targets.shape).sum(-1)
    hits = (logits.float().argmax(-1) == targets).sum(-1)
    return ce.numpy(), hits.numpy()


def scored(logits: torch.Tensor, targets: torch.Tensor, chunk: int = 7) -> Score:
    score = Score(len(logits))
    lse, top = log_probs(logits, chunk)
    score_batch(score, np.arange(len(logits)), logits, targets, lse, top, chunk)
    return score


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_loss_and_accuracy_match_cross_entropy_and_argmax(dtype):
    gen = torch.Generator().manual_seed(0)
    logits = (torch.randn(5, 9, V, generator=gen) * 4).to(dtype)   # 45 rows: not a multiple of the chunk
    targets = torch.randint(0, V, (5, 9), generator=gen)
    best = logits.float().argmax(-1)
    targets[:, ::2] = best[:, ::2]                                   # about half are hits
    logits[0] += 30                                                  # a large offset: needs the max shift
    score = scored(logits, targets)
    ce, hits = reference(logits, targets)
    np.testing.assert_allclose(score.loss, ce, rtol=1e-6, atol=1e-4)
    np.testing.assert_array_equal(score.correct, hits)
    assert score.correct.sum() >= 20 and not score.non_finite


def test_a_tie_counts_for_the_first_maximum_only():
    """argmax takes the first maximum: a model cannot collect hits by giving every token the same
    logit, and a target tied with an earlier column is a miss."""
    logits = torch.zeros(2, 4, V)
    targets = torch.tensor([[0, 5, 7, 0], [3, 9, 9, 2]])
    logits[1, 0, [1, 3]] = 2.0          # tie between column 1 and the target 3: a miss
    logits[1, 1, [9, 20]] = 2.0         # tie between the target 9 and a later column: a hit
    logits[1, 2, 9] = 1.0               # a clear hit
    logits[1, 3, 2] = -1.0              # the target is below the rest: a miss
    score = scored(logits, targets)
    ce, hits = reference(logits, targets)
    np.testing.assert_array_equal(score.correct, [2, 2])
    np.testing.assert_array_equal(score.correct, hits)
    np.testing.assert_allclose(score.loss, ce, rtol=1e-6)


def test_masked_vocabulary_columns_are_scored_like_cross_entropy():
    """-inf logits on tokens the model rules out (padding, say) are honest; only the target's
    matters."""
    logits = torch.randn(3, 6, V)
    logits[..., :10] = float("-inf")
    targets = torch.randint(10, V, (3, 6))
    score = scored(logits, targets)
    ce, hits = reference(logits, targets)
    np.testing.assert_allclose(score.loss, ce, rtol=1e-6)
    np.testing.assert_array_equal(score.correct, hits)
    assert not score.non_finite


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_logits_are_flagged_not_scored(bad):
    logits = torch.randn(2, 3, V)
    logits[1, 2, 17] = bad
    score = scored(logits, torch.randint(0, V, (2, 3)))
    assert score.non_finite and not score.complete


def test_a_target_given_minus_infinity_is_an_infinite_loss():
    logits = torch.randn(1, 3, V)
    targets = torch.tensor([[4, 5, 6]])
    logits[0, 1, 5] = float("-inf")
    assert scored(logits, targets).non_finite
