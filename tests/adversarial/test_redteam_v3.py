"""Red-team pass against Judge v3 (issue 29): the metered workers, canaries and compile-beat bounds.

Each attack is a whole candidate in tests/adversarial/redteam/. An attack the judge still accepts
is a strict xfail stating the gain measured at `--steps 30 --val-tokens 16384` on the shared 2-core
CPU (fp32): the day it is rejected for its real cause the test says so.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import evaluate_tiny

FOLDER = Path(__file__).parent / "redteam"
# two scoring processes, each ending with its canary batch (as tests/test_metered_attacks.py)
BUDGET = {"steps": 30, "val_tokens": 8192, "val_batch_size": 32, "probe_causal_rows": 31, "probe_repeat_rows": 4}


def _run(name: str) -> dict:
    return evaluate_tiny(FOLDER / f"{name}.py", overrides=BUDGET)


@pytest.mark.evaluation
@pytest.mark.xfail(strict=True, reason="open: pre-training on the untrained probe windows inside the first eval-mode probe "
                   "forward (before_training's 600 s compile allowance; eval-mode probe forwards are not snapshotted "
                   "and restored) is accepted: 2.93x the reference's combined_score at --steps 30 --val-tokens 16384 "
                   "(2.38e-4 vs 8.14e-5, val_ppl 4196 vs 12279; 2-core CPU, fp32)")
def test_pretraining_inside_the_untrained_probe_forwards_is_rejected():
    """Eight AdamW steps on the 8 untrained probe windows (training text), run inside the first
    eval-mode probe forward before training (forged compile beats keep the 60 s heartbeat away):
    every later probe, the replay and the canaries see the same pre-trained model, so only a rule about the model before training can see it (the
    model must come out of the untrained probes as it went in, or the pre-training windows' CPU
    be metered as forward work)."""
    result = _run("pretrain_in_untrained_probes")
    assert not result["valid"], f"accepted with combined_score {result.get('combined_score')}"
