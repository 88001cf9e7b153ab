"""This machine's fp32 matmul peak per CPU-second on one thread: the yardstick the CPU budget
checks measure a worker's CPU time per counted FLOP against (benchmark.judge.budget.cpu_check).
Measured by the judge on synthetic tensors, kept with the machine's tuning once measured quiet
(:mod:`benchmark.judge.load`). One thread and CPU time, so threads spinning while another program
holds the cores do not distort it.
"""

from __future__ import annotations

import json
import time
from typing import Callable, Optional

import torch

from . import load, machine
from ..fsutil import atomic_write

SIZE, WINDOW_S, WINDOWS = 256, 0.1, 5  # 256 x 256 fp32 matmuls; the fastest of 5 windows of 0.1 CPU-s
FORMAT = 1                             # of the kept peak


def matmul_rates(windows: int = WINDOWS) -> list:
    """fp32 matmul FLOPs per CPU-second on one thread, one figure per window of WINDOW_S
    CPU seconds (CPU time: a thread waiting for a core does not count)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a, b = torch.randn(SIZE, SIZE), torch.randn(SIZE, SIZE)
        for _ in range(3):
            a @ b
        rates = []
        for _ in range(windows):
            flops, start = 0, time.process_time()
            while time.process_time() - start < WINDOW_S:
                for _ in range(20):
                    a @ b
                flops += 20 * 2 * SIZE ** 3
            rates.append(flops / max(time.process_time() - start, 1e-6))
        return rates
    finally:
        torch.set_num_threads(threads)


_PEAK: Optional[dict] = None  # the kept peak, once read or measured quiet in this process
_LOADED: Optional[dict] = None  # the last peak measured under load here, used load.RETRY_S unmeasured


def matmul_peak(others: Optional[Callable[[], float]] = None,
                rates: Optional[Callable[[], list]] = None) -> dict:
    """{"flops_per_cpu_s", "under_load", "source"}: this machine's fp32 matmul peak per CPU-second
    on one thread (the fastest window), the yardstick of the CPU budget checks. Kept once measured
    on a quiet machine (PLASA_CACHE_DIR/tuning/, per CPU model and torch). Until then it is
    measured (~0.5 CPU-s) and kept nowhere but in this process, for load.RETRY_S: a loaded
    machine's figure (lower: shared caches, a busy sibling core) makes the allowance looser for
    those runs only, never stricter for an honest model."""
    global _PEAK, _LOADED
    if _PEAK is not None:
        return _PEAK
    if _LOADED is not None and 0 <= time.time() - _LOADED["at"] < load.RETRY_S:
        return _LOADED
    path = machine.kept(f"{machine.key(FORMAT, SIZE)}-matmul")
    try:
        kept = json.loads(path.read_text())
        if isinstance(kept, dict) and isinstance(kept.get("flops_per_cpu_s"), (int, float)) and kept["flops_per_cpu_s"] > 0:
            _PEAK = dict(kept, source="cache")
            return _PEAK
    except (OSError, ValueError):
        pass
    with load.Watch(others) as watch:
        measured = (rates or matmul_rates)()
    seen = load.verdict(watch, [load.spread([1 / r for r in measured])])
    peak = {"flops_per_cpu_s": max(measured), "under_load": seen["loaded"], "load": seen}
    if seen["loaded"]:
        _LOADED = dict(peak, source="measured under load (not kept)", at=time.time())
        return _LOADED
    try:
        atomic_write(path, json.dumps(peak).encode())
    except OSError:
        pass  # an unwritable cache: kept in this process only
    _PEAK = dict(peak, source="measured")
    return _PEAK
