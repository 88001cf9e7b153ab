"""A machine profile a loaded machine cannot fix for good: tuned beside busy processes, the choice
is recorded but not kept and the run takes the safe default; the quiet re-measurement is kept and
wins; a kept profile an evaluation's own steps contradict is forgotten; the matmul peak of the CPU
budget checks is kept only when measured quiet.

This machine may be busy with other work, so the contrast is made here: busy processes this test
starts, and a load probe that counts only their CPU time (the real probe, which counts every other
process, is tested to see them too)."""

from __future__ import annotations

import math
import subprocess
import sys
import time

import psutil
import pytest
import torch

from benchmark.judge import load as machine_load
from benchmark.judge import peak, tuning
from benchmark.spec import Spec
from tests.conftest import REPO, evaluate_tiny

BUSY = "while True: pass"
# The step times of the machine: under load 1 thread looked best; quiet, 2 are.
LOADED_S, QUIET_S = {1: 0.672, 2: 2.581}, {1: 0.300, 2: 0.2286}


class Busy:
    """`n` processes spinning on a core each, and the CPU seconds they used so far (a stand-in
    for tuning.other_cpu_s that sees only them)."""

    def __init__(self, n: int) -> None:
        self.procs = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(n)]
        self.used = {p.pid: 0.0 for p in self.procs}
        deadline = time.monotonic() + 60  # spinning, not still starting (slow on a busy machine)
        while time.monotonic() < deadline and self.cpu_s() < 0.05 * n:
            time.sleep(0.05)

    @property
    def alive(self) -> bool:
        return any(p.poll() is None for p in self.procs)

    def cpu_s(self) -> float:
        for p in self.procs:
            try:
                times = psutil.Process(p.pid).cpu_times()
                self.used[p.pid] = times.user + times.system
            except psutil.Error:
                pass  # gone: its last reading stands
        return sum(self.used.values())

    def stop(self) -> None:
        for p in self.procs:
            p.kill()
            p.wait()


@pytest.fixture
def busy():
    made = []

    def start(n: int) -> Busy:
        made.append(Busy(n))
        return made[-1]
    yield start
    for b in made:
        b.stop()


