"""Every known cheat is rejected for the right reason, or neutralized; honest variants pass."""

from __future__ import annotations

import re

import pytest

from tests.adversarial.cheats import CHEATS, HONEST, write
from tests.conftest import evaluate_tiny

FLAGS = {"--heartbeat": ("overrides", "heartbeat_s"), "--memory-limit": ("kwargs", "memory_limit_mb"),
         "--time-limit": ("kwargs", "time_limit_s")}


def _evaluate(name, tmp_path, extra=()):
    """(exit code as the CLI would give it, result) of the judge on one candidate."""
    overrides, kwargs = {}, {}
    for flag, value in zip(extra[::2], extra[1::2]):
        where, key = FLAGS[flag]
        (overrides if where == "overrides" else kwargs)[key] = float(value) if key != "memory_limit_mb" else int(value)
    result = evaluate_tiny(write(name, tmp_path), overrides, **kwargs)
    return (0 if result["valid"] else 1), result, ""


@pytest.fixture(scope="module")
def honest_tiny_result(reference_tiny):
    return reference_tiny


# One cheat per place a run can be rejected (the smoke tier): static, load, budget before and
# during training, probes before training, training, tamper, protocol, memory, hang, replay and the
# hidden probes of validation.
SMOKE = {"forbidden_import", "sys_exit_at_import", "more_parameters", "more_compute", "leak_topk_over_masked_row",
         "nan_loss_later", "patch_through_alias", "forge_channel_message", "memory_bomb", "hang_in_eval",
         "trained_state_outside_state_dict", "leak_in_large_batches"}


@pytest.mark.evaluation
@pytest.mark.parametrize("name", [pytest.param(n, marks=[pytest.mark.smoke] if n in SMOKE else [])
                                  for n in sorted(CHEATS)])
def test_cheat_is_caught(name, tmp_path, request):
    cheat = CHEATS[name]
    code, result, _ = _evaluate(name, tmp_path, cheat.cli_args)
    if cheat.neutralized:
        honest_tiny_result = request.getfixturevalue("honest_tiny_result")  # only these need it
        assert code == 0 and result["valid"], result.get("error")
        assert result["combined_score"] == honest_tiny_result["combined_score"]
        assert result["val_loss"] == honest_tiny_result["val_loss"]
        return
    assert code == 1, (result.get("combined_score"), [c for c in result["checks"] if not c["passed"]])
    assert result["combined_score"] == 0.0 and result["valid"] is False and result["error"]
    if cheat.stage:
        assert result["stage"] == cheat.stage, (result["stage"], result["error"])
    if cheat.error_type:
        assert result["error_type"] == cheat.error_type, (result["error_type"], result["error"])
    if cheat.checks:
        failed = [c["name"] for c in result["checks"] if not c["passed"]]
        assert any(f.startswith(prefix) for f in failed for prefix in cheat.checks), (failed, result["error"])
        evidence = [c["detail"] for c in result["checks"] if not c["passed"]]
        assert all(evidence), "a failed check without evidence"


@pytest.mark.evaluation
@pytest.mark.parametrize("name", sorted(HONEST))
def test_honest_variant_passes(name, tmp_path, request):
    if name == "reference":  # evaluated once for the whole run
        result = request.getfixturevalue("reference_tiny")
        code = 0 if result["valid"] else 1
    else:
        code, result, _ = _evaluate(name, tmp_path)
    assert code == 0, (result.get("error"), [c for c in result["checks"] if not c["passed"]])
    assert result["valid"] and result["combined_score"] > 0
    assert all(c["passed"] for c in result["checks"])


@pytest.mark.evaluation
def test_leak_evidence_is_actionable_and_keeps_probe_secrets(tmp_path):
    code, result, _ = _evaluate("leak_topk_over_masked_row", tmp_path)
    failed = [c for c in result["checks"] if not c["passed"]]
    detail = failed[0]["detail"]
    assert "future leak" in detail and "nats" in detail and "masks future positions" in detail
    # no cut position, column or window index a search could collect across runs
    assert not re.search(r"(position|column|window|cut) \d", detail), detail
    assert re.fullmatch(r"[0-9a-f]{32}", result["probe_seed"])


def test_every_cheat_edit_applies():
    from tests.adversarial.cheats import REDTEAM, source

    for entry in list(CHEATS.values()) + list(HONEST.values()) + list(REDTEAM.values()):
        source(entry)  # raises when the reference no longer contains an edited line


@pytest.mark.evaluation
def test_state_outside_the_state_dict_is_caught_in_a_bf16_run(tmp_path, monkeypatch):
    """probe:replay compares in fp32 whatever the run's precision: at bf16's 0.1-nat tolerance the
    trained table (it moves log-probabilities by ~0.05) passed on a CPU with native bf16. Forced
    here (emulated on a CPU without it: slower, the same autocast path)."""
    import benchmark.judge.tuning as tuning

    monkeypatch.setattr(tuning, "bf16_supported", lambda device: True)
    result = evaluate_tiny(write("trained_state_outside_state_dict", tmp_path), precision="bf16", threads=1)
    assert result["precision"] == "bf16" and not result["valid"], result.get("error")
    replay = next(c for c in result["checks"] if c["name"] == "probe:replay")
    assert not replay["passed"] and "(tolerance 0.001)" in replay["detail"], replay
