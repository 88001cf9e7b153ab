"""Every worker metered window by window, compile beats bounded, canaries placed (issue 29, items
1-3): the judge's bookkeeping, on stand-ins for workers and clocks (no worker process starts)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from benchmark.judge import beats, budget, canary, probes
from benchmark.judge.budget import Work
from benchmark.judge.meter import Meter
from benchmark.result import EvalFailure
from benchmark.spec import SPEC

RATE = 100e9  # FLOPs per CPU-second


def test_one_formula_prices_steps_and_forward_tokens_at_the_counted_flops():
    step = SPEC.reference_step_flops / (RATE * SPEC.min_cpu_efficiency)
    token = SPEC.reference_flops_per_token / (RATE * SPEC.min_cpu_efficiency)
    assert budget.cpu_allowance(Work(steps=3), None, None, RATE, SPEC) == pytest.approx(3 * step)
    assert budget.cpu_allowance(Work(forward_tokens=512, fixed_s=2.0), None, None, RATE, SPEC) == \
        pytest.approx(2.0 + 512 * token)
    # the per-step verdict is the same formula
    verdict = budget.cpu_check(0.99 * step, None, RATE, SPEC)
    assert verdict["passed"] and not budget.cpu_check(1.01 * step, None, RATE, SPEC)["passed"]


def test_a_count_below_the_reference_is_raised_and_an_inflated_one_buys_no_cpu():
    """The counts come from the candidate's process: the reference's are the floor, and a count
    over max_flops_ratio times them is priced at the cap."""
    one = Work(forward_tokens=1)
    floor = budget.cpu_allowance(one, None, 1, RATE, SPEC)
    cap = budget.cpu_allowance(one, None, 10**15, RATE, SPEC)
    assert floor == budget.cpu_allowance(one, None, SPEC.reference_flops_per_token, RATE, SPEC)
    assert cap == pytest.approx(SPEC.max_flops_ratio * floor)
    assert budget.cpu_allowance(Work(steps=1), 10**18, None, RATE, SPEC) == \
        pytest.approx(SPEC.max_flops_ratio * budget.cpu_allowance(Work(steps=1), None, None, RATE, SPEC))


class FakeWorker:
    """cpu_s() reads a number the test sets."""

    def __init__(self) -> None:
        self.cpu = 0.0

    def cpu_s(self) -> float:
        return self.cpu


def _meter(worker, verdicts, check_name="cpu_budget"):
    def verdict(check):
        verdicts.append(check)
        budget.raise_on_failure("test", [check])

    return Meter(worker, "the training worker", check_name, SPEC, RATE, verdict, lambda: (None, None))


def test_a_window_over_the_strict_floor_passes_only_where_its_load_grants_the_lenient_one():
    """Spinning OpenMP threads beside busy processes burn CPU the candidate never asked for: such a
    window is judged at spec.spinning_cpu_efficiency and says why; a quiet one, or a passive
    worker's, stays at the strict floor (budget.Floor, Evaluation.lenient_floor)."""
    step = SPEC.reference_step_flops / RATE
    between = 0.5 * step * (1 / SPEC.min_cpu_efficiency + 1 / SPEC.spinning_cpu_efficiency)
    for floor, passes in ((None, False), (budget.Floor.spinning(SPEC, 1.7), True)):
        worker, verdicts = FakeWorker(), []
        meter = Meter(worker, "the training worker", "cpu_budget", SPEC, RATE, verdicts.append,
                      lambda: (None, None), lambda: "reading", lambda since: since == "reading" and floor)
        meter.open("training", start=0.0)
        meter.add(steps=1)
        worker.cpu = between
        meter.close()
        assert verdicts[0]["passed"] is passes, verdicts
        if passes:
            assert "spinning threads beside 1.7 cores" in verdicts[0]["detail"]
            assert meter.windows["training"]["allowed_s"] == pytest.approx(step / SPEC.spinning_cpu_efficiency, abs=1e-3)
    strict, lenient = (budget.cpu_check(between, None, RATE, SPEC, floor=f)
                       for f in (None, budget.Floor.spinning(SPEC, 2.0)))
    assert not strict["passed"] and lenient["passed"] and "spinning" in lenient["detail"]
    assert SPEC.spinning_cpu_efficiency < SPEC.min_cpu_efficiency
    # the one rule both use: a verdict that passes strictly never asks for the load's floor
    asked = []
    judge = lambda at: budget.cpu_check(0.5 * step / SPEC.min_cpu_efficiency, None, RATE, SPEC, floor=at)  # noqa: E731
    verdict, at = budget.strict_then_lenient(judge, lambda: asked.append(1) or budget.Floor.spinning(SPEC, 2.0))
    assert verdict["passed"] and at is None and not asked and "spinning" not in verdict["detail"]


