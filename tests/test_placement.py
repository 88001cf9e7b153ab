"""Which GPU an evaluation holds, what its workers see, and how its result is cached, on machines
simulated on the CPU: device counts are passed in, CUDA_VISIBLE_DEVICES is set per test, and the
GPU's model name is monkeypatched."""

from __future__ import annotations

import threading
import time

import pytest

from benchmark.judge.options import Options
from benchmark.judge.placement import gpu_slot, worker_placement
from benchmark.judge.runner import result_cache_path
from benchmark.spec import Spec

ONE = lambda: 1  # noqa: E731  (what torch counts inside a Ray task: its own GPU only)


@pytest.fixture(autouse=True)
def locks_here(monkeypatch, tmp_path):
    monkeypatch.setenv("PLASA_CACHE_DIR", str(tmp_path))


def test_ray_tasks_on_different_gpus_of_a_node_do_not_wait_on_each_other(monkeypatch, tmp_path):
    """Two tasks each shown one GPU as cuda:0 (CUDA_VISIBLE_DEVICES 2 and 5) hold their slots at
    once, from the environment or from `environ`; a second task on GPU 2 waits for the first."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "2")
    other = []

    def on_gpu_5():
        with gpu_slot(ONE, poll_s=0.01, deadline=time.monotonic() + 0.2,
                      environ={"CUDA_VISIBLE_DEVICES": "5"}) as device:
            other.append(device)

    with gpu_slot(ONE) as held:
        thread = threading.Thread(target=on_gpu_5)
        thread.start()
        thread.join(timeout=5)
        assert other == ["cuda:0"], "a task on GPU 5 waited for the task on GPU 2"
        with pytest.raises(TimeoutError):
            with gpu_slot(ONE, poll_s=0.01, deadline=time.monotonic() + 0.1,
                          environ={"CUDA_VISIBLE_DEVICES": "2"}):
                pass
    assert held == "cuda:0"
    assert sorted(p.name for p in (tmp_path / "gpu-locks").iterdir()) == ["2.lock", "5.lock"]


def test_a_gpu_named_by_uuid_locks_a_file_named_after_it(monkeypatch, tmp_path):
    """A MIG or GPU-<uuid> entry names the lock, made safe as a file name."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "MIG-GPU-8f3a/1/0")
    with gpu_slot(ONE) as held:
        with pytest.raises(TimeoutError):
            with gpu_slot(ONE, poll_s=0.01, deadline=time.monotonic() + 0.1):
                pass
    assert held == "cuda:0"
    assert [p.name for p in (tmp_path / "gpu-locks").iterdir()] == ["MIG-GPU-8f3a_1_0.lock"]


def test_slots_go_in_order_and_workers_see_only_their_gpu(monkeypatch):
    """Four GPUs, all visible: slots cuda:0..3 in order; a worker for cuda:N sees only physical
    GPU N as its cuda:0, through the judge's own CUDA_VISIBLE_DEVICES where it has one; a CPU
    worker sees no GPU."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    four = lambda: 4  # noqa: E731
    with gpu_slot(four) as a, gpu_slot(four) as b, gpu_slot(four) as c, gpu_slot(four) as d:
        assert [a, b, c, d] == ["cuda:0", "cuda:1", "cuda:2", "cuda:3"]
    assert worker_placement("cuda:2") == ("cuda:0", {"CUDA_VISIBLE_DEVICES": "2"})
    assert worker_placement("cpu") == ("cpu", {"CUDA_VISIBLE_DEVICES": ""})
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "4,6")
    assert worker_placement("cuda:1") == ("cuda:0", {"CUDA_VISIBLE_DEVICES": "6"})
    with pytest.raises(ValueError):
        worker_placement("cuda:2")
    uuid = "GPU-5d2c6a1e-93b0-4f1c-a6e2-0c1b2d3e4f50"
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", f"{uuid},MIG-7a1b2c3d-0000-1111-2222-333344445555")
    assert worker_placement("cuda:0") == ("cuda:0", {"CUDA_VISIBLE_DEVICES": uuid})
    assert worker_placement("cuda:1")[1] == {"CUDA_VISIBLE_DEVICES": "MIG-7a1b2c3d-0000-1111-2222-333344445555"}


def test_the_results_cache_keys_on_the_gpu_model_not_its_index(monkeypatch):
    """A result from GPU 3 serves GPU 0 of the same model; never another model, nor the CPU."""
    import torch

    def path(device):
        return result_cache_path("0" * 64, Spec(), "full", device, None, None, None)

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    no_cuda = path("cuda")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA H200")
    h200 = path("cuda:0")
    assert path("cuda:3") == h200
    assert len({h200, path("cpu"), no_cuda}) == 3
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: "NVIDIA A100-SXM4-80GB")
    assert path("cuda:3") != h200


def test_an_evaluation_on_gpu_2_starts_workers_that_see_only_gpu_2_as_cuda_0(monkeypatch, tmp_path):
    """The judge's workers, not only the function: CUDA_VISIBLE_DEVICES in each worker's
    environment and cuda:0 in its request (a simulated 4-GPU machine; no worker really starts)."""
    import torch

    import benchmark.judge.conversation as conversation
    import benchmark.judge.evaluation as evaluation
    from benchmark import numerics

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "Simulated GPU")
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: (9, 0))
    started = []

    class Recorder:
        def __init__(self, workdir, *args, extra_env=None, **kwargs):
            started.append(extra_env)

        def start(self, request):
            started.append(request.device)

    monkeypatch.setattr(conversation, "WorkerProcess", Recorder)
    candidate = tmp_path / "c.py"
    candidate.write_text("")
    run = evaluation.Evaluation(
        candidate=str(candidate), display_path="c.py", sha256="0",
        options=Options(device="cuda:2", memory_limit_mb=1, progress=False), run_dir=tmp_path,
        deadline=0.0, checks=[])
    run.setup()
    run.max_rows = 1
    run.start("train", "train")
    assert started == [{"CUDA_VISIBLE_DEVICES": "2", "CUBLAS_WORKSPACE_CONFIG": numerics.CUBLAS_WORKSPACE}, "cuda:0"]
