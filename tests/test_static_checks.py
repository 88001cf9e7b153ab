"""The AST checks reject what could reach outside the model, naming the line; the reference passes."""

from __future__ import annotations

import pytest

from benchmark.static_checks import check_source
from tests.conftest import REPO


def test_reference_candidate_passes():
    assert check_source((REPO / "initial_program.py").read_text()) == []


@pytest.mark.parametrize("code, needle", [
    ("import os", "import of 'os'"),
    ("import numpy as np", "import of 'numpy'"),
    ("from subprocess import run", "import from 'subprocess'"),
    ("from torch import load", "importing 'load'"),
    ("from . import sibling", "import from None"),
    ("x = open('wiki.valid.tokens')", "'open'"),
    ("exec('1')", "'exec'"),
    ("y = eval('1')", "'eval'"),
    ("__import__('os')", "'__import__'"),
    ("g = globals()", "'globals'"),
    ("f = getattr(torch, 'load')", "'getattr'"),
    ("import torch\nF = torch.nn.functional\nimport torch.nn.functional as G\nG.cross_entropy = None",
     "monkey-patching"),
    ("import torch\ntorch.Tensor.backward = None", "monkey-patching"),
    ("import torch\ntorch.manual_seed(0)", "'manual_seed'"),
    ("import torch\ntorch.random.set_rng_state(None)", "'set_rng_state'"),
    ("import torch\nm = torch.load('x')", "'load'"),
    ("import torch\ntorch.hub.list('x')", "'hub'"),
    ("import torch\nt = torch.from_file('x')", "'from_file'"),
    ("import torch\nk = torch.nn.Module.__subclasses__()", "'__subclasses__'"),
    ("def f():\n    global state\n    state = 1", "global statements"),
])
def test_forbidden_construct_is_reported_with_its_line(code, needle):
    found = check_source("import math\n" + code)
    assert found, f"{code!r} passed"
    assert any(needle in v.message for v in found), [str(v) for v in found]
    assert all(v.line >= 2 for v in found if needle in v.message)


def test_syntax_error_reports_line():
    (violation,) = check_source("x = 1\ndef broken(:\n")
    assert violation.line == 2 and "syntax error" in violation.message
