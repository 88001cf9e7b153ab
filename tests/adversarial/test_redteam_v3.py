"""Red-team pass against Judge v3 (issue 29): the metered workers, canaries and compile-beat bounds.

Each attack is an edit of the reference in tests/adversarial/cheats.py (REDTEAM). An attack the judge still accepts
is a strict xfail stating the gain measured at `--steps 30 --val-tokens 16384` on the shared 2-core
CPU (fp32): the day it is rejected for its real cause the test says so.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.adversarial.cheats import write
from tests.conftest import evaluate_tiny

# two scoring processes, each ending with its canary batch (as tests/test_metered_attacks.py)
BUDGET = {"steps": 30, "val_tokens": 8192, "val_batch_size": 32, "probe_causal_rows": 31, "probe_repeat_rows": 4}


def _run(name: str, tmp_path: Path) -> dict:
    return evaluate_tiny(write(name, tmp_path), overrides=BUDGET)


@pytest.mark.evaluation
def test_pretraining_inside_the_untrained_probe_forwards_gains_nothing(tmp_path):
    """Eight AdamW steps on the 8 untrained probe windows (training text), run inside the first
    eval-mode probe forward before training (forged compile beats keep the 60 s heartbeat away),
    were kept: 2.93x the reference's combined_score at --steps 30 --val-tokens 16384 (2-core CPU,
    fp32). Every forward of the training worker now leaves the model as it found it, so the run is
    the reference's (or, where the beats are capped first, rejected)."""
    result = _run("pretrain_in_untrained_probes", tmp_path)
    if result["valid"]:
        reference = evaluate_tiny(Path(__file__).parents[2] / "initial_program.py", overrides=BUDGET)
        assert result["combined_score"] <= reference["combined_score"] * 1.001, (
            result["combined_score"], reference["combined_score"])