@pytest.fixture
def cache(monkeypatch, tmp_path):
    monkeypatch.setenv("PLASA_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(peak, "_PEAK", None)
    monkeypatch.setattr(peak, "_LOADED", None)
    return tmp_path / "tuning"


@pytest.fixture
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def step_times(load: Busy, calls: list):
    """Step times by thread count, as the machine gives them with or without the load; each call
    takes 0.2 s of wall time (asleep), so the probe sees the busy processes at work."""
    def measure(precision):
        calls.append(torch.get_num_threads())
        time.sleep(0.2)
        table = LOADED_S if load.alive else QUIET_S
        return [table[torch.get_num_threads()]] * tuning.STEPS
    return measure


def test_a_profile_tuned_under_load_is_not_kept_and_the_quiet_remeasurement_wins(monkeypatch, cache, two_threads,
                                                                                  busy):
    # a low bar, so that whatever else this machine runs, the busy processes started here clear it
    monkeypatch.setattr(machine_load, "MIN_LOAD_CORES", 0.1)
    monkeypatch.setattr(machine_load, "LOAD_FRACTION", 0.0)
    load, calls = busy(4), []
    first = tuning.machine_profile(False, step_times(load, calls), others=load.cpu_s)
    assert first["under_load"] and first["source"] == "default" and first["load"]["other_cores"] > 0.1
    assert first["measured_threads"] == 1, "under load one thread measured fastest (the issue's trap)"
    assert (first["threads"], first["precision"]) == (tuning.default_threads(), "fp32") == (2, "fp32")
    assert not list(cache.glob("*.json")), "a profile measured under load was kept"

    again = tuning.machine_profile(False, step_times(load, calls), others=load.cpu_s)
    assert again["source"] == "default" and len(calls) == 2, "measured again at once on a busy machine"

    load.stop()
    monkeypatch.setattr(machine_load, "RETRY_S", 0)   # the wait after a busy measurement is over
    quiet = tuning.machine_profile(False, step_times(load, calls), others=load.cpu_s)
    assert quiet["source"] == "measured" and not quiet["under_load"] and quiet["threads"] == 2
    later = tuning.machine_profile(False, step_times(load, calls), others=load.cpu_s)
    assert later["source"] == "cache" and later["threads"] == 2 and len(calls) == 4


def test_the_real_probe_sees_busy_processes(busy):
    n = max(2, math.ceil(2 * machine_load.limit()) + 1)
    load = busy(n)
    time.sleep(0.3)  # started
    with machine_load.Watch() as watch:
        time.sleep(1.0)
    assert load.alive and watch.cores > machine_load.limit(), (watch.cores, machine_load.limit())


def test_workers_wait_passively_only_beside_busy_processes(monkeypatch):
    """Spinning OpenMP threads beside busy processes cost the candidate CPU time and the run wall
    time (load.wait_policy's measurements): a loaded start chooses PASSIVE, a quiet one OpenMP's
    default, and a policy the judge was started with is kept."""
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    clock = iter(range(100))
    busy = lambda: 2.0 * next(clock)  # noqa: E731  (two cores' worth between the watch's readings)
    assert machine_load.wait_policy(busy, watch_s=0.01)["omp_wait_policy"] == "PASSIVE"
    quiet = machine_load.wait_policy(lambda: 0.0, watch_s=0.01)
    assert quiet == {"omp_wait_policy": None, "other_cores": 0.0}
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert machine_load.wait_policy(busy, watch_s=0.01) == {"omp_wait_policy": "ACTIVE", "other_cores": None}


def test_spread_between_repeats_reads_as_load():
    assert machine_load.spread([1.0, 1.02, 0.99, 1.01, 1.0, 3.0]) < 0.05       # one stray repeat is forgiven
    assert machine_load.spread([1.0, 1.6, 1.0, 1.3, 1.0, 1.0]) > machine_load.MAX_SPREAD

    class Quiet:
        cores = 0.0
    assert machine_load.verdict(Quiet(), [0.01, 0.3])["loaded"]
    assert not machine_load.verdict(Quiet(), [0.01, 0.02])["loaded"]


def test_repeats_that_disagree_on_a_quiet_machine_are_measured_once_more(cache, two_threads):
    """The rest of the machine idle, only one measurement's repeats apart (a stray burst): measured
    again, and the second, steady measurement is kept. Repeats that keep disagreeing are load."""
    calls = []

    def measure(precision):
        calls.append(torch.get_num_threads())
        times = [QUIET_S[torch.get_num_threads()]] * tuning.STEPS
        return [times[0] * 1.6] + times[1:-1] + [times[0] * 1.3] if len(calls) <= 2 else times

    profile = tuning.machine_profile(False, measure, others=lambda: 0.0)
    assert len(calls) == 4 and profile["source"] == "measured" and profile["threads"] == 2
    assert list(cache.glob("*.json")) and not profile["under_load"]

    def always_apart(precision):
        calls.append(torch.get_num_threads())
        return [1.0, 1.6, 1.0, 1.3] + [1.0] * (tuning.STEPS - 4)

    calls.clear()
    tuning.machine_profile(True, always_apart, others=lambda: 0.0)  # another profile (bf16 asked)
    assert len(calls) == 6, "measured twice (2 thread counts and bf16 each time)"
    loaded = tuning.machine_profile(True, always_apart, others=lambda: 0.0)
    assert loaded["source"] == "default" and loaded["under_load"] and len(calls) == 6


def kept_profile(cache, threads=1, step_ms=672.0) -> dict:
    torch.set_num_threads(2)
    profile = tuning.machine_profile(False, lambda p: [step_ms / 1000 if torch.get_num_threads() == threads else 9.9]
                                     * tuning.STEPS, others=lambda: 0.0)
    assert profile["source"] == "measured" and list(cache.glob("*.json"))
    return profile


@pytest.mark.parametrize("run_ms, flops_ratio, forgotten", [
    (300.0, 1.0, True),     # the run: 300 ms where the profile said 672
    (600.0, 1.0, False),    # consistent
    (300.0, 0.5, False),    # half the reference's FLOPs: 600 ms per reference step
], ids=["faster", "consistent", "smaller-model"])
def test_a_kept_profile_the_run_contradicts_is_forgotten(cache, two_threads, run_ms, flops_ratio, forgotten):
    profile = kept_profile(cache)
    spec = Spec()
    result = {"precision": "fp32", "step_ms_median": run_ms, "params": {"step_flops": flops_ratio * spec.reference_step_flops},
              "tuning": dict(profile, threads=1)}
    tuning.review(result, spec)
    assert ("contradicted" in result["tuning"]) == forgotten
    assert (not list(cache.glob("*.json"))) == forgotten
    if forgotten:
        assert tuning.machine_profile(False, lambda p: [0.3] * tuning.STEPS, others=lambda: 0.0)["source"] == "measured"


def test_a_default_or_fixed_choice_is_never_reviewed(cache):
    for source in ("default", "fixed"):
        result = {"precision": "fp32", "step_ms_median": 1.0, "tuning": {"source": source, "profile": None}}
        tuning.review(result, Spec())
        assert "contradicted" not in result["tuning"]


def test_the_matmul_peak_is_kept_only_when_measured_quiet(monkeypatch, cache, busy):
    monkeypatch.setattr(machine_load, "MIN_LOAD_CORES", 0.1)  # as above: the busy processes clear it
    monkeypatch.setattr(machine_load, "LOAD_FRACTION", 0.0)
    rates = lambda: [1.0e11, 1.1e11, 1.05e11, 1.1e11, 1.08e11]  # noqa: E731
    load = busy(4)

    def slow_rates():
        time.sleep(0.5)  # the busy processes run meanwhile
        return rates()
    loaded = peak.matmul_peak(others=load.cpu_s, rates=slow_rates)
    assert loaded["under_load"] and "not kept" in loaded["source"] and not list(cache.glob("*matmul.json"))
    again = peak.matmul_peak(others=lambda: pytest.fail("measured"), rates=lambda: pytest.fail("measured"))
    assert again is loaded          # for BUSY_RETRY_S, in this process only
    load.stop()
    monkeypatch.setattr(machine_load, "RETRY_S", 0)
    quiet = peak.matmul_peak(others=lambda: 0.0, rates=rates)
    assert quiet == dict(quiet, flops_per_cpu_s=1.1e11, under_load=False, source="measured")
    monkeypatch.setattr(peak, "_PEAK", None)  # a new process: read back from the cache, not measured
    again = peak.matmul_peak(others=lambda: pytest.fail("measured"), rates=lambda: pytest.fail("measured"))
    assert again["flops_per_cpu_s"] == 1.1e11 and again["source"] == "cache"


@pytest.mark.evaluation
def test_an_evaluation_beside_busy_processes_leaves_no_profile_behind(monkeypatch, tmp_path, busy):
    """The issue's case, end to end: a real tiny evaluation starts while other processes hold the
    cores; it runs on the safe default, says so in its result, and keeps no profile."""
    monkeypatch.setenv("PLASA_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(peak, "_PEAK", None)
    monkeypatch.setattr(peak, "_LOADED", None)
    load = busy(max(2, math.ceil(2 * machine_load.limit()) + 1))
    result = evaluate_tiny(REPO / "initial_program.py")
    assert load.alive
    assert result["valid"], result.get("error")
    record = result["tuning"]
    assert record["under_load"] and record["source"] == "default" and record["profile"] is None, record
    assert record["threads"] == tuning.default_threads() == result["environment"]["threads"]
    assert record["matmul_under_load"] and "not kept" in record["matmul_source"]
    assert not list((tmp_path / "tuning").glob("*.json")), "a profile measured under load was kept"
    # its workers wait passively instead of spinning against the busy processes
    assert result["environment"]["omp_wait_policy"] == "PASSIVE", result["environment"]
