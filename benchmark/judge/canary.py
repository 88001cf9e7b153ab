"""Canaries: the scored model cannot change while it is scored.

A model that trains inside its forward passes (on windows it kept in its state, or on the
validation text it is shown) would score better with each batch; if both scoring processes train
the same way, every hidden probe agrees with itself, and the replay is compared only at the start.
So each scoring process's sequence of batches holds canary rows: repeats of validation windows
that the other process scores (a model cannot tell them from the windows it scores), at secret
places among its batches and in one last batch after all its validation batches. The training
worker answers the same rows right after it hands over the state (the judge asks, at the run's
precision, before the trained probes), and each scoring process's answers must equal those (the
probes' tolerances): any change of the model between the hand-over and the last canary shows.

The training worker's answers are the reference only because that worker is metered too: after the
hand-over it may run forward passes and nothing else (benchmark/judge/meter.py), so it cannot train
on before answering the way a scoring process would.
"""

from __future__ import annotations

import numpy as np
import torch

from . import probes

CHANGED = ("the model changed while it was scored: its log-probabilities on validation windows in a "
           "scoring process differ from the trained model's at the hand-over of its state. A trained model "
           "must stay as it is: no training, adaptation or state kept across forward calls while it is scored")


def place(plan: "probes.HiddenPlan", val_x: np.ndarray, per_run: int, rng: np.random.Generator) -> list:
    """Appends to each scoring process's sequence one last batch of repeats of windows the other
    process scores (each also a batch-independence probe), and picks `per_run` canary rows for it
    among its repeat rows: half in that last batch and half among its earlier batches, where it has
    that many. Returns each process's canary row ids (rows of plan.probe_rows)."""
    runs = plan.runs
    scored = [np.concatenate([w for _, w, _ in batches] + [np.zeros(0, dtype=np.int64)]) for batches in runs]
    rows = max(len(w) + len(ids) for batches in runs for _, w, ids in batches)
    chosen = []
    for r, batches in enumerate(runs):
        pool = scored[(r + 1) % len(runs)]
        earlier = np.concatenate([ids for _, _, ids in batches] + [np.zeros(0, dtype=np.int64)])
        earlier = earlier[plan.row_cut[earlier] < 0]
        windows = rng.choice(pool, size=rows, replace=len(pool) < rows)
        first = len(plan.row_window)
        plan.probe_rows = np.concatenate([plan.probe_rows, val_x[windows]])
        plan.row_window = np.concatenate([plan.row_window, windows]).astype(np.int64)
        plan.row_cut = np.concatenate([plan.row_cut, -np.ones(rows, dtype=np.int64)])
        last = np.arange(first, first + rows, dtype=np.int64)
        batches.append(("probe", np.zeros(0, dtype=np.int64), last))
        before = min(per_run // 2, len(earlier))
        picks = np.concatenate([rng.choice(earlier, size=before, replace=False),
                                rng.choice(last, size=min(per_run - before, rows), replace=False)])
        chosen.append(np.sort(picks).astype(np.int64))
    return chosen


def compare(name: str, scored: torch.Tensor, reference: torch.Tensor, tol: float, gain_tol: float) -> dict:
    """scored, reference: (n, T, C + 1) log-probabilities of the canary rows (secret columns, then
    the true next token) in the scoring process and in the training worker at hand-over. A model
    that trained on while scored gains on the true token: the gain statistic sees it even where
    bf16's tolerance hides each change."""
    everywhere = torch.ones(scored.shape[:2], dtype=torch.bool)
    return probes.compare(name, scored, reference, everywhere, tol, gain_tol, CHANGED, everywhere)
