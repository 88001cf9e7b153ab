"""Every known cheat is rejected for the right reason, or neutralized; honest variants pass."""

from __future__ import annotations

import pytest

from tests.adversarial.cheats import CHEATS, HONEST, write
from tests.conftest import TINY, run_cli


def _evaluate(name, tmp_path, extra=()):
    path = write(name, tmp_path)
    return run_cli(str(path), *TINY, *extra)


@pytest.mark.parametrize("name", sorted(CHEATS))
def test_cheat_is_caught(name, tmp_path, honest_tiny_result):
    cheat = CHEATS[name]
    code, result, stderr = _evaluate(name, tmp_path, cheat.cli_args)
    if cheat.neutralized:
        assert code == 0 and result["valid"], result.get("error")
        assert result["combined_score"] == honest_tiny_result["combined_score"]
        assert result["val_loss"] == honest_tiny_result["val_loss"]
        return
    assert code == 1, stderr[-2000:]
    assert result["combined_score"] == 0.0 and result["valid"] is False
    assert "FAILED" in stderr.splitlines()[-1]
    if cheat.stage:
        assert result["stage"] == cheat.stage, (result["stage"], result["error"])
    if cheat.error_type:
        assert result["error_type"] == cheat.error_type, (result["error_type"], result["error"])
    if cheat.checks:
        failed = [c["name"] for c in result["checks"] if not c["passed"]]
        assert any(f.startswith(prefix) for f in failed for prefix in cheat.checks), (failed, result["error"])
        evidence = [c["detail"] for c in result["checks"] if not c["passed"]]
        assert all(evidence), "a failed check without evidence"


@pytest.mark.parametrize("name", sorted(HONEST))
def test_honest_variant_passes(name, tmp_path):
    code, result, stderr = _evaluate(name, tmp_path)
    assert code == 0, (result.get("error"), [c for c in result["checks"] if not c["passed"]])
    assert result["valid"] and result["combined_score"] > 0
    assert all(c["passed"] for c in result["checks"])


def test_causality_evidence_names_positions(tmp_path):
    code, result, _ = _evaluate("leak_topk_over_masked_row", tmp_path)
    detail = next(c["detail"] for c in result["checks"] if not c["passed"])
    assert "future leak" in detail and "changed by" in detail and "only the tokens after position" in detail


def test_every_cheat_edit_applies():
    from tests.adversarial.cheats import source

    for entry in list(CHEATS.values()) + list(HONEST.values()):
        source(entry)  # raises when the reference no longer contains an edited line
