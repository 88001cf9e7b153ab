"""Numerics and threads on the machine an evaluation runs on: native bf16 only, TF32 off and
deterministic kernels on CUDA (recorded), and a judge no wider than its workers."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import benchmark.judge.evaluation as evaluation
from benchmark import numerics
from benchmark.judge.tuning import resolve
from tests.conftest import REPO, evaluate_tiny


@pytest.fixture
def simulated_gpu(monkeypatch):
    """A machine with 8 GPUs of compute capability `capability[0]`, on the CPU."""
    capability = [(9, 0)]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 8)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: capability[0])
    # torch's own answer counts emulation unless told not to
    monkeypatch.setattr(torch.cuda, "is_bf16_supported",
                        lambda including_emulation=True: including_emulation or capability[0][0] >= 8)
    return capability


def test_auto_precision_never_picks_emulated_bf16_on_a_pre_ampere_gpu(simulated_gpu):
    simulated_gpu[0] = (7, 0)  # a V100
    assert resolve("cuda:0", "auto", None)[0] == "fp32"
    assert resolve("cuda:0", "bf16", None)[0] == "fp32"
    simulated_gpu[0] = (8, 0)  # an A100
    assert resolve("cuda:0", "auto", None)[0] == "bf16"


def test_gpu_evaluations_share_the_cores_between_the_gpus(simulated_gpu, monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 16)
    _, threads, why = resolve("cuda:3", "auto", None)
    assert threads == 2 and why["threads"] == 2
    assert resolve("cuda:3", "auto", 5)[1] == 5  # the caller's choice wins


def test_the_cuda_policy_turns_tf32_off_and_deterministic_kernels_on():
    code = ("from benchmark import numerics; import json; "
            "print(json.dumps([numerics.apply('cuda:0'), numerics.current()]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    import json

    chosen, now = json.loads(out.stdout)
    assert chosen["tf32"] is False and chosen["deterministic"] is True and chosen["cublas_workspace"]
    assert now == {k: chosen[k] for k in now}
    assert numerics.env("cuda:0") == {"CUBLAS_WORKSPACE_CONFIG": numerics.CUBLAS_WORKSPACE}
    assert numerics.env("cpu") == {} and numerics.policy("cpu")["deterministic"] is False


@pytest.mark.evaluation
def test_the_judge_scores_with_as_many_threads_as_its_workers_and_records_the_numerics(monkeypatch):
    seen = []
    real = evaluation.row_stats

    def counting(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluation, "row_stats", counting)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        result = evaluate_tiny(REPO / "initial_program.py", {"val_tokens": 2048, "val_batch_size": 8}, threads=1)
        assert torch.get_num_threads() == 2, "the judge's thread count was not restored"
    finally:
        torch.set_num_threads(before)
    assert result["valid"], result.get("error")
    assert seen and set(seen) == {1} and result["environment"]["judge_threads"] == 1
    assert result["numerics"] == numerics.policy("cpu")
