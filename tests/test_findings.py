"""The findings' statistics: t quantiles, paired differences and Holm's correction against
textbook values, and plot styles that never repeat."""

from __future__ import annotations

import math

import pytest

from benchmark.analysis import stats
from benchmark.analysis.plotting import line_styles

@pytest.mark.parametrize("df, t", [(1, 12.7062047), (2, 4.30265273), (4, 2.77644511), (10, 2.22813885),
                                   (30, 2.04227246)], ids=lambda v: str(v))
def test_t_quantile_matches_the_tables(df, t):
    assert stats.t_quantile(0.975, df) == pytest.approx(t, abs=1e-6)


def test_paired_difference_by_hand():
    # diffs 1, 2, 4: mean 7/3, sd sqrt(7/3), se sqrt(7/9); t = 2.6458 on 2 df
    d = stats.paired_difference([10, 12, 15], [9, 10, 11])
    half = 4.30265273 * math.sqrt(7 / 9)
    assert d["n"] == 3 and d["mean"] == pytest.approx(7 / 3)
    assert d["ci95"] == pytest.approx([7 / 3 - half, 7 / 3 + half], abs=1e-6)
    assert d["p"] == pytest.approx(0.11808289631180308, rel=1e-8)  # scipy.stats.ttest_rel
    assert stats.paired_difference([1.0], [2.0]) == {"n": 1, "mean": -1.0, "ci95": None, "p": None}
    assert stats.paired_difference([], []) is None
    with pytest.raises(ValueError):
        stats.paired_difference([1, 2], [1])


@pytest.mark.parametrize("raw, adjusted", [
    ([0.01, 0.04, 0.03, 0.005], [0.03, 0.06, 0.06, 0.02]),  # 4 x 0.005, 3 x 0.01, max(2 x 0.03, 0.04)
    ([0.04, 0.045], [0.08, 0.08]),                           # step-down stays monotone
    ([0.01, None], [0.02, None]),                            # a test without data still counts in m
    ([0.5, 0.9, 0.6], [1.0, 1.0, 1.0]),
], ids=["textbook", "monotone", "untested-counts", "capped"])
def test_holm(raw, adjusted):
    out = stats.holm(raw)
    assert [None if a is None else pytest.approx(a) for a in adjusted] == out


def test_line_styles_never_repeat_up_to_twenty_series():
    styles = line_styles(20)
    assert len({s["color"] for s in styles}) == 20
    assert len({(s["color"], s["linestyle"]) for s in line_styles(40)}) == 40
