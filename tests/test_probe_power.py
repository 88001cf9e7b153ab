"""The hidden causality probes' power, measured over many probe draws (benchmark/judge/power.py):
the plan's own draws (probes.causal_rows) against synthetic leaks that fire on a hash of the
tokens at a given fraction of the validation positions. No evaluation runs here."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmark.judge import power
from benchmark.judge.probes import causal_rows, hidden_plan
from benchmark.spec import SPEC


@pytest.fixture(scope="module")
def val_x():
    """The official validation windows (2139 of 128 tokens)."""
    from benchmark.judge.data import eval_windows, load_tokens

    return eval_windows(load_tokens(SPEC.dataset, SPEC.split, SPEC.tokenizer), SPEC.seq_len, None)[0]


def test_the_audit_catches_a_leak_worth_one_percent_of_perplexity_with_99_percent(val_x):
    """The goal: a leak worth 1% of the reference's validation perplexity (at ln(183.11) = 5.21
    nats a perfect leak must fire at 0.193% of positions) is caught with probability >= 0.99 by
    the audit, in the hardest case (fired by the prefix alone, so the probe copy fires with its
    original). 1000 draws; the audit's margin (3000 rows, not 2385) puts the expected miss rate
    at 0.3%, so 1% misses is over 4 standard errors away. The normal 127 rows catch it at ~22%."""
    f = power.leak_density(0.01, math.log(SPEC.reference_val_ppl))
    assert f == pytest.approx(0.001929, abs=1e-6)
    audit = power.simulate(val_x, SPEC.audit_causal_rows, [f], leaks=50, plans=20, rng=np.random.default_rng(1))
    assert audit[f] >= 0.99, audit
    normal = power.simulate(val_x, SPEC.probe_causal_rows, [f], leaks=25, plans=16, rng=np.random.default_rng(2))
    assert 0.1 < normal[f] < 0.4, normal


def test_the_simulated_power_follows_one_draw_per_tested_position(val_x):
    """P(caught) = 1 - exp(-k f) for k rows and a prefix-keyed leak, about 1 - exp(-2 k f) for one
    keyed on the next token too (the probe copy's new next token is a second draw)."""
    k, f = SPEC.probe_causal_rows, 0.01
    prefix = power.simulate(val_x, k, [f], leaks=20, plans=20, rng=np.random.default_rng(3))[f]
    both = power.simulate(val_x, k, [f], leaks=20, plans=20, keyed="next", rng=np.random.default_rng(4))[f]
    assert prefix == pytest.approx(-math.expm1(-k * f), abs=0.08)
    assert both == pytest.approx(-math.expm1(-2 * k * f), abs=0.06)


@pytest.mark.parametrize("n_windows,rows", [(32, 3000), (32, 127), (2139, 3000), (3, 500)],
                         ids=["tiny-audit", "tiny-normal", "official-audit", "every-position"])
def test_causal_rows_test_distinct_positions_spread_over_windows_and_cuts(val_x, n_windows, rows):
    windows_x = val_x[:n_windows]
    order = np.random.default_rng(0).permutation(n_windows)
    windows, cuts, donors = causal_rows(windows_x, order, rows, np.random.default_rng(5))
    m = SPEC.seq_len - 1
    k = min(rows, n_windows * m)
    assert len(windows) == len(cuts) == len(donors) == k
    assert len(set(zip(windows.tolist(), cuts.tolist()))) == k, "a position tested twice"
    assert cuts.min() >= 0 and cuts.max() <= m - 1
    per_window = np.bincount(windows, minlength=n_windows)
    assert per_window.max() - per_window.min() <= 1, "windows not spread evenly"
    per_cut = np.bincount(cuts, minlength=m)
    assert per_cut.min() >= 0.5 * k / m and per_cut.max() <= 1.5 * k / m + 1, "cuts not spread over the window"
    assert (donors != windows).all()
    same = windows_x[donors, cuts + 1] == windows_x[windows, cuts + 1]
    assert same.mean() < 0.002, "donors whose next token equals the original's test nothing there"


def test_an_audit_plan_fills_its_batches_and_counts_its_positions(val_x):
    """The tiny test budget's 32 windows with the audit's 3000 rows: every batch has the batch
    size, every probe copy is scored in the other process, and the plan counts what it tests."""
    plan = hidden_plan(val_x[:32], 16, SPEC.audit_causal_rows, 1, 256, SPEC.vocab_size, 42,
                       np.random.default_rng(6))
    for run, batches in enumerate(plan.runs):
        for kind, windows, probe_ids in batches:
            assert len(windows) + len(probe_ids) == 16
    assert (plan.row_cut >= 0).sum() == SPEC.audit_causal_rows
    assert SPEC.audit_causal_rows - 10 <= plan.positions_tested <= SPEC.audit_causal_rows


def test_a_results_probe_power_states_the_density_and_worth_caught():
    got = power.summary(3000, 5.21)
    assert got["positions_tested"] == 3000
    assert got["leak_density_caught_99"] == pytest.approx(0.001534, abs=1e-6)
    assert got["leak_worth_caught_99"] == pytest.approx(0.0080, abs=1e-4)
    assert power.summary(127, None)["leak_density_caught_99"] == pytest.approx(0.0356, abs=1e-4)
    assert power.causal_rows(SPEC) == SPEC.probe_causal_rows
    assert power.causal_rows(SPEC.replace(audit=True)) == SPEC.audit_causal_rows
    assert SPEC.replace(audit=True).official, "an audit changes no score"


@pytest.mark.parametrize("leak", [0.0, 5.0, float("nan")], ids=["honest", "leak", "nan"])
def test_comparing_in_chunks_gives_the_stacked_verdict(monkeypatch, leak):
    """An audit's rows are compared COMPARE_ROWS at a time (the stacked copies of 3000 rows took
    1.2 GB more of the judge's memory): the same verdict and evidence as one stacked compare()."""
    import torch

    from benchmark.judge import probes

    monkeypatch.setattr(probes, "COMPARE_ROWS", 7)
    rng = np.random.default_rng(8)
    n, T, C = 40, 16, 5
    ref = torch.log_softmax(torch.as_tensor(rng.normal(size=(n, T, C)), dtype=torch.float32), -1)
    alt = ref + torch.as_tensor(rng.normal(scale=1e-5, size=(n, T, C)), dtype=torch.float32)
    cuts = rng.integers(0, T - 1, size=n)
    alt[3, cuts[3], -1] -= leak  # the true token's log-probability at one row's cut
    mask, band = probes.prefix_mask(cuts, T), probes.band_mask(cuts, T)
    stacked = probes.compare("c", ref, alt, mask, 1e-3, 1e-4, "w", band)
    chunked = probes.compare_pairs("c", list(zip(ref, alt)), mask, 1e-3, 1e-4, "w", band)
    assert chunked == stacked
    assert stacked["passed"] == (leak == 0.0), stacked


def test_an_audits_scoring_processes_are_no_longer_than_a_normal_runs(val_x):
    """A model that counts its process's batches must not tell an audit: at the official size the
    audit's rows go to more processes (5), none longer than a normal run's (36 batches), and each
    probe copy is still scored in another process than its window."""
    from benchmark.judge.power import scoring_processes

    def plan(spec, seed):
        return hidden_plan(val_x, spec.val_batch_size, power.causal_rows(spec), spec.probe_repeat_rows, 16,
                           SPEC.vocab_size, 42, np.random.default_rng(seed), scoring_processes(spec, len(val_x)))

    normal = max(len(batches) for batches in plan(SPEC, 9).runs)
    audit = plan(SPEC.replace(audit=True), 10)
    assert len(audit.runs) == 5 and max(len(batches) for batches in audit.runs) <= normal, \
        ([len(b) for b in audit.runs], normal)
    scored_in = {}
    for run, batches in enumerate(audit.runs):
        for kind, windows, probe_ids in batches:
            assert len(windows) + len(probe_ids) == SPEC.val_batch_size
            scored_in.update((int(w), run) for w in windows)
    assert sorted(scored_in) == list(range(len(val_x)))
    for run, batches in enumerate(audit.runs):
        copies = np.concatenate([audit.row_window[ids] for _, _, ids in batches])
        assert all(scored_in[int(w)] != run for w in copies), "a probe copy shares its window's process"
