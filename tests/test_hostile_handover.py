"""Red-team hand-overs (issue 29, item 6): a forged channel message, a sparse terabyte and a link at
the state file's path, a flood on stdout. Each fails for its real cause, never as evaluator_error,
and the command line prints a result every time, cached or not."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from benchmark.spec import SPEC
from tests.adversarial.cheats import write
from tests.conftest import REPO, TINY, TINY_OVERRIDES, evaluate_tiny, run_cli

pytestmark = pytest.mark.evaluation


def test_a_forged_built_message_nested_700_deep_is_a_protocol_error_printed_every_time(tmp_path):
    """It crashed the command line with RecursionError while cleaning the result, after the
    runner had cached it, so every resend crashed again."""
    from benchmark.judge.runner import evaluator_hash

    path = write("forged_deep_built", tmp_path)
    sources, cached = evaluator_hash.__wrapped__(), []
    for attempt in ("fresh", "again"):
        code, result, _ = run_cli(str(path), *TINY)
        assert code == 1 and result["error_type"] == "protocol_error", (attempt, result.get("error"))
        assert "deeper than" in result["error"], result["error"]
        cached.append(bool(result.get("cached")))
    if sources == evaluator_hash.__wrapped__():  # (sources edited meanwhile cache apart)
        assert cached == [False, True], cached


def test_a_state_file_truncated_to_a_sparse_terabyte_is_a_state_error(tmp_path):
    """The judge read it whole: MemoryError, reported as evaluator_error and re-run every time."""
    result = evaluate_tiny(write("state_sparse_terabyte", tmp_path))
    assert not result["valid"] and result["error_type"] == "state_error", (result.get("error_type"), result.get("error"))
    assert "1,099,511,627,776 bytes" in result["error"], result["error"]


def test_a_link_at_the_state_files_path_is_not_followed(tmp_path):
    result = evaluate_tiny(write("state_symlink", tmp_path))
    assert not result["valid"] and result["error_type"] == "state_error", (result.get("error_type"), result.get("error"))
    assert "symbolic link" in result["error"], result["error"]


class _Sink:
    """An echo that only counts what it is given."""

    def __init__(self) -> None:
        self.chars = 0

    def write(self, text: str) -> None:
        self.chars += len(text)

    def flush(self) -> None:
        pass


def test_a_flood_on_stdout_is_forwarded_up_to_the_limit_then_counted_and_dropped(tmp_path):
    """64 MiB from each worker was all forwarded to the judge's stderr (3.2 GB at 1 GiB each)."""
    from benchmark.judge.runner import evaluate_file

    sink, limit, flood = _Sink(), SPEC.output_limit_bytes, 64 << 20
    result = evaluate_file(str(write("stdout_flood", tmp_path)), overrides=TINY_OVERRIDES, progress=True,
                           echo=sink, use_cache=False)
    assert result["valid"], result.get("error")  # writing a lot is no cheat, only not forwarded
    output = result["worker_output"]
    workers = 3  # training, and the two scoring processes of a tiny run
    assert output["bytes"] >= workers * flood
    assert output["forwarded_bytes"] <= workers * limit
    assert output["dropped_bytes"] >= workers * (flood - limit)
    assert sink.chars <= workers * (limit + 300)


def test_cutting_the_shared_logits_file_does_not_kill_the_judge(tmp_path):
    """A worker that cut its logits file while the judge read it through its mapping killed the
    judge with SIGBUS: the memory is now sealed against shrinking and handed over as a descriptor."""
    code = ("import json, sys; from tests.conftest import evaluate_tiny; "
            "r = evaluate_tiny(sys.argv[1]); print(json.dumps({'error_type': r.get('error_type')}))")
    done = subprocess.run([sys.executable, "-c", code, str(write("logits_cut", tmp_path))], cwd=REPO,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, f"the judge died with code {done.returncode}: {done.stderr[-1500:]}"
    json.loads(done.stdout.strip().splitlines()[-1])
