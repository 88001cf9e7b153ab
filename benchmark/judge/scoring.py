"""The judge's arithmetic on the logits a worker hands over: loss, accuracy, log-probabilities.

Runs in the judge's process, which never imports a candidate. Logits arrive in a sealed memory
file the worker wrote (:class:`Exchange`), mapped here; every number that defines the score
is computed from them here (:mod:`benchmark.judge.xent`: each row block copied once, fp32 blocks,
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
from .xent import RowStats

TORCH_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def matmul_flops_per_cpu_s() -> float:
    """This machine's fp32 matmul peak per CPU-second on one thread, the yardstick for a worker's
    CPU time per counted FLOP: kept with the machine's tuning once measured on a quiet machine
    (:func:`benchmark.judge.peak.matmul_peak`)."""
    return matmul_peak()["flops_per_cpu_s"]


def _sealed_memory(name: str, size: int) -> int:
    """A memory file of `size` bytes that nobody can shrink or grow (memfd with F_SEAL_SHRINK,
    F_SEAL_GROW and F_SEAL_SEAL): a worker holding it cannot cut it under the judge's mapping,
    which would kill the judge with SIGBUS on its next read. OSError where the OS has no memfd."""
    fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        os.ftruncate(fd, size)
        import fcntl

        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL)
    except (OSError, AttributeError):
        os.close(fd)
        raise OSError("memory files cannot be sealed here")
    return fd


class Exchange:
    """The two memory files shared with one worker: input ids in, logits out. The worker inherits
    them as file descriptors when it is spawned (never a path in its folder) and maps them. Where
    the OS can seal them (Linux memfd), their size is fixed for good; elsewhere they are files in
    the worker's folder, and ``sealed`` is False (a worker that truncates one can crash the judge:
    docs/judge.md "Known limits")."""

    def __init__(self, workdir: Path, max_rows: int, seq_len: int, vocab: int) -> None:
        self.max_rows, self.seq_len, self.vocab = max_rows, seq_len, vocab
        sizes = (max_rows * seq_len * 8, max_rows * seq_len * vocab * 4)
        try:
            fds = [_sealed_memory(name, size) for name, size in zip(("plasa-ids", "plasa-logits"), sizes)]
            self.sealed = True
        except (OSError, AttributeError):  # no memfd (macOS) or no sealing: files, as before
            fds = []
            for name, size in zip((IDS_FILE, LOGITS_FILE), sizes):
                fd = os.open(workdir / name, os.O_RDWR | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
                os.ftruncate(fd, size)
                fds.append(fd)
            self.sealed = False
        self.fds = tuple(fds)
        self.ids = np.frombuffer(mmap.mmap(fds[0], sizes[0]), dtype=np.int64).reshape(max_rows, seq_len)
        self.out = mmap.mmap(fds[1], sizes[1])

    def handed_over(self) -> None:
        """The worker holds its copies of the descriptors: the judge keeps only its mappings."""
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds = ()

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
        self.handed_over()
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
    :class:`~benchmark.judge.xent.RowStats` (windows x seq_len rows, in window order)."""
    losses = stats.nll().view(len(windows), seq_len).sum(-1)    # (n,) float64
    if not bool(torch.isfinite(losses).all()):
        score.non_finite = True
        return
    score.loss[windows] = losses.numpy()
    score.correct[windows] = stats.hit.view(len(windows), seq_len).sum(-1).numpy()
    score.tokens[windows] = seq_len
