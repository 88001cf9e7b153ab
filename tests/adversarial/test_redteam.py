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


def test_a_first_seen_prefix_table_is_caught():
    """A table of the first continuation seen per prefix, kept across the validation batches of one
    process, leaks the next token while copies in the same process agree with it; scored in the
    other process, a probe copy has no such history and its cut position shows the leak."""
    result = _run("firstseen_prefix_leak")
    assert not result["valid"] and result["error_type"] == "probe", result.get("error")
    assert "future leak" in result["error"]


def test_a_table_shared_between_scoring_processes_through_sysv_memory_is_caught():
    """The same table in System V shared memory (outside Landlock's reach) would let the second
    scoring process see what the first one saw; each worker's own IPC namespace keeps it apart."""
    from benchmark.judge.launch import isolation

    if not isolation()[0]:
        pytest.skip(f"this machine gives workers {isolation()[1]}")
    result = _run("firstseen_shm_leak")
    assert not result["valid"] and result["error_type"] == "probe", result.get("error")
    assert "future leak" in result["error"]