def test_others_load_leaves_out_the_evaluations_own_workers():
    """The load that grants the lenient floor is other processes': the evaluation's own workers,
    which the candidate runs, are subtracted, so a candidate cannot buy it by burning CPU."""
    from benchmark.judge import load

    clock = {"busy": 0.0, "own": 0.0}
    others = load.Others(lambda: clock["own"], lambda: clock["busy"])
    since = others.reading()
    clock.update(busy=50.0, own=50.0)  # the candidate's workers burnt it all
    assert others.cores(since) == 0.0
    clock.update(busy=1e6)
    assert others.cores(since) > load.limit()


def test_windows_are_contiguous_and_each_is_judged_against_its_own_work():
    worker, verdicts = FakeWorker(), []
    meter = _meter(worker, verdicts)
    meter.open("before_training", SPEC.startup_cpu_s, start=0.0)
    meter.add(steps=3)
    worker.cpu = 5.0
    meter.open("training", start=meter.close())
    meter.add(steps=29)
    worker.cpu = 5.0 + 29 * 0.3
    meter.open("hand_over", SPEC.handover_cpu_s, start=meter.close())
    worker.cpu += 0.05
    meter.close()
    assert [v["name"] for v in verdicts] == ["cpu_budget:before_training", "cpu_budget:training",
                                             "cpu_budget:hand_over"]
    assert all(v["passed"] for v in verdicts)
    assert meter.windows["training"]["used_s"] == pytest.approx(8.7)
    assert meter.windows["hand_over"]["allowed_s"] == SPEC.handover_cpu_s


def test_two_epochs_between_the_last_step_and_the_hand_over_fail_the_hand_over_window():
    """The red team's find: training after the last step message, before the state is saved, was
    past the judge's last CPU reading. Now the hand-over is a window of its own, with no work."""
    worker, verdicts = FakeWorker(), []
    meter = _meter(worker, verdicts)
    meter.open("hand_over", SPEC.handover_cpu_s, start=100.0)
    worker.cpu = 100.0 + 60 * 0.25  # 60 steps of 0.25 s
    with pytest.raises(EvalFailure) as caught:
        meter.close()
    assert caught.value.error_type == "cpu_budget"
    assert "hand over used 15.0 s of CPU; 1.0 s allowed" in caught.value.message
    assert "hand the state over as training left it" in caught.value.message


def test_a_prefix_window_is_judged_at_every_answer_so_early_work_is_not_averaged_away():
    worker, verdicts = FakeWorker(), []
    meter = _meter(worker, verdicts, "scoring_budget:score0")
    meter.open("scoring", SPEC.startup_cpu_s, prefix=True, start=0.0)
    per_batch = budget.cpu_allowance(Work(forward_tokens=32 * 128), None, None, RATE, SPEC)
    meter.add(tokens=32 * 128)
    worker.cpu = SPEC.startup_cpu_s + 0.5 * per_batch
    meter.answered()                                  # within: nothing recorded
    assert verdicts == []
    meter.add(tokens=32 * 128)
    worker.cpu = SPEC.startup_cpu_s + 2.5 * per_batch  # training hidden in the second batch
    with pytest.raises(EvalFailure) as caught:
        meter.answered()
    assert caught.value.error_type == "scoring_budget"
    assert verdicts[0]["name"] == "scoring_budget:score0" and "8,192 forward tokens" in verdicts[0]["detail"]
    assert "training or other work while it is scored" in verdicts[0]["detail"]


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch):
    clock = Clock()
    monkeypatch.setattr(beats.time, "monotonic", clock)
    return clock


def test_without_beats_a_wait_is_the_heartbeat_and_a_beat_restarts_it(clock):
    wait = beats.Beats(SPEC).wait(60.0)
    assert wait.timeout() == (60.0, None)
    clock.now += 50
    wait.beat()
    clock.now += 10
    assert wait.timeout() == (50.0, None)


def test_beats_keep_one_wait_alive_at_most_compile_wait_s_past_its_heartbeat(clock):
    spec = SPEC.replace(compile_wait_s=100.0)
    wait = beats.Beats(spec).wait(60.0)
    for _ in range(15):                     # a beat every 10 s for 150 s
        clock.now += 10
        wait.beat()
        timeout, why = wait.timeout()
    assert timeout == pytest.approx(10.0) and "at most 100 s past the 60 s heartbeat" in why


