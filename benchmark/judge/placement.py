"""Where an evaluation runs on this machine: a free GPU, or the CPU (a Ray cluster: remote.py).

``PLASA_DEVICE=cuda`` (no index) with several parallel evaluations on a multi-GPU machine: each
takes the first GPU nobody holds, under an flock per device in PLASA_CACHE_DIR/gpu-locks (shared
by every process of the machine), and waits for one when all are taken. ``cuda:N`` is used as
given. A lock names the physical GPU (:func:`physical_gpu`, through CUDA_VISIBLE_DEVICES), so Ray
tasks of one node, each shown only its own GPU as cuda:0, never wait on each other.

:func:`worker_placement` gives a worker's device and environment: a GPU worker sees only its GPU
(``CUDA_VISIBLE_DEVICES`` set to it), as ``cuda:0``, so a candidate's bare ``.cuda()`` lands there
and no CUDA context is made on another GPU; a CPU worker sees none. :func:`device_kind` is what a
result depends on, for the results cache: the GPU's model, not its index.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import time
from typing import Callable, Iterator, Mapping, Optional

from ..fsutil import cache_dir

POLL_S = 1.0


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def _index(device: str) -> int:
    """N of "cuda:N"; 0 for "cuda", the device torch picks."""
    return int(device.partition(":")[2] or 0)


def physical_gpu(index: int, environ: Mapping[str, str] = os.environ) -> str:
    """The machine's name for the GPU this process sees as cuda:`index`: its entry in
    CUDA_VISIBLE_DEVICES (a number, GPU-<uuid> or MIG-...), or the index itself where that is
    unset. Visible indices are renumbered, so only this names the same GPU in every process."""
    visible = environ.get("CUDA_VISIBLE_DEVICES")
    if visible is None:
        return str(index)
    entries = [entry.strip() for entry in visible.split(",") if entry.strip()]
    if not 0 <= index < len(entries):
        raise ValueError(f"cuda:{index} is not visible with CUDA_VISIBLE_DEVICES={visible!r}")
    return entries[index]


def worker_placement(device: str, environ: Mapping[str, str] = os.environ) -> tuple[str, dict]:
    """(the device a worker uses, variables to add to its environment) for an evaluation on
    `device` as this process numbers GPUs."""
    if not device.startswith("cuda"):
        return device, {"CUDA_VISIBLE_DEVICES": ""}
    return "cuda:0", {"CUDA_VISIBLE_DEVICES": physical_gpu(_index(device), environ)}


def device_kind(device: str) -> str:
    """What a result on `device` depends on: "cpu", or "cuda:" and the GPU's model (models differ in
    bf16 numerics; which of several equal GPUs does not matter). "cuda" where there is no such GPU
    (the evaluation then fails)."""
    if not device.startswith("cuda"):
        return device
    import torch

    if not torch.cuda.is_available() or _index(device) >= torch.cuda.device_count():
        return "cuda"
    return "cuda:" + torch.cuda.get_device_name(_index(device))


@contextlib.contextmanager
def gpu_slot(count: Optional[Callable[[], int]] = None, poll_s: float = POLL_S,
             deadline: Optional[float] = None, environ: Mapping[str, str] = os.environ) -> Iterator[str]:
    """Holds a free GPU for the duration of the block; yields "cuda:N", N as this process numbers
    GPUs (`environ`'s CUDA_VISIBLE_DEVICES). With no GPU, "cuda" (the evaluation then fails with
    its own clear message)."""
    n = (count or gpu_count)()
    if n <= 0:
        yield "cuda"
        return
    folder = cache_dir() / "gpu-locks"
    folder.mkdir(parents=True, exist_ok=True)
    names = (re.sub(r"[^A-Za-z0-9_.-]", "_", physical_gpu(index, environ)) for index in range(n))
    locks = [folder / f"{name}.lock" for name in names]
    while True:
        for index, lock in enumerate(locks):
            handle = open(lock, "a+")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.close()
                continue
            try:
                yield f"cuda:{index}"
                return
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
                handle.close()
        if deadline is not None and time.monotonic() > deadline:
            raise TimeoutError(f"all {n} GPUs stayed busy")
        time.sleep(poll_s)
