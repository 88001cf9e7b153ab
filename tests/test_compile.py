"""torch.compile inside the sandbox: caches and temp files in the worker's own folder, and a
compiler failure reported as the candidate's error. (The compiled honest candidates themselves,
whole model and submodule, are in tests/honest/candidates/compile_*.py.)"""

from __future__ import annotations

import pytest

import os
import subprocess
import sys

from benchmark.judge.launch import SCRATCH, worker_env
from tests.adversarial.cheats import FORWARD_END, REFERENCE
from tests.conftest import evaluate_tiny


def test_every_compiler_cache_and_temp_folder_is_inside_the_workers_own_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("TMPDIR", "/tmp")
    monkeypatch.setenv("PLASA_DATA_DIR", "/somewhere/data")
    env = worker_env(tmp_path / "train", threads=1, extra={"CUDA_VISIBLE_DEVICES": ""})
    for key in ("TMPDIR", "TORCHINDUCTOR_CACHE_DIR", "TRITON_CACHE_DIR", "CUDA_CACHE_PATH", "XDG_CACHE_HOME", "HOME"):
        assert key in SCRATCH and os.path.commonpath([env[key], str(tmp_path / "train")]) == str(tmp_path / "train")
        assert os.path.isdir(env[key])
    assert "PLASA_DATA_DIR" not in env and env["OMP_NUM_THREADS"] == "1" and env["CUDA_VISIBLE_DEVICES"] == ""


def test_inductor_writes_where_the_worker_env_says(tmp_path):
    """The variables are the ones torch reads: inductor's cache and Python's temp dir follow them."""
    env = worker_env(tmp_path / "w")
    code = ("import tempfile; from torch._inductor.runtime.cache_dir_utils import cache_dir; "
            "print(cache_dir()); print(tempfile.gettempdir())")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    inductor, temp = out.stdout.split()
    assert inductor.startswith(str(tmp_path / "w")) and temp.startswith(str(tmp_path / "w"))


@pytest.mark.evaluation
def test_a_compiler_failure_is_the_candidates_runtime_error_with_a_clear_message(tmp_path):
    """fullgraph=True over a data-dependent loop: dynamo raises before the candidate's frame runs,
    so no frame of the candidate file is in the traceback (it read as the evaluator's error)."""
    text = REFERENCE.read_text()
    assert FORWARD_END in text
    text = text.replace(FORWARD_END, "        for _ in range(int(x.abs().sum().item()) % 2):\n"
                                     "            x = x + 0\n" + FORWARD_END)
    text += "\n\n_build = build_model\n\n\ndef build_model(config):\n    return torch.compile(_build(config), fullgraph=True)\n"
    path = tmp_path / "fullgraph_break.py"
    path.write_text(text)
    result = evaluate_tiny(path)
    assert not result["valid"] and result["error_type"] == "runtime_error", (result.get("error_type"), result.get("error"))
    assert result["error"].startswith("torch.compile failed") and "uncompiled" in result["error"]


@pytest.mark.evaluation
def test_the_worker_beats_while_torch_compile_builds_and_is_silent_otherwise():
    """A compile can be silent for longer than the judge's heartbeat limit: the worker says it is
    compiling while dynamo compiles (forward and lazy backward), and nothing when it is not."""
    import time

    import torch

    from benchmark.worker.serve import CompileBeat

    sent = []
    beat = CompileBeat(sent.append, 0.05)
    compiled = torch.compile(lambda x: (x.sin() * 2).sum())  # imports torch._dynamo
    beat.watch()
    assert beat.watching
    x = torch.randn(64, requires_grad=True)
    time.sleep(0.3)
    assert sent == []                       # watching, nothing compiling
    compiled(x).backward()                  # the first call compiles forward and backward
    assert len(sent) >= 1 and {m.type for m in sent} == {"compiling"}
    after = len(sent)
    compiled(x).backward()                  # compiled already: runs, no compile
    time.sleep(0.3)
    assert len(sent) == after and beat.depth == 0


@pytest.mark.evaluation
def test_a_compile_longer_than_the_heartbeat_is_no_hang(tmp_path):
    """A compiled model with a heartbeat limit (15 s) under what inductor's first builds can take
    on a busy CPU: the judge waits through the worker's compile beats (one a second here). The
    whole model compiles in the training worker's trial (compiled submodules first called under the
    FLOP counter never compile there, and since the hand-over runs eagerly no scoring worker
    compiles)."""
    from tests.honest.test_honest import CANDIDATES

    path = next(p for p in CANDIDATES if p.stem == "compile_whole_model")
    result = evaluate_tiny(path, {"heartbeat_s": 15.0, "compile_beat_s": 1.0})
    assert result["valid"], (result.get("error_type"), result.get("error"))
    assert result["compile_beats"] >= 1


def test_the_judge_waits_through_compile_beats_and_counts_them(tmp_path):
    from benchmark.judge.evaluation import Evaluation
    from benchmark.judge.options import Options
    from benchmark.protocol import Message

    class Worker:
        messages = [Message("compiling"), Message("compiling"), Message("out", id=3)]

        def recv(self, heartbeat_s):
            return self.messages.pop(0)

    run = Evaluation(candidate=str(tmp_path / "c.py"), display_path="c.py", sha256="0",
                     options=Options(precision="fp32", memory_limit_mb=1, progress=False, threads=1),
                     run_dir=tmp_path, deadline=0.0, checks=[])
    assert run.expect(Worker(), "out").id == 3
    assert run.result["compile_beats"] == 2
