"""Shared fixtures: the local data in ../shared/data (or $PLASA_DATA_DIR), a private token cache,
and a helper that runs the evaluator CLI the way a user does.

Tiers (docs/development.md): a test that starts a worker or a whole evaluation is marked
`evaluation`; `make test-fast` runs the others with PLASA_TEST_TIER=fast, where starting a worker
or the evaluator fails the test with the marker to add (so a tier cannot silently grow slow).
Collection puts `slow`, then `evaluation` tests first, so a parallel run ends evenly."""

from __future__ import annotations

import fcntl
import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.fsutil import REPO_ROOT as REPO  # noqa: E402  (one definition of the repository root)
SHARED_DATA = REPO.parent / "shared" / "data"
DATA_DIR = Path(os.environ.get("PLASA_DATA_DIR", SHARED_DATA))
TOKENIZER_DIR = Path(os.environ.get("PLASA_TOKENIZER_DIR", SHARED_DATA))
# The tiny budget of CLI tests: a few steps and one validation batch.
TINY = ["--steps", "3", "--val-tokens", "4096", "--quiet"]
# The same budget for in-process evaluations (evaluate_file): two validation batches of 16, so
# validation is split between two scoring processes as in an official run, and one or two hidden
# probe batches per process. The probes are scaled down as the budget is: a quarter of the hidden
# causality rows, one repeat row, and 2 windows (not 8) in the training worker's direct probes
# (each set is still causality in eval and train mode and batch independence, before and after
# training; 2 windows took a tiny evaluation of the reference from 18.4-19.3 s to 16 s).
TINY_OVERRIDES = {"steps": 3, "val_tokens": 4096, "val_batch_size": 16, "probe_causal_rows": 31,
                  "probe_repeat_rows": 1, "probe_windows": 2}
# The probes scaled down for runs through the command line (no flag sets them): run_cli passes them
# in PLASA_OVERRIDES unless a test sets that itself. One validation batch of 32, as TINY says.
TINY_PROBES = {k: TINY_OVERRIDES[k] for k in ("probe_causal_rows", "probe_repeat_rows", "probe_windows")}


# Commands only a test marked `evaluation` may start (a worker, the evaluator CLI, a search).
EVALUATION_COMMANDS = {"benchmark.worker", "evaluator.py", "evaluate.py", "experiment", "openevolve-run",
                       "shinka_run", "run.py"}


def pytest_collection_modifyitems(config, items):
    """Slowest first: `slow`, then `evaluation`, then the rest, each in file order."""
    def rank(item):
        return 0 if item.get_closest_marker("slow") else 1 if item.get_closest_marker("evaluation") else 2
    items.sort(key=rank)


@pytest.fixture(autouse=True)
def tier_guard(request, monkeypatch):
    """In the fast tier, a test that starts an evaluation without the marker fails, naming it."""
    if os.environ.get("PLASA_TEST_TIER") != "fast" or request.node.get_closest_marker("evaluation"):
        yield
        return
    real = subprocess.Popen.__init__

    def guarded(self, args, *a, **kw):
        words = [str(w) for w in (args if isinstance(args, (list, tuple)) else [args])]
        if any(os.path.basename(w) in EVALUATION_COMMANDS for w in words):
            raise RuntimeError(f"{request.node.nodeid} starts {' '.join(words)[:200]}: mark it "
                               "@pytest.mark.evaluation (the fast tier runs no worker or evaluation)")
        real(self, args, *a, **kw)

    monkeypatch.setattr(subprocess.Popen, "__init__", guarded)
    yield


def evaluate_tiny(path, overrides=None, **kwargs) -> dict:
    """The judge's evaluate_file on `path` under the tiny budget, uncached, quiet."""
    from benchmark.judge.runner import evaluate_file

    return evaluate_file(str(path), overrides=dict(TINY_OVERRIDES, **(overrides or {})), progress=False,
                         use_cache=False, **kwargs)


@pytest.fixture(scope="session", autouse=True)
def data_env(tmp_path_factory):
    """Every test (and every evaluator subprocess) reads the local data and a session cache."""
    if not (DATA_DIR / "wikitext-2-tokenized").is_dir() and not (DATA_DIR / "wiki.train.tokens").is_file():
        pytest.exit(f"no WikiText-2 under {DATA_DIR}; set PLASA_DATA_DIR", returncode=2)
    saved = {k: os.environ.get(k) for k in ("PLASA_DATA_DIR", "PLASA_TOKENIZER_DIR", "PLASA_CACHE_DIR")}
    os.environ["PLASA_DATA_DIR"] = str(DATA_DIR)
    os.environ["PLASA_TOKENIZER_DIR"] = str(TOKENIZER_DIR)
    os.environ["PLASA_CACHE_DIR"] = os.environ.get("PLASA_TEST_CACHE_DIR") or str(
        tmp_path_factory.mktemp("cache"))
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # `pytest -n 2` on 2 cores: one thread per evaluation, or OpenMP threads spin against
        # each other (a step ran 40x slower with two 2-thread evaluations on 2 cores)
        import torch

        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


def tiny_probe_env() -> dict:
    """The environment of an evaluator command a test starts: TINY_PROBES in PLASA_OVERRIDES, unless
    the test set PLASA_OVERRIDES itself."""
    env = dict(os.environ)
    env.setdefault("PLASA_OVERRIDES", json.dumps(TINY_PROBES))
    return env


def run_cli(*args: str, timeout: float = 300) -> tuple:
    """Runs `python evaluator.py ARGS` (tiny_probe_env); returns (exit code, parsed stdout JSON,
    stderr)."""
    proc = subprocess.run([sys.executable, str(REPO / "evaluator.py"), *args], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO, env=tiny_probe_env())
    try:
        result = json.loads(proc.stdout)
    except ValueError:
        raise AssertionError(f"stdout is not one JSON object:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    return proc.returncode, result, proc.stderr


def load_reference():
    spec = importlib.util.spec_from_file_location("reference_candidate", REPO / "initial_program.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="session")
def reference():
    return load_reference()


def once_per_run(tmp_path_factory, name: str, compute):
    """compute()'s JSON value, computed once per test run: the first test to ask computes it,
    under a lock that `pytest -n` workers share; the rest read it."""
    root = tmp_path_factory.getbasetemp()
    root = root.parent if os.environ.get("PYTEST_XDIST_WORKER") else root
    path = root / f"{name}.json"
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not path.is_file():
            path.write_text(json.dumps(compute()))
        return json.loads(path.read_text())


@pytest.fixture(scope="session")
def reference_tiny(tmp_path_factory):
    """The reference through evaluate_tiny, evaluated once per test run."""
    def compute():
        result = evaluate_tiny(REPO / "initial_program.py")
        assert result["valid"], result.get("error")
        return result
    return once_per_run(tmp_path_factory, "reference_tiny", compute)


@pytest.fixture(scope="session")
def honest_tiny_result(tmp_path_factory):
    """The reference candidate under the tiny CLI budget (shared by several comparisons), run once
    per test run."""
    def compute():
        code, result, err = run_cli(str(REPO / "initial_program.py"), *TINY)
        assert code == 0, err[-3000:]
        return result
    return once_per_run(tmp_path_factory, "honest_tiny_result", compute)
