"""The hidden probe plan: what the scoring processes see must not tell probes from real batches."""

from __future__ import annotations

import numpy as np
import pytest

from benchmark.judge.probes import hidden_plan


@pytest.mark.parametrize("n_windows", [2139, 39, 64])
def test_every_batch_has_the_batch_size_and_every_window_is_scored_once(n_windows):
    """Official sizes (2139 windows of 128, batch 32: a partial batch of 27) and tiny ones."""
    batch, seq_len = (32, 128) if n_windows == 2139 else (16, 128)
    rng = np.random.default_rng(7)
    val_x = rng.integers(0, 1000, size=(n_windows, seq_len))
    plan = hidden_plan(val_x, batch, 127 if n_windows == 2139 else 31, 24 if n_windows == 2139 else 1,
                       256, 49152, 42, np.random.default_rng(1))
    assert len(plan.runs) == 2
    scored = []
    for run, batches in enumerate(plan.runs):
        for kind, windows, probe_ids in batches:
            assert len(windows) + len(probe_ids) == batch, "a batch of another size stands out"
            scored += list(windows)
            others = [r for r, b in enumerate(plan.runs) for k, w, _ in b if set(w) & set(plan.row_window[probe_ids])]
            assert run not in others, "a probe copy was scored in the process that scores its window"
    assert sorted(scored) == list(range(n_windows))
    cuts = plan.row_cut[plan.row_cut >= 0]
    if n_windows == 2139:
        assert sorted(cuts) == list(range(seq_len - 1)), "every cut position once"


def test_windows_of_the_partial_batch_are_probed_too():
    val_x = np.arange(2139 * 8).reshape(2139, 8)
    order = np.random.default_rng([42, 0xBA7C4]).permutation(2139)
    last = set(order[2112:])  # the 27 windows of the partial batch
    probed = set()
    for seed in range(30):
        plan = hidden_plan(val_x, 32, 7, 24, 16, 100, 42, np.random.default_rng(seed))
        probed |= set(plan.row_window[plan.row_cut >= 0]) & last
    assert probed, "no window of the partial batch was ever copied into a causality probe"


def test_probe_copies_do_not_sit_where_their_originals_sit():
    """A model whose output depends on how many batches its process has seen agrees with itself at
    equal positions: copies are placed elsewhere (always at the test sizes, nearly always at the
    official one, where the other copies are at other positions anyway)."""
    from benchmark.judge.probes import _aligned

    for n_windows, batch, causal in ((32, 16, 31), (64, 16, 31), (2139, 32, 127)):
        val_x = np.zeros((n_windows, 8), dtype=np.int64)
        for seed in range(5):
            plan = hidden_plan(val_x, batch, causal, 1, 16, 100, 42, np.random.default_rng(seed))
            aligned = _aligned(plan.runs, plan.row_window)
            assert aligned == 0 if n_windows < 100 else aligned <= 0.03 * len(plan.row_window), (n_windows, seed)


@pytest.mark.parametrize("threads", [1, 2])
def test_a_single_nan_or_infinity_anywhere_in_the_logits_is_seen(threads):
    """all_finite (the judge's check on every probe forward's logits) reads min and max only: a NaN
    must reach them from any place, in every logit dtype and with the judge's threads."""
    import torch

    from benchmark.judge.probes import all_finite

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        for dtype in (torch.float32, torch.bfloat16, torch.float16):
            for n in (1, 31, 4099, 3 * 49152 + 5):
                for place in (0, n // 3, n - 1):
                    for bad in (float("nan"), float("inf"), -float("inf")):
                        values = torch.randn(n).to(dtype)
                        assert all_finite(values)
                        values[place] = bad
                        assert not all_finite(values.view(1, -1)), (dtype, n, place, bad)
        assert all_finite(torch.empty(0, 128, 49152))
    finally:
        torch.set_num_threads(before)


def test_the_largest_change_per_position_is_the_plain_formula_exactly():
    import torch

    from benchmark.judge.probes import largest_changes

    generator = torch.Generator().manual_seed(0)
    ref = torch.randn(3, 5, 1000, generator=generator)
    alt = ref + 1e-6 * torch.randn(3, 5, 1000, generator=generator)
    alt[1, 2, 7] = float("nan")
    expected = (ref - alt).abs().amax(-1)
    torch.testing.assert_close(largest_changes(ref, alt), expected, rtol=0, atol=0, equal_nan=True)
    assert torch.isnan(largest_changes(ref, alt)[1, 2])
    assert largest_changes(ref[:0], alt[:0]).shape == (0, 5)
