"""The ids and logits memory a worker shares with the judge: sealed, so a worker cannot cut it under
the judge's mapping (which killed the judge with SIGBUS), and handed over as descriptors."""

from __future__ import annotations

import os

import numpy as np
import pytest

from benchmark.judge.scoring import Exchange
from benchmark.protocol import Message


@pytest.mark.skipif(not hasattr(os, "memfd_create"), reason="no memfd on this OS")
def test_the_shared_memory_cannot_be_cut_or_grown(tmp_path):
    exchange = Exchange(tmp_path, 2, 4, 8)
    assert exchange.sealed and not list(tmp_path.iterdir()), "memory files, nothing in the folder"
    ids_fd, logits_fd = exchange.fds
    exchange.put(np.arange(8).reshape(2, 4))
    view = os.open(f"/proc/self/fd/{logits_fd}", os.O_RDWR)  # what a worker could reopen
    try:
        for size in (0, 10 << 20):
            with pytest.raises(PermissionError):
                os.ftruncate(view, size)
    finally:
        os.close(view)
    logits = exchange.logits(Message("out", shape=[2, 4, 8], dtype="float32"), 2)
    assert logits.shape == (2, 4, 8) and float(logits.abs().sum()) == 0.0  # still mapped, readable
    assert exchange.ids.tolist() == [[0, 1, 2, 3], [4, 5, 6, 7]]
    exchange.handed_over()
    assert exchange.fds == ()
    exchange.close()


def test_without_memfd_the_exchange_falls_back_to_files_and_says_so(tmp_path, monkeypatch):
    monkeypatch.delattr(os, "memfd_create", raising=False)
    exchange = Exchange(tmp_path, 2, 4, 8)
    assert not exchange.sealed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ids.bin", "logits.bin"]
    exchange.put(np.ones((1, 4), dtype=np.int64))
    assert exchange.ids[0].tolist() == [1, 1, 1, 1]
    exchange.close()
