"""torch's backend flags (TF32, cuDNN), the most common lines of GPU-minded PyTorch code, are
configuration, not monkey-patching: the static check accepts them, and every one it accepts is set
again by the workers' numerics after the candidate's import and build, so none reaches training or
scoring. Real monkey-patching of torch is still reported."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from benchmark.judge.static_checks import check_source
from tests.conftest import REPO


@pytest.mark.parametrize("code", [
    "import torch\ntorch.backends.cuda.matmul.allow_tf32 = True\ntorch.backends.cudnn.allow_tf32 = True",
    "import torch\ntorch.backends.cudnn.benchmark = True\ntorch.backends.cudnn.deterministic = False\n"
    "torch.backends.cudnn.enabled = True",
    "import torch\ntorch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True",
    "import torch\ntorch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction = False\n"
    "torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction = False",
    "import torch\ntorch.backends.fp32_precision = 'tf32'\ntorch.backends.cuda.matmul.fp32_precision = 'tf32'\n"
    "torch.backends.cudnn.conv.fp32_precision = 'tf32'",
    "import torch\ntorch.set_float32_matmul_precision('high')",
    "import torch.backends.cudnn as cudnn\ncudnn.benchmark = True",
    "from torch.backends import cudnn, cuda\ncudnn.benchmark = True\ncuda.matmul.allow_tf32 = True",
    "import torch\ndef build_model(config):\n    torch.backends.cudnn.benchmark: bool = True\n"
    "    torch.backends.cuda.matmul.allow_tf32 = True\n    return None",
], ids=["tf32", "cudnn", "chained", "reduced_precision", "fp32_precision", "set_precision_call",
        "import_as", "from_import", "inside_build_model"])
def test_backend_flag_assignments_pass(code):
    assert check_source(code) == []


@pytest.mark.parametrize("code", [
    "import torch\ntorch.backends.cudnn.is_available = lambda: True",
    "import torch\ntorch.backends.cuda.matmul = None",
    "import torch\ntorch.allow_tf32 = True",
    "import torch\ntorch.nn.functional.dropout = lambda x, *a, **k: x",
    "import torch\ndel torch.backends.cudnn.benchmark",
    "import torch\ntorch.backends.cudnn.benchmark += 1",
    "import torch\ntorch.backends.cudnn.benchmark.real = 1",
    "from torch.nn import functional as backends\nbackends.cudnn.benchmark = True",
    "import torch.nn.functional as torch\ntorch.backends.cudnn.benchmark = True",
    "import torch\ntorch.backends.__dict__['cudnn'] = None",
], ids=["function", "submodule", "not_a_backend", "functional", "delete", "augmented", "below_flag",
        "renamed_module", "shadowed_torch", "subscript"])
def test_monkey_patching_torch_is_still_reported(code):
    found = check_source(code)
    assert any("monkey-patching" in v.message for v in found), [str(v) for v in found]


# In a fresh process: set every accepted flag away from the policy, apply the policy, and read
# every flag back; the same as applying the policy to untouched flags.
_PROBE = r"""
import json, sys, torch
from benchmark import numerics
from benchmark.judge.static_checks import BACKEND_FLAGS

def node(path):
    owner = torch
    for part in path.split(".")[1:-1]:
        owner = getattr(owner, part)
    return owner, path.rsplit(".", 1)[1]

def read():
    out = {}
    for path in sorted(BACKEND_FLAGS):
        owner, name = node(path)
        out[path] = getattr(owner, name) if hasattr(owner, name) else "absent"
    out["matmul_precision"] = torch.get_float32_matmul_precision()
    return out

device = sys.argv[1]
numerics.apply(device)
clean = read()
for path in sorted(BACKEND_FLAGS):
    owner, name = node(path)
    if hasattr(owner, name):
        value = getattr(owner, name)
        setattr(owner, name, "tf32" if isinstance(value, str) else not value)
torch.set_float32_matmul_precision("medium")
numerics.apply(device)
print(json.dumps([clean, read()]))
"""


@pytest.mark.parametrize("device", ["cpu", "cuda:0"])
def test_every_accepted_flag_is_set_again_by_the_workers_numerics(device):
    out = subprocess.run([sys.executable, "-c", _PROBE, device], capture_output=True, text=True,
                         timeout=120, cwd=REPO)
    assert out.returncode == 0, out.stderr[-3000:]
    clean, after = json.loads(out.stdout.strip().splitlines()[-1])
    changed = {k: (clean[k], after[k]) for k in clean if clean[k] != after[k]}
    assert not changed, f"the candidate's setting carried over (policy, after): {changed}"
    assert clean["torch.backends.cuda.matmul.allow_tf32"] is False
    assert clean["torch.backends.cudnn.allow_tf32"] is False and clean["matmul_precision"] == "highest"
