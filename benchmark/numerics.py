"""The evaluator's global torch numerics, one policy for the judge and every worker.

"Bit for bit" (an honest model's score repeats exactly) needs more on CUDA than on a CPU: TF32
matmuls and convolutions off (fp32 means IEEE fp32, as on the CPU; bf16 runs are bf16 by
autocast), cuDNN's deterministic algorithms without autotuning, PyTorch's deterministic
algorithms (warn-only: an op without a deterministic kernel, such as an index_add_ backward,
warns rather than rejecting an honest model), and cuBLAS's fixed workspace, which must be in the
environment before cuBLAS starts. Workers apply it before and again after building the model (a
candidate's own settings do not carry into training or scoring); the result records it.
"""

from __future__ import annotations

import torch

CUBLAS_WORKSPACE = ":4096:8"


def env(device: str) -> dict:
    """Environment variables a worker on `device` needs before CUDA starts."""
    return {"CUBLAS_WORKSPACE_CONFIG": CUBLAS_WORKSPACE} if device.startswith("cuda") else {}


def policy(device: str) -> dict:
    """What :func:`apply` sets on `device`, as the result records it."""
    cuda = device.startswith("cuda")
    return {"float32_matmul_precision": "highest", "tf32": False, "deterministic": cuda,
            "cudnn_benchmark": False, "cublas_workspace": CUBLAS_WORKSPACE if cuda else None}


def apply(device: str) -> dict:
    """Sets the policy in this process; returns it."""
    chosen = policy(device)
    torch.set_float32_matmul_precision(chosen["float32_matmul_precision"])
    torch.backends.cuda.matmul.allow_tf32 = chosen["tf32"]
    torch.backends.cudnn.allow_tf32 = chosen["tf32"]
    torch.backends.cudnn.benchmark = chosen["cudnn_benchmark"]
    torch.backends.cudnn.deterministic = chosen["deterministic"]
    if chosen["deterministic"]:
        torch.use_deterministic_algorithms(True, warn_only=True)
    return chosen


def current() -> dict:
    """The settings as this process has them now (for tests and checks)."""
    return {"float32_matmul_precision": torch.get_float32_matmul_precision(),
            "tf32": torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32,
            "deterministic": torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic,
            "cudnn_benchmark": torch.backends.cudnn.benchmark}
