"""Attacks a red-team session wrote against the judge (whole files in tests/adversarial/redteam/).

Each closed attack must fail for the named reason without harming the judge; the ones still open
are strict xfails, so the day one is closed the test says so.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.adversarial.cheats import REDTEAM, write
from tests.conftest import evaluate_tiny

FOLDER = Path(__file__).parent / "redteam"
# A table kept across a scoring process's batches shows at a probe's cut (a future leak) or, when
# its canary rows come first, as a model that changed while it was scored: either rejects it.
STATEFUL_CAUGHT_BY = ("probe:causality", "probe:canary")


def _path(name: str, tmp_path: Path) -> Path:
    """A whole red-team file from redteam/, or one written from its edit of the reference."""
    return FOLDER / f"{name}.py" if name not in REDTEAM else write(name, tmp_path)


def _run(name: str, tmp_path: Path = None, **kwargs) -> dict:
    return evaluate_tiny(_path(name, tmp_path), **kwargs)


@pytest.mark.evaluation
def test_two_fp32_values_per_float64_do_not_hide_parameters():
    result = _run("pack64_hidden_params")
    assert not result["valid"] and result["error_type"] == "param_budget", result.get("error")


@pytest.mark.evaluation
def test_a_flood_on_the_channel_is_a_protocol_error_not_a_judge_out_of_memory():
    result = _run("channel_flood")
    assert not result["valid"] and result["error_type"] == "protocol_error", result.get("error")
    assert result["peak_rss_mb"] < 3000


def test_a_daemon_that_left_the_session_does_not_hang_the_judge():
    start = time.monotonic()
    result = _run("daemon_hang")
    assert time.monotonic() - start < 240, "the judge waited for the worker's daemon"
    assert "error" in result or result["valid"]  # a result came back


@pytest.mark.evaluation
def test_a_first_seen_prefix_table_is_caught():
    """A table of the first continuation seen per prefix, kept across the validation batches of one
    process, leaks the next token while copies in the same process agree with it; scored in the
    other process, a probe copy has no such history and its cut position shows the leak (or, first,
    the canary rows show the table growing while it is scored)."""
    result = _run("firstseen_prefix_leak")
    assert not result["valid"] and result["error_type"] == "probe", result.get("error")
    assert result["error"].startswith(STATEFUL_CAUGHT_BY), result["error"]


@pytest.mark.evaluation
def test_a_table_shared_between_scoring_processes_through_sysv_memory_is_caught(tmp_path):
    """The same table in System V shared memory (outside Landlock's reach) would let the second
    scoring process see what the first one saw; each worker's own IPC namespace keeps it apart."""
    from benchmark.judge.launch import isolation

    if not isolation()[0]:
        pytest.skip(f"this machine gives workers {isolation()[1]}")
    result = _run("firstseen_shm_leak", tmp_path)
    assert not result["valid"] and result["error_type"] == "probe", result.get("error")
    assert result["error"].startswith(STATEFUL_CAUGHT_BY), result["error"]


@pytest.mark.evaluation
def test_a_leak_only_in_the_odd_sized_last_batch_finds_no_odd_batch(tmp_path):
    """The last validation batch was the only one of its size and its windows were never copied
    into probes: a leak keyed on the batch size scored 6.6x the honest score. Now it is filled to
    the batch size with probe rows, and probes copy any window."""
    result = _run("partial_batch_leak", tmp_path, overrides={"val_tokens": 5000})
    assert result["valid"], result.get("error")
    assert result["combined_score"] < 5e-5, "the leak found a batch to leak in"


@pytest.mark.evaluation
def test_extra_training_passes_after_the_first_step_are_counted(tmp_path):
    """An optimizer running 8 extra passes on every step but the first passed a count of step 0
    (+23% score); the counted step is now a secret one after the first."""
    result = _run("extra_passes_after_step0", tmp_path)
    assert not result["valid"] and result["error_type"] == "flops_budget", result.get("error")


@pytest.mark.evaluation
def test_a_folder_nested_thousands_deep_is_removed_without_crashing_the_judge(tmp_path, monkeypatch):
    """shutil.rmtree raised RecursionError on a 3000-deep chain of folders in the worker's own
    folder: an evaluator_error, then an exception out of evaluate_file and no result."""
    import benchmark.judge.runner as runner

    run_root = tmp_path / "runs"
    run_root.mkdir()
    monkeypatch.setattr(runner, "run_root", lambda needed: (str(run_root), "a test's folder"))
    result = _run("deep_dir_rmtree_crash", tmp_path)
    assert result.get("error_type") != "evaluator_error", result.get("error")
    assert not any(run_root.iterdir()), "the run folder was left behind"


@pytest.mark.evaluation
def test_files_written_into_the_ram_backed_worker_folder_count_against_the_memory_cap(tmp_path):
    """Each worker wrote 2 GiB into its folder in /dev/shm (RAM), invisible to resident memory."""
    result = _run("tmpfs_memory_bypass", tmp_path, memory_limit_mb=3000)
    assert not result["valid"] and result["error_type"] == "memory_limit", result.get("error")


@pytest.mark.evaluation
def test_training_after_the_last_step_cannot_reach_the_scored_state(tmp_path):
    """The state is taken the moment training ends; the model's later training (inside its next
    forward, the replay's) shows in the replay against the fresh process, or, where it costs more
    than that forward's allowance, in the training worker's CPU after the hand-over."""
    result = _run("train_after_last_step", tmp_path)
    assert not result["valid"], result.get("error")
    failed = [c["name"] for c in result["checks"] if not c["passed"]]
    assert {"probe:replay", "cpu_budget:after_hand_over"} & set(failed), (failed, result.get("error"))


@pytest.mark.evaluation
def test_training_inside_state_dict_is_stopped_by_the_save_limit(tmp_path):
    """The same training done as the state is handed over: saving has a time limit (2 s here, for
    30 extra steps; an honest save takes well under one)."""
    result = _run("train_in_state_dict", tmp_path, overrides={"save_limit_s": 2.0})
    assert not result["valid"] and result["error_type"] == "save_time", (result.get("error_type"), result.get("error"))


@pytest.mark.evaluation
def test_the_trial_restores_the_model_whatever_its_state_dict_returns(tmp_path):
    """The trial's first step trained 50 extra passes on batch 0 and a state_dict(keep_vars=True)
    handing out copies kept them (3.8x the reference's score): the restore now reads the modules'
    own tensors, and the run is the reference's (up to its own AdamW, unfused: 5e-9 nats). Both in
    fp32: in bf16 (where the CPU has it natively) the unfused AdamW differs by 1.3e-5 nats."""
    from tests.adversarial.cheats import REFERENCE

    reference = evaluate_tiny(REFERENCE, precision="fp32")
    result = _run("trial_restore_bypass", tmp_path, precision="fp32")
    assert result["valid"], result.get("error")
    assert abs(result["val_loss"] - reference["val_loss"]) < 1e-6, (result["val_loss"], reference["val_loss"])