def test_beats_buy_at_most_compile_total_s_over_an_evaluation(clock):
    spec = SPEC.replace(compile_wait_s=100.0, compile_total_s=150.0)
    evaluation = beats.Beats(spec)
    for _ in range(2):  # two waits that each ran 100 s past their heartbeat
        wait = evaluation.wait(60.0)
        for _ in range(16):
            clock.now += 10
            wait.beat()
        wait.done()
    assert evaluation.bought_s == pytest.approx(100.0 + 100.0)
    wait = evaluation.wait(60.0)
    clock.now += 10
    wait.beat()
    assert wait.timeout()[1] is not None and "compile_total_s" in wait.timeout()[1]


def test_more_beats_than_any_compile_could_send_is_a_flood(clock):
    evaluation = beats.Beats(SPEC)
    wait = evaluation.wait(60.0)
    assert evaluation.max_count == 2 * SPEC.time_limit_s / SPEC.compile_beat_s
    for _ in range(evaluation.max_count):
        wait.beat()
    with pytest.raises(beats.BeatFlood, match="only the evaluator's compile beat may send them"):
        wait.beat()


def _plan(n_windows=96, batch=16, seed=0):
    rng = np.random.default_rng(seed)
    val_x = rng.integers(0, 1000, size=(n_windows, 8))
    plan = probes.hidden_plan(val_x, batch, 7, 4, 16, 1000, 42, rng)
    return plan, val_x, rng


def test_each_scoring_process_ends_with_a_batch_of_canaries_from_the_other_processs_windows():
    plan, val_x, rng = _plan()
    before = [len(run) for run in plan.runs]
    rows = canary.place(plan, val_x, 8, rng)
    assert len(rows) == len(plan.runs) == 2
    for r, run in enumerate(plan.runs):
        assert len(run) == before[r] + 1
        kind, windows, last = run[-1]
        assert kind == "probe" and len(windows) == 0 and len(last) == 16   # a whole batch, after the last real one
        other = np.concatenate([w for _, w, _ in plan.runs[1 - r]])
        assert set(plan.row_window[last]) <= set(other)                   # never a window this process scores
        assert (plan.row_cut[last] == -1).all()
        assert (val_x[plan.row_window[last]] == plan.probe_rows[last]).all()
        assert len(rows[r]) == 8 and len(set(rows[r])) == 8
        in_last = np.isin(rows[r], last)
        earlier = np.concatenate([ids for _, _, ids in run[:-1]])
        assert in_last.sum() >= 4 and np.isin(rows[r][~in_last], earlier).all()
        assert (plan.row_cut[rows[r]] == -1).all()                        # repeats only: no seam
    # the recorder still finds every probe's original
    recorder = probes.HiddenRecorder(plan, val_x)
    assert recorder.wanted == {int(w) for w in plan.row_window}


def test_a_change_while_scored_fails_the_canary_in_fp32_and_in_bf16_by_its_gain():
    torch.manual_seed(0)
    ref = torch.log_softmax(torch.randn(8, 16, 33), -1)
    assert canary.compare("probe:canary:score0", ref + 1e-7, ref, 1e-3, 1e-4)["passed"]
    trained = ref.clone()
    trained[..., -1] += 0.02                   # the true token 0.02 nats likelier everywhere
    failed = canary.compare("probe:canary:score0", trained, ref, 0.1, 3e-3)   # under bf16's 0.1 per value
    assert not failed["passed"] and "changed while it was scored" in failed["detail"]
    noise = ref + 0.05 * torch.randn_like(ref)  # bf16 rounding: large, without sign
    assert canary.compare("probe:canary:score0", noise, ref, 0.1 + 0.3, 3e-3)["passed"]


def test_compiled_code_runs_eagerly_once_the_state_is_handed_over():
    """The scoring processes and the training worker after its hand-over compile nothing: a
    compile's CPU time there could not be told from training. The compiled wrapper (and its
    state-dict keys) stays."""
    code = ("import torch\n"
            "from benchmark.worker.serve import eager_from_now\n"
            "from torch._dynamo.utils import counters\n"
            "m = torch.compile(torch.nn.Linear(4, 4))\n"
            "eager_from_now()\n"
            "m(torch.randn(2, 4))\n"
            "print(type(m).__name__, list(m.state_dict())[0], sum(counters['stats'].values()))\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["OptimizedModule", "_orig_mod.weight", "0"]
