"""The judge's arithmetic on the logits a worker hands over: loss, accuracy, log-probabilities.

Runs in the judge's process, which never imports a candidate. Logits arrive in a file the worker
wrote (:data:`benchmark.protocol.LOGITS_FILE`), mapped here; every number that defines the score
is computed from them here (:mod:`benchmark.xent`: each row block copied once, fp32 blocks,
float64 sums).
"""

from __future__ import annotations

import math
import mmap
import os
from pathlib import Path

import numpy as np
import torch

from .peak import matmul_peak
from ..protocol import IDS_FILE, LOGIT_DTYPES, LOGITS_FILE, Message
from ..xent import RowStats

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def matmul_flops_per_cpu_s() -> float:
    """This machine's fp32 matmul peak per CPU-second on one thread, the yardstick for a worker's
    CPU time per counted FLOP: kept with the machine's tuning once measured on a quiet machine
    (:func:`benchmark.judge.peak.matmul_peak`)."""
    return matmul_peak()["flops_per_cpu_s"]


class Exchange:
    """The two files shared with one worker: input ids in, logits out."""

    def __init__(self, workdir: Path, max_rows: int, seq_len: int, vocab: int) -> None:
        self.max_rows, self.seq_len, self.vocab = max_rows, seq_len, vocab
        ids_path, logits_path = workdir / IDS_FILE, workdir / LOGITS_FILE
        with open(ids_path, "wb") as fh:
            fh.truncate(max_rows * seq_len * 8)
        with open(logits_path, "wb") as fh:
            fh.truncate(max_rows * seq_len * vocab * 4)
        self.ids = np.memmap(ids_path, dtype=np.int64, mode="r+", shape=(max_rows, seq_len))
        fd = os.open(logits_path, os.O_RDWR)
        try:
            self.out = mmap.mmap(fd, max_rows * seq_len * vocab * 4)
        finally:
            os.close(fd)

    def put(self, x: np.ndarray) -> None:
        self.ids[: len(x)] = x

    def logits(self, message: Message, rows: int) -> torch.Tensor:
        """The (rows, T, V) logits the worker says it wrote; ValueError when they cannot be."""
        shape = (rows, self.seq_len, self.vocab)
        if tuple(message.shape) != shape or message.dtype not in LOGIT_DTYPES:
            raise ValueError(f"logits of shape {tuple(message.shape)} and dtype {message.dtype!r}; "
                             f"expected {shape}")
        return torch.frombuffer(self.out, dtype=TORCH_DTYPES[message.dtype],
                                count=math.prod(shape)).view(shape)

    def close(self) -> None:
        del self.ids
        try:
            self.out.close()
        except BufferError:
            pass


class Score:
    """Per-window sums, added up in window order at the end: the same score whatever order the
    batches were scored in."""

    def __init__(self, n_windows: int) -> None:
        self.loss = np.zeros(n_windows, dtype=np.float64)
        self.correct = np.zeros(n_windows, dtype=np.int64)
        self.tokens = np.zeros(n_windows, dtype=np.int64)
        self.non_finite = False

    def metrics(self) -> dict:
        count = int(self.tokens.sum())
        val_loss = float(self.loss.sum()) / count
        val_ppl = math.exp(val_loss) if val_loss < 700 else float("inf")
        return {"val_loss": val_loss, "val_ppl": val_ppl, "val_acc": int(self.correct.sum()) / count,
                "combined_score": 1.0 / val_ppl if math.isfinite(val_ppl) else 0.0}

    @property
    def complete(self) -> bool:
        return bool((self.tokens > 0).all())


def score_batch(score: Score, windows: np.ndarray, stats: RowStats, seq_len: int) -> None:
    """Adds the cross-entropy and top-1 hits of each window of one batch from its rows'
    :class:`~benchmark.xent.RowStats` (windows x seq_len rows, in window order)."""
    losses = stats.nll().view(len(windows), seq_len).sum(-1)    # (n,) float64
    if not bool(torch.isfinite(losses).all()):
        score.non_finite = True
        return
    score.loss[windows] = losses.numpy()
    score.correct[windows] = stats.hit.view(len(windows), seq_len).sum(-1).numpy()
    score.tokens[windows] = seq_len
