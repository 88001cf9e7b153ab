"""Run folders go to /dev/shm only where it can hold a run: a container's 64 MiB /dev/shm (or a
noexec one) sends them to the temp dir, and the result says why."""

from __future__ import annotations

import pytest

import tempfile

import benchmark.judge.runner as runner
from benchmark.spec import SPEC
from tests.conftest import evaluate_tiny


def test_a_run_needs_more_than_a_containers_default_shm():
    assert runner.run_bytes(SPEC) > 800 * 2**20  # the 32 x 128 x 49,152 fp32 logits alone


def test_a_64_mib_shm_sends_the_run_folder_to_the_temp_dir_and_says_why(monkeypatch):
    monkeypatch.setattr(runner, "_shm_state", lambda path: (64 * 2**20, False))
    root, why = runner.run_root(runner.run_bytes(SPEC))
    assert root is None and tempfile.gettempdir() in why and "64 MiB free" in why and "--shm-size" in why


def test_a_noexec_shm_sends_it_there_too(monkeypatch):
    monkeypatch.setattr(runner, "_shm_state", lambda path: (1 << 40, True))
    root, why = runner.run_root(runner.run_bytes(SPEC))
    assert root is None and "noexec" in why


def test_a_roomy_shm_holds_it(monkeypatch):
    monkeypatch.setattr(runner, "_shm_state", lambda path: (1 << 40, False))
    monkeypatch.setattr(runner.os.path, "isdir", lambda path: True)
    monkeypatch.setattr(runner.os, "access", lambda path, mode: True)
    assert runner.run_root(runner.run_bytes(SPEC))[0] == runner.SHM


@pytest.mark.evaluation
def test_an_evaluation_with_a_small_shm_runs_from_the_temp_dir(tmp_path, monkeypatch):
    """The whole run, workers and logits included, from the temp dir; the result says where."""
    monkeypatch.setattr(runner, "_shm_state", lambda path: (64 * 2**20, False))
    monkeypatch.setattr(runner.tempfile, "tempdir", str(tmp_path))
    result = evaluate_tiny(runner.REPO_ROOT / "initial_program.py", {"val_tokens": 2048, "val_batch_size": 8})
    assert result["valid"], result.get("error")
    assert "64 MiB free" in result["environment"]["run_folder"] and str(tmp_path) in result["environment"]["run_folder"]
    assert not list(tmp_path.glob("plasa-run-*")), "the run folder was left behind"
