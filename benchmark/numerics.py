"""The evaluator's global torch numerics, one policy for the judge and every worker.

"Bit for bit" (an honest model's score repeats exactly) needs more on CUDA than on a CPU: TF32
matmuls and convolutions off (fp32 means IEEE fp32, as on the CPU; bf16 runs are bf16 by
autocast), cuDNN's deterministic algorithms without autotuning, PyTorch's deterministic
algorithms (warn-only: an op without a deterministic kernel, such as an index_add_ backward,
warns rather than rejecting an honest model), and cuBLAS's fixed workspace, which must be in the
environment before cuBLAS starts. Workers apply it before and again after building the model (a
candidate's own settings do not carry into training or scoring); the result records it. Every
backend flag a candidate may assign (static_checks.BACKEND_FLAGS) is set here: the legacy TF32
flags and the newer fp32_precision settings, and at torch's defaults the reduced-precision
reductions, fp16 accumulation, cuDNN and oneDNN.
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
            "cudnn_benchmark": False, "cublas_workspace": CUBLAS_WORKSPACE if cuda else None,
            # torch's defaults, set again so that a candidate's assignment does not carry over
            "reduced_precision_reduction": True, "fp16_accumulation": False, "cudnn_enabled": True,
            "mkldnn_enabled": True}


# The backends with an fp32_precision setting (torch >= 2.9); "ieee" is TF32 and bf16 off. A
# candidate's torch.backends.fp32_precision = "tf32" survives the legacy allow_tf32 flags.
FP32_PRECISION_NODES = ("", "cuda.matmul", "cudnn", "cudnn.conv", "cudnn.rnn", "mkldnn", "mkldnn.matmul",
                        "mkldnn.conv", "mkldnn.rnn")


def _backend(path: str):
    node = torch.backends
    for part in filter(None, path.split(".")):
        node = getattr(node, part, None)
    return node


def apply(device: str) -> dict:
    """Sets the policy in this process; returns it."""
    chosen = policy(device)
    if hasattr(torch.backends, "fp32_precision"):  # first: the legacy flags below then read back
        for path in FP32_PRECISION_NODES:
            _backend(path).fp32_precision = "tf32" if chosen["tf32"] else "ieee"
    torch.set_float32_matmul_precision(chosen["float32_matmul_precision"])
    torch.backends.cuda.matmul.allow_tf32 = chosen["tf32"]
    torch.backends.cudnn.allow_tf32 = chosen["tf32"]
    torch.backends.cudnn.benchmark = chosen["cudnn_benchmark"]
    torch.backends.cudnn.deterministic = chosen["deterministic"]
    torch.backends.cudnn.enabled = chosen["cudnn_enabled"]
    torch.backends.mkldnn.enabled = chosen["mkldnn_enabled"]
    matmul = torch.backends.cuda.matmul
    matmul.allow_fp16_reduced_precision_reduction = chosen["reduced_precision_reduction"]
    matmul.allow_bf16_reduced_precision_reduction = chosen["reduced_precision_reduction"]
    if hasattr(matmul, "allow_fp16_accumulation"):  # torch >= 2.7
        matmul.allow_fp16_accumulation = chosen["fp16_accumulation"]
    if chosen["deterministic"]:
        torch.use_deterministic_algorithms(True, warn_only=True)
    return chosen


def current() -> dict:
    """The settings as this process has them now (for tests and checks)."""
    return {"float32_matmul_precision": torch.get_float32_matmul_precision(),
            "tf32": torch.backends.cuda.matmul.allow_tf32 or torch.backends.cudnn.allow_tf32,
            "deterministic": torch.are_deterministic_algorithms_enabled() and torch.backends.cudnn.deterministic,
            "cudnn_benchmark": torch.backends.cudnn.benchmark}
