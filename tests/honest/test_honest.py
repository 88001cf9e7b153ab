"""Honest candidates in the styles LLMs write pass every check (false rejections cost a search an
LLM call each). Every file in tests/honest/candidates/ is one complete candidate."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import evaluate_tiny

CANDIDATES = sorted((Path(__file__).parent / "candidates").glob("*.py"))


def test_there_are_enough_honest_variants():
    assert len(CANDIDATES) >= 25


@pytest.mark.evaluation
@pytest.mark.parametrize("path", CANDIDATES, ids=[p.stem for p in CANDIDATES])
def test_honest_candidate_passes(path):
    result = evaluate_tiny(path)
    failed = [c for c in result["checks"] if not c["passed"]]
    assert result["valid"], (result.get("error_type"), result.get("error"), failed, result.get("traceback"))
    assert result["combined_score"] > 0 and not failed
