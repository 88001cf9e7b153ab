"""The AST checks are a courtesy: clear mistakes get their line and a fix; everyday code passes."""

from __future__ import annotations

import pytest

from benchmark.judge.static_checks import check_source
from tests.conftest import REPO


def test_reference_candidate_passes():
    assert check_source((REPO / "initial_program.py").read_text()) == []


@pytest.mark.parametrize("code, needle", [
    ("import os", "import of 'os'"),
    ("import numpy as np", "import of 'numpy'"),
    ("from subprocess import run", "import from 'subprocess'"),
    ("from torch import load", "importing 'load'"),
    ("from . import sibling", "import from None"),
    ("x = open('wiki.valid.tokens')", "open()"),
    ("exec('1')", "exec()"),
    ("y = eval('1')", "eval()"),
    ("__import__('os')", "__import__()"),
    ("g = globals()", "globals()"),
    ("f = getattr(torch.load, '__globals__')", "'__globals__'"),
    ("import torch\nF = torch.nn.functional\nimport torch.nn.functional as G\nG.cross_entropy = None",
     "monkey-patching"),
    ("import torch\ntorch.Tensor.backward = None", "monkey-patching"),
    ("import torch\ntorch.manual_seed(0)", "remove the seeding"),
    ("import torch\ntorch.random.set_rng_state(None)", "owns the RNG"),
    ("import torch\nm = torch.load('x')", "load no files"),
    ("import torch\ntorch.hub.list('x')", "download nothing"),
    ("import torch\nt = torch.from_file('x')", "read no files"),
    ("import torch\nk = torch.nn.Module.__subclasses__()", "'__subclasses__'"),
])
def test_clear_mistake_is_reported_with_its_line_and_a_fix(code, needle):
    found = check_source("import math\n" + code)
    assert found, f"{code!r} passed"
    assert any(needle in v.message for v in found), [str(v) for v in found]
    assert all(v.line >= 2 for v in found if needle in v.message)


@pytest.mark.parametrize("code", [
    "import torch\nclass M(torch.nn.Module):\n    def forward(self, input):\n        return input",
    "import torch\nx = getattr(torch.nn, 'GELU', None)\nok = hasattr(torch.nn, 'RMSNorm')",
    "import torch\ndef f(self, name):\n    return getattr(self, name)",
    "from dataclasses import dataclass\n@dataclass\nclass C:\n    a: int = 1\nd = vars(C())",
    "class M:\n    def __repr__(self):\n        return type(self).__name__ + self.__class__.__name__",
    "import torch\nt = torch.zeros(4)\nt[torch.tensor(1)] = 2.0\nt[..., torch.arange(2)] = 0",
    "_CACHE = {}\ndef cached(n):\n    global _CACHE\n    _CACHE[n] = n\n    return _CACHE[n]",
    "class Opt:\n    def load(self):\n        return self.seed\n    seed = 3",
    "import torch\nself_state = {}\nself_state['x'] = torch.ones(1)",
])
def test_everyday_llm_code_passes(code):
    assert check_source(code) == []


def test_syntax_error_reports_line():
    (violation,) = check_source("x = 1\ndef broken(:\n")
    assert violation.line == 2 and "syntax error" in violation.message
