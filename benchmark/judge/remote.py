"""An evaluation as a task on a Ray cluster.

``PLASA_RAY_ADDRESS=ADDR`` (``auto``, ``ray://host:10001``, or ``local`` for a Ray started here):
:func:`remote_evaluate` sends the candidate's source to the cluster as one task asking for one
GPU (``PLASA_DEVICE=cuda``) or ``PLASA_RAY_CPUS`` CPUs (default 2), runs the evaluation there and
blocks until its result, so a search on a laptop drives a cluster unchanged. Cluster nodes need
PLASA-Bench importable and the data where their PLASA_DATA_DIR says; the driver's PLASA_*
variables travel with the task.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Optional

from .options import Options
from .runner import evaluate_file


def _remote_task(source: bytes, name: str, options: Options) -> dict:
    """Runs on a cluster node: the candidate's source in a private temp file, evaluated there."""
    folder = tempfile.mkdtemp(prefix="plasa-remote-")
    path = Path(folder) / name
    try:
        path.write_bytes(source)
        return evaluate_file(str(path), options)
    finally:
        path.unlink(missing_ok=True)
        os.rmdir(folder)


def remote_evaluate(program_path: str, address: str, options: Optional[Options] = None, **changes) -> dict:
    """evaluate_file(program_path, options, **changes) as one Ray task on the cluster at `address`."""
    import ray

    if not ray.is_initialized():
        env = {k: v for k, v in os.environ.items() if k.startswith("PLASA_") and k != "PLASA_RAY_ADDRESS"}
        ray.init(address=None if address == "local" else address, include_dashboard=False,
                 log_to_driver=False, runtime_env={"env_vars": env})
    options = Options.of(options, **changes)
    device = options.device
    resources = ({"num_gpus": 1} if device.startswith("cuda")
                 else {"num_cpus": int(os.environ.get("PLASA_RAY_CPUS", "2"))})
    if device.startswith("cuda"):
        options = options.replace(device="cuda")  # Ray sets CUDA_VISIBLE_DEVICES to the task's GPU
    task = ray.remote(**resources)(_remote_task)
    source = Path(program_path).read_bytes()
    result = ray.get(task.remote(source, Path(program_path).name, options))
    result.setdefault("candidate", {})["path"] = program_path
    return result
