"""Issue 29's attacks on what the judge did not meter (items 1-3), as edits of the reference
(cheats.REDTEAM), each accepted by the judge before this change (most with a gain) and rejected
now for its real cause. At 30 steps, 8192 validation tokens: two scoring processes, each ending with
its canary batch."""

from __future__ import annotations

import pytest

from tests.adversarial.cheats import source, train_while_scored, write
from tests.conftest import evaluate_tiny

BUDGET = {"steps": 30, "val_tokens": 8192, "val_batch_size": 32, "probe_causal_rows": 31, "probe_repeat_rows": 4}


def _run(name: str, tmp_path, **overrides) -> dict:
    return evaluate_tiny(write(name, tmp_path), overrides=dict(BUDGET, **overrides))


def _failed(result: dict) -> list:
    return [c["name"] for c in result["checks"] if not c["passed"]]


@pytest.mark.evaluation
def test_training_inside_the_scoring_forwards_shows_in_the_canaries(tmp_path):
    """Two more epochs on windows kept in a buffer, trained in each scoring process's first
    validation batch, both alike (every hidden probe agrees): accepted before at a higher score.
    The CPU meters are made blind here (min_cpu_efficiency 0.001), so the canaries alone decide:
    the scoring process's answers on them are the further-trained model's, the training worker's at
    hand-over are not."""
    result = _run("train_while_scored", tmp_path, min_cpu_efficiency=0.001)
    assert not result["valid"] and result["error_type"] == "probe", (result.get("error_type"), result.get("error"))
    assert "probe:canary:score0" in _failed(result) and "changed while it was scored" in result["error"]


@pytest.mark.evaluation
def test_training_after_the_hand_over_to_match_the_scoring_processes_is_over_the_forward_allowance(tmp_path):
    """The same model also trains in the training worker's first forward of 16+ rows after the
    hand-over (its canary rows), so its canaries would agree: that worker may only run forward
    passes after the hand-over, and its CPU time says it did more."""
    result = _run("train_while_scored_everywhere", tmp_path)
    assert not result["valid"] and result["error_type"] == "cpu_budget", (result.get("error_type"), result.get("error"))
    assert _failed(result) == ["cpu_budget:after_hand_over"], _failed(result)
    assert "training on" in result["error"]


@pytest.mark.evaluation
def test_six_epochs_inside_the_first_validation_batch_are_over_the_scoring_allowance(tmp_path):
    """A scoring process's CPU time, from its start, is judged at every batch it answers: six
    epochs hidden in the first validation batch stop it there, naming work and allowance."""
    path = tmp_path / "train_while_scored_6.py"
    path.write_text(source(train_while_scored(32, 6)))
    result = evaluate_tiny(path, overrides=BUDGET)
    assert not result["valid"] and result["error_type"] == "scoring_budget", (result.get("error_type"), result.get("error"))
    assert "scoring worker score0, scoring used" in result["error"] and "forward tokens of" in result["error"]
    assert result["stage"] == "validate"


@pytest.mark.evaluation
def test_training_between_the_last_step_and_the_hand_over_is_metered(tmp_path):
    """guard.verify, reached through torch.sys.modules and rewritten, trained two more epochs after
    the last step message (the judge's last CPU reading then): 9.6x the reference's score at 30
    steps, CPU check passed. The hand-over is now a window of its own, with no work in it."""
    result = _run("train_before_handover", tmp_path)
    assert not result["valid"] and result["error_type"] == "cpu_budget", (result.get("error_type"), result.get("error"))
    assert "cpu_budget:hand_over" in _failed(result) and result["stage"] == "save"


@pytest.mark.evaluation
def test_a_flood_of_forged_compile_beats_is_a_protocol_error(tmp_path):
    """5000 'compiling' lines written on the channel (the red team wrote 18 million): accepted
    without comment before; no compile sends more than one per compile_beat_s."""
    result = _run("forged_beat_flood", tmp_path)
    assert not result["valid"] and result["error_type"] == "protocol_error", (result.get("error_type"), result.get("error"))
    assert "'compiling' messages" in result["error"]


@pytest.mark.evaluation
def test_forged_compile_beats_do_not_buy_silence_past_the_stated_bound(tmp_path):
    """120 s of silence behind a forged beat every 2 s: beats kept it alive before; now they keep
    a wait alive at most compile_wait_s past the heartbeat limit (here 30 + 10 s, the official
    60 + 600 s scaled down, so the test waits 40 s, not 120)."""
    result = _run("forged_beats_buy_silence", tmp_path, heartbeat_s=30.0, compile_wait_s=10.0)
    assert not result["valid"] and result["error_type"] == "hang", (result.get("error_type"), result.get("error"))
    assert "compile_wait_s" in result["error"]


@pytest.mark.evaluation
def test_six_training_passes_hidden_from_the_flop_counter_are_over_the_step_allowance(tmp_path, monkeypatch):
    """Six extra forward/backward/update passes in every step the FLOP counter does not watch:
    the counted steps look honest, so only the steps' CPU time tells. Judge v2's floor (0.04 of
    the machine's matmul rate) allowed about 12x the reference's CPU per step, and accepted it;
    the strict floor (spec.min_cpu_efficiency) rejects it. The workers wait passively here, so the
    lenient floor for spinning threads on a loaded machine cannot apply whatever else runs."""
    monkeypatch.setenv("OMP_WAIT_POLICY", "PASSIVE")
    short = {"steps": 12, "val_tokens": 4096}
    result = _run("hidden_passes_6", tmp_path, **short)
    assert not result["valid"] and result["error_type"] == "cpu_budget", (result.get("error_type"), result.get("error"))
    assert "far more work than" in result["error"] and "spinning" not in result["error"]
    before = _run("hidden_passes_6", tmp_path, min_cpu_efficiency=0.04, **short)
    assert before["valid"], (before.get("error_type"), before.get("error"))
