"""How an evaluation runs on its machine: bf16 only where supported and, on a CPU under "auto",
measured faster; the workers' threads the fewest near the fastest; measured once per machine (on a
quiet one: tests/test_tuning_load.py). Here the machine reads quiet: tests stand in for the load
probe and the matmul peak."""

from __future__ import annotations

import pytest
import torch

from benchmark.judge import load, tuning


@pytest.fixture(autouse=True)
def quiet(monkeypatch):
    """No other process uses a core (this test machine is shared: its real load is not ours to read)."""
    monkeypatch.setattr(load, "other_cpu_s", lambda: 0.0)
    monkeypatch.setattr(tuning, "matmul_peak", lambda: {"flops_per_cpu_s": 1e11, "under_load": False,
                                                        "source": "cache"})


@pytest.fixture
def cache(monkeypatch, tmp_path):
    monkeypatch.setenv("PLASA_CACHE_DIR", str(tmp_path))
    return tmp_path


@pytest.fixture
def threads():
    """Restores torch's thread count after a test that sets it."""
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def fake(fp32_by_threads: dict, bf16_s: float, calls: list):
    """Step times (repeats alike) that depend on the precision and on torch's current thread count."""
    def measure(precision):
        n = torch.get_num_threads()
        calls.append((precision, n))
        return [fp32_by_threads[n] if precision == "fp32" else bf16_s] * tuning.STEPS
    return measure


def test_thread_counts_double_up_to_the_cap():
    assert tuning.thread_counts(1) == [1]
    assert tuning.thread_counts(2) == [1, 2]
    assert tuning.thread_counts(6) == [1, 2, 4, 6]
    assert tuning.thread_counts(8) == [1, 2, 4, 8]


def test_the_fewest_threads_within_tolerance_of_the_fastest(threads):
    torch.set_num_threads(8)
    calls = []
    profile = tuning.measure_machine(fake({1: 0.40, 2: 0.21, 4: 0.20, 8: 0.30}, 0.1, calls), bf16=False)
    assert profile["threads"] == 2 and profile["precision"] == "fp32"
    assert profile["step_ms_by_threads"] == {"1": 400.0, "2": 210.0, "4": 200.0, "8": 300.0}
    assert torch.get_num_threads() == 8   # the judge's own count is left as it was


@pytest.mark.parametrize("bf16_s, chose", [(0.10, "bf16"), (0.194, "fp32"), (0.60, "fp32")])
def test_bf16_only_where_it_measures_faster_at_the_chosen_threads(threads, bf16_s, chose):
    torch.set_num_threads(2)
    calls = []
    profile = tuning.measure_machine(fake({1: 0.5, 2: 0.2}, bf16_s, calls), bf16=True)
    assert profile["precision"] == chose and profile["threads"] == 2
    assert profile["speedup"] == pytest.approx(0.2 / bf16_s, abs=1e-3)
    assert ("bf16", 2) in calls


def test_one_thread_is_not_measured(threads):
    torch.set_num_threads(1)
    profile = tuning.measure_machine(lambda p: pytest.fail("nothing to choose"), bf16=False)
    assert profile["threads"] == 1 and profile["precision"] == "fp32"


def test_the_profile_is_measured_once_per_machine(cache, threads):
    torch.set_num_threads(2)
    calls = []
    first = tuning.machine_profile(False, fake({1: 0.5, 2: 0.2}, 0.1, calls))
    again = tuning.machine_profile(False, fake({1: 0.1, 2: 0.9}, 0.1, calls))   # from the cache
    assert (first["source"], again["source"]) == ("measured", "cache") and first["profile"] == again["profile"]
    assert {k: v for k, v in first.items() if k != "source"} == {k: v for k, v in again.items() if k != "source"}
    assert first["threads"] == 2 and len(calls) == 2
    assert len(list((cache / "tuning").glob("*.json"))) == 1


def test_resolve(monkeypatch, cache, threads):
    torch.set_num_threads(2)
    calls = []
    monkeypatch.setattr(tuning, "reference_step_times", fake({1: 0.5, 2: 0.2}, 0.1, calls))
    monkeypatch.setattr(tuning, "bf16_supported", lambda device: False)
    assert tuning.resolve("cpu", "fp32", 3)[:2] == ("fp32", 3) and not calls     # all fixed: no measuring
    assert tuning.resolve("cpu", "bf16", 3)[:2] == ("fp32", 3) and not calls     # bf16 unsupported
    used, n, why = tuning.resolve("cpu", None, None)                             # None: "auto"
    assert (used, n) == ("fp32", 2) and why["requested_precision"] == "auto"
    assert why["bf16_supported"] is False and why["step_ms_by_threads"] == {"1": 500.0, "2": 200.0}
    monkeypatch.setattr(tuning, "bf16_supported", lambda device: True)
    assert tuning.resolve("cpu", "bf16", None)[:2] == ("bf16", 2)                # asked for, supported
    assert tuning.resolve("cpu", "auto", None)[:2] == ("bf16", 2)                 # 2x faster measured
    measured = len(calls)
    used, n, _ = tuning.resolve("cuda", "auto", None)                            # a GPU: not measured,
    assert used == "bf16" and n >= 1 and len(calls) == measured                  # a share of the cores


def test_an_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="expected one of auto, bf16, fp32"):
        tuning.resolve("cpu", "fp16", None)


@pytest.mark.parametrize("p", ["fp32", "bf16"])
def test_the_reference_shaped_step_runs(p):
    """The real measurement, at a small size: forward, backward and an optimizer step."""
    seconds = tuning.reference_step_s(p, tokens=2 * 16, seq_len=16, hidden=64, vocab=500, layers=1, steps=1)
    assert 0 < seconds < 30


@pytest.mark.parametrize("content", ["[]", "null", "1", '"x"', "{not json"])
def test_a_corrupt_profile_is_measured_again_not_a_crash(cache, threads, content):
    """Found in review: valid JSON that is not an object crashed the evaluation's set-up."""
    torch.set_num_threads(2)
    calls = []
    tuning.machine_profile(False, fake({1: 0.5, 2: 0.2}, 0.1, calls))
    for path in (cache / "tuning").glob("*.json"):
        path.write_text(content)
    assert tuning.machine_profile(False, fake({1: 0.5, 2: 0.2}, 0.1, calls))["threads"] == 2
    assert len(calls) == 4


def test_a_lock_that_cannot_be_opened_is_measured_unlocked(monkeypatch, cache, threads):
    """Found in review: another user's lock file in a shared cache raised PermissionError."""
    torch.set_num_threads(2)

    def refuse(path):
        raise PermissionError(13, "Permission denied", str(path))
    monkeypatch.setattr(tuning, "locked", refuse)
    assert tuning.machine_profile(False, fake({1: 0.5, 2: 0.2}, 0.1, []))["threads"] == 2


def test_the_result_records_what_the_run_uses(monkeypatch, cache, threads):
    torch.set_num_threads(2)
    monkeypatch.setattr(tuning, "reference_step_times", fake({1: 0.5, 2: 0.2}, 0.1, []))
    monkeypatch.setattr(tuning, "bf16_supported", lambda device: True)
    used, n, why = tuning.resolve("cpu", "auto", 3)          # the caller's threads win
    assert (used, n) == ("bf16", 3) and (why["precision"], why["threads"]) == ("bf16", 3)
    assert why["measured_threads"] == 2
