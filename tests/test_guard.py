"""The worker's guard, armed per role (benchmark/worker/guard.py): what each role imports before the
candidate, what it watches, and a scoring worker that compiles nothing whatever name the model
reaches torch.compile by. Each case runs in a fresh interpreter: the guard arms once per process,
and whether torch._dynamo is imported is the point."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO

PRELUDE = """
import sys, torch
from benchmark.worker import guard, serve
"""

CASES = {
    # a scoring worker of a model that does not name compile: no dynamo, no optimizer watched,
    # torch.manual_seed wrapped as dynamo's import would (which then leaves it alone)
    "score": """
compiles = guard.arm("score", b"def build_model(config): ...")
assert not compiles and "torch._dynamo" not in sys.modules
labels = [label for _, _, label, _ in guard._ORIGINAL]
assert "AdamW.step" not in labels and "torch.manual_seed" in labels, labels
serve.eager_once_imported()
compile_ = getattr(torch, "com" + "pile")  # the compiler under another name, inside a forward
model = compile_(torch.nn.Linear(3, 3))
model(torch.randn(2, 3))
import torch._dynamo
assert torch._dynamo.eval_frame._stance.stance == "force_eager"
assert torch._dynamo.utils.counters["stats"]["unique_graphs"] == 0, "it compiled"
opt = torch.optim.AdamW(model.parameters())  # a model's own optimizer: not the evaluator's
torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 1.0)
torch.manual_seed(0)
guard.verify("build")
print("ok")
""",
    # a scoring worker whose model names compile: dynamo first, as before
    "score_compile": """
assert guard.arm("score", b"model = torch.compile(model)") and "torch._dynamo" in sys.modules
guard.verify("build")
print("ok")
""",
    # the training worker: dynamo and the optimizers settled before the capture, all watched
    "train": """
assert guard.arm("train", b"") and "torch._dynamo" in sys.modules
labels = [label for _, _, label, _ in guard._ORIGINAL]
assert "AdamW.step" in labels and "LambdaLR.step" in labels
p = torch.nn.Parameter(torch.zeros(2))
p.grad = torch.zeros(2)
torch.optim.AdamW([p]).step()
guard.verify("train")
try:
    guard.arm("train", b"")
except RuntimeError:
    print("ok")
""",
    # a patch the guard sees in either role
    "tamper": """
guard.arm("score", b"")
torch.nn.Module.eval = lambda self: self
try:
    guard.verify("build")
except Exception as exc:
    assert "Module.eval" in str(exc), exc
    print("ok")
""",
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_guard_arms_per_role(case, tmp_path):
    script = tmp_path / "arm.py"
    script.write_text(PRELUDE + CASES[case])
    done = subprocess.run([sys.executable, str(script)], cwd=REPO, capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0 and done.stdout.strip().endswith("ok"), done.stderr[-3000:]
