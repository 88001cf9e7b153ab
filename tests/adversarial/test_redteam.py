"""Attacks a red-team session wrote against the judge (whole files in tests/adversarial/redteam/).

Each closed attack must fail for the named reason without harming the judge; the ones still open
are strict xfails, so the day one is closed the test says so.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.conftest import evaluate_tiny

FOLDER = Path(__file__).parent / "redteam"


def _run(name: str) -> dict:
    return evaluate_tiny(FOLDER / f"{name}.py")


def test_two_fp32_values_per_float64_do_not_hide_parameters():
    result = _run("pack64_hidden_params")
    assert not result["valid"] and result["error_type"] == "param_budget", result.get("error")


def test_a_flood_on_the_channel_is_a_protocol_error_not_a_judge_out_of_memory():
    result = _run("channel_flood")
    assert not result["valid"] and result["error_type"] == "protocol_error", result.get("error")
    assert result["peak_rss_mb"] < 3000


def test_a_daemon_that_left_the_session_does_not_hang_the_judge():
    start = time.monotonic()
    result = _run("daemon_hang")
    assert time.monotonic() - start < 240, "the judge waited for the worker's daemon"
    assert "error" in result or result["valid"]  # a result came back


@pytest.mark.xfail(strict=True, reason="open: Python state across validation batches of one scoring "
                                       "process (a first-seen prefix table) still passes the probes")
def test_a_first_seen_prefix_table_is_caught():
    result = _run("firstseen_prefix_leak")
    assert not result["valid"]
