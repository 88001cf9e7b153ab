"""Where an evaluation runs: a free GPU of this machine, or a task on a Ray cluster.

``PLASA_DEVICE=cuda`` (no index) with several parallel evaluations on a multi-GPU machine: each
takes the first GPU nobody holds, under an flock per device in PLASA_CACHE_DIR/gpu-locks (shared
by every process of the machine), and waits for one when all are taken. ``cuda:N`` is used as
given.

``PLASA_RAY_ADDRESS=ADDR`` (``auto``, ``ray://host:10001``, or ``local`` for a Ray started here):
:func:`remote_evaluate` sends the candidate's source to the cluster as one task asking for one
GPU (``PLASA_DEVICE=cuda``) or ``PLASA_RAY_CPUS`` CPUs (default 2), runs the evaluation there and
blocks until its result, so a search on a laptop drives a cluster unchanged. Cluster nodes need
PLASA-Bench importable and the data where their PLASA_DATA_DIR says; the driver's PLASA_*
variables travel with the task.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import time
from pathlib import Path
from typing import Callable, Iterator, Optional

from ..fsutil import cache_dir

POLL_S = 1.0


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


@contextlib.contextmanager
def gpu_slot(count: Optional[Callable[[], int]] = None, poll_s: float = POLL_S,
             deadline: Optional[float] = None) -> Iterator[str]:
    """Holds a free GPU for the duration of the block; yields "cuda:N". With no GPU, "cuda" (the
    evaluation then fails with its own clear message)."""
    n = (count or gpu_count)()
    if n <= 0:
        yield "cuda"
        return
    folder = cache_dir() / "gpu-locks"
    folder.mkdir(parents=True, exist_ok=True)
    while True:
        for index in range(n):
            handle = open(folder / f"cuda{index}.lock", "a+")
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


def _remote_task(source: bytes, name: str, kwargs: dict) -> dict:
    """Runs on a cluster node: the candidate's source in a private temp file, evaluated there."""
    from .runner import evaluate_file

    folder = tempfile.mkdtemp(prefix="plasa-remote-")
    path = Path(folder) / name
    try:
        path.write_bytes(source)
        return evaluate_file(str(path), **kwargs)
    finally:
        path.unlink(missing_ok=True)
        os.rmdir(folder)


def remote_evaluate(program_path: str, address: str, **kwargs) -> dict:
    """evaluate_file(program_path, **kwargs) as one Ray task on the cluster at `address`."""
    import ray

    if not ray.is_initialized():
        env = {k: v for k, v in os.environ.items() if k.startswith("PLASA_") and k != "PLASA_RAY_ADDRESS"}
        ray.init(address=None if address == "local" else address, include_dashboard=False,
                 log_to_driver=False, runtime_env={"env_vars": env})
    device = kwargs.get("device", "cpu")
    resources = ({"num_gpus": 1} if device.startswith("cuda")
                 else {"num_cpus": int(os.environ.get("PLASA_RAY_CPUS", "2"))})
    if device.startswith("cuda"):
        kwargs = dict(kwargs, device="cuda")  # Ray sets CUDA_VISIBLE_DEVICES to the task's GPU
    task = ray.remote(**resources)(_remote_task)
    source = Path(program_path).read_bytes()
    result = ray.get(task.remote(source, Path(program_path).name, kwargs))
    result.setdefault("candidate", {})["path"] = program_path
    return result
