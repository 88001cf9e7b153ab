"""One evaluation, driven by the judge: data, training worker, verdicts, scoring worker, result.

The judge never imports the candidate. It starts a training worker (candidate + the evaluator's
training loop) and asks it for fp32 probe logits before and after training, the trained model's
logits on replay windows, and its state dict; it checks that state (parameters, structure) and the
step's cost read from outside; then a fresh scoring worker rebuilds the model from the state alone
and answers the judge's sequence of validation and probe batches. Loss, accuracy, perplexity, every
probe comparison and the result are computed here. Every worker's CPU time is metered from its start
to its last reply, window by window (meter.py), its compile beats bounded (beats.py), and each
scoring worker answers canary rows the training worker answered at the hand-over (canary.py).
"""

from __future__ import annotations

import logging
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from . import budget, canary, load, power, probes
from .beats import Beats
from .conversation import WorkerConversation
from .launch import WorkerProcess
from .meter import Meter
from .options import Options
from .placement import worker_placement
from .machine import cpu_model
from .tuning import resolve, review
from .scoring import Exchange, Score, matmul_flops_per_cpu_s, score_batch
from .xent import row_stats, scoring_plan
from .. import numerics, statefile
from ..fsutil import remove_tree
from .data import DataError, eval_windows, load_benchmark_data, train_windows
from ..protocol import STATE_FILE, Op
from ..result import EvalFailure, base_result, check, failure

log = logging.getLogger(__name__)


def environment(device: str, threads: Optional[int]) -> dict:
    """The machine; `threads`: the workers' torch threads (None: torch's default, the judge's)."""
    cpu = cpu_model()
    name = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else cpu
    return {"torch": torch.__version__, "python": platform.python_version(),
            "threads": threads or torch.get_num_threads(), "cpu": cpu, "device": device, "device_name": name}


class Evaluation(WorkerConversation):
    """The stages of one evaluation, in order; `self.result` holds whatever is known so far."""

    def __init__(self, *, candidate: str, display_path: str, sha256: str, options: Options, run_dir: Path,
                 deadline: float, checks: list) -> None:
        self.options = options
        self.overrides, self.spec = dict(options.overrides), options.spec
        self.candidate, self.mode, self.device = candidate, options.mode, options.device
        self.requested_precision = options.precision
        self.data_dir, self.tokenizer_dir, self.run_dir = options.data_dir, options.tokenizer_dir, run_dir
        self.deadline = deadline
        self.memory_limit_mb = int(options.memory_limit_mb or self.spec.memory_limit_mb)
        self.progress, self.echo, self.trusted = options.progress, options.stream, options.trusted
        self.threads, self.sandbox = options.threads, options.sandbox  # threads: resolved by the tuning
        self.result = base_result(self.spec, self.mode, sha256, display_path, checks)
        self.timings, self.checks = self.result["timings"], self.result["checks"]
        self.stage = "setup"
        self.exchanges: dict = {}  # name -> the Exchange of a worker spawned but not yet started
        self.worker_fds: dict = {}  # name -> the descriptor numbers that worker inherited
        self.max_rows = max(self.spec.val_batch_size, self.spec.probe_windows,
                            self.spec.replay_windows, self.spec.batch_size)
        self.rng, self.result["probe_seed"] = probes.new_rng()
        self.log_tail = ""
        self.workers: dict = {}
        self.beats = Beats(self.spec)
        self.meters: dict = {}   # worker -> its CPU Meter
        self.result["cpu"] = {}  # worker name -> {window: {used_s, allowed_s}}
        self.flops: dict = {"step": None, "token": None}  # counted so far, for the CPU allowances
        self.spawned: list = []  # every worker started, for worker_output()
        self.peak_rss_mb = 0.0   # the workers' largest resident memory
        self.worker_cpu: dict = {}  # worker -> its largest CPU reading (a tree's reading ends with it)
        self.others = load.Others(self.workers_cpu_s)  # other processes' load, for budget.Floor
        self.spinning = True     # the workers' OpenMP threads spin while waiting (set by setup)
        self.steps_floor = None  # the lenient floor the training steps' load grants, if any

    # ------------------------------------------------------------------ driver
    def run(self) -> dict:
        t_start = time.perf_counter()
        judge_threads = torch.get_num_threads()
        try:
            self.setup()
            if self.threads:  # the judge's own arithmetic as wide as its workers: evaluations side
                torch.set_num_threads(self.threads)  # by side would oversubscribe the cores
            self.result["environment"]["judge_threads"] = torch.get_num_threads()
            self.spawn("train")  # imports torch while the judge loads the data
            self.load_data()
            state = self.train_phase()
            review(self.result, self.spec)  # steps far faster than the machine profile: re-measure it
            if self.mode == "stage1":
                self.result.update(combined_score=self.spec.stage1_pass_score)
            else:
                self.score_phase(state)
            self.timings["total_s"] = time.perf_counter() - t_start
            self.result.update(valid=True, stage="done")
            return self.result
        except EvalFailure as exc:
            self.checks.extend(c for c in exc.checks if c not in self.checks)
            self.timings["total_s"] = time.perf_counter() - t_start
            extra = {"log_tail": self.log_tail} if self.log_tail else {}
            if getattr(exc, "traceback", ""):
                extra["traceback"] = exc.traceback
            return failure(self.result, exc.stage, exc.error_type, exc.message, **extra)
        finally:
            torch.set_num_threads(judge_threads)
            for worker in self.workers.values():
                worker.close()
            for exchange in self.exchanges.values():  # spawned, never started
                exchange.close()

    def enter(self, stage: str) -> None:
        self.stage = stage

    def setup(self) -> None:
        precision = self.requested_precision or self.spec.precision
        if self.device.startswith("cuda") and not torch.cuda.is_available():
            raise EvalFailure("setup", "bad_device", "--device cuda was requested but CUDA is not available")
        try:
            self.worker_device, self.worker_env = worker_placement(self.device)
        except ValueError as exc:
            raise EvalFailure("setup", "bad_device", str(exc)) from exc
        self.worker_env.update(numerics.env(self.device))
        try:
            self.precision, self.threads, tuning = resolve(self.device, precision, self.threads)
        except ValueError as exc:
            raise EvalFailure("setup", "bad_precision", str(exc)) from exc
        self.result.update(precision=self.precision, tuning=tuning, device=self.device,
                           environment=environment(self.device, self.threads),
                           numerics=numerics.policy(self.device))  # what the workers apply
        if not self.device.startswith("cuda"):
            wait = load.wait_policy()
            if wait["omp_wait_policy"]:
                self.worker_env["OMP_WAIT_POLICY"] = wait["omp_wait_policy"]
            self.result["environment"].update(wait)
        policy = self.worker_env.get("OMP_WAIT_POLICY") or os.environ.get("OMP_WAIT_POLICY") or ""
        self.spinning = self.threads != 1 and policy.upper() != "PASSIVE"

    def load_data(self) -> None:
        self.enter("data")
        spec, t0 = self.spec, time.perf_counter()
        try:
            data = load_benchmark_data(spec, data_dir=self.data_dir, tokenizer_dir=self.tokenizer_dir)
        except DataError as exc:
            raise EvalFailure("data", "data_error", str(exc)) from exc
        if data.vocab_size != spec.vocab_size:
            raise EvalFailure("data", "data_error", f"the tokenizer has {data.vocab_size} tokens; "
                                                    f"the spec says {spec.vocab_size}")
        steps = spec.steps if self.mode == "full" else spec.smoke_steps
        self.train_tokens = data.train
        self.windows = train_windows(data.train, steps, spec.batch_size, spec.seq_len, spec.seed)
        self.val_x, self.val_y = eval_windows(data.eval, spec.seq_len, spec.val_tokens)
        self.timings["data_s"] = time.perf_counter() - t0

    def complete(self, result: dict, *, evaluator: str, run_folder: str, started: float) -> dict:
        """`result` (this evaluation's, or the failure built from it) with what only the end of the
        run knows: the evaluator's hash, where the run folder was, the whole call's wall time, the
        workers' peak memory and their output."""
        result["evaluator"] = evaluator
        result.setdefault("environment", {})["run_folder"] = run_folder
        result.setdefault("timings", {})["wall_s"] = time.monotonic() - started
        result["peak_rss_mb"] = round(self.peak_rss_mb, 1)
        result["worker_output"] = self.worker_output()
        return result

    # ------------------------------------------------------------------ training worker
    def train_phase(self) -> dict:
        spec = self.spec
        self.enter("load")
        worker, exchange = self.start("train", "train")
        meter = self.meter(worker, "train", "the training worker", "cpu_budget")
        meter.open("before_training", spec.startup_cpu_s + spec.compile_cpu_s, start=0.0)
        with worker:
            try:
                self.result["sandbox"] = worker.sandbox(self.expect(worker, "hello").sandbox)
                self.enter("build")
                t0 = time.perf_counter()
                built = self.expect(worker, "built")
                self.timings["build_s"] = time.perf_counter() - t0
                self.result["layer_top_k"] = built.layer_top_k
                self.enter("budget")
                if not spec.experiment:
                    top = budget.top_k_check(built.layer_top_k, spec)
                    self.checks.append(top)
                    budget.raise_on_failure("budget", [top])
                # before training the worker is shown no text at all: the count, the trial and the
                # untrained probes run on random tokens, so nothing done in the compile allowance of
                # before_training can be training on text (a red-team model pre-trained 8 steps on
                # the probe windows there: 2.9x the reference's score at 30 steps)
                noise = self.rng.integers(0, spec.vocab_size, size=4 * spec.probe_windows * (spec.seq_len + 1))
                exchange.put(noise[None, :spec.seq_len])
                meter.add(tokens=spec.seq_len)
                worker.send(Op("count"))
                flops = self.expect(worker, "flops").flops
                self.result["params"] = {"flops_per_token": flops // spec.seq_len if flops else None}
                self.flops["token"] = self.result["params"]["flops_per_token"]
                meter.add(steps=2)
                worker.send(Op("trial", tokens=noise[:spec.batch_size * (spec.seq_len + 1)].reshape(
                    spec.batch_size, spec.seq_len + 1).tolist()))
                trial = self.expect(worker, "flops").flops
                self.result["params"]["trial_step_flops"] = self.flops["step"] = trial
                if not spec.experiment:  # a model over the budget stops here, not after training
                    self.verdict_now(budget.flops_check(trial, spec), " (a trial step before training)")
                    self.state_verdicts(self.saved_state(worker), " (before training)")
                self.direct_probes(worker, exchange, "untrained", noise)
                step_flops, cpu_per_step = self.train(worker)
                # the scored state is taken the moment training ends: work the model does after its
                # last step (training on kept batches inside the next forward) cannot reach it, and
                # the replay windows, answered next, show any change since. The trained probes come
                # last: a buffer an honest model updates in a train-mode forward (running
                # statistics) may move there, after the replay's reference is taken.
                state = self.saved_state(worker)
                # from here the worker may run forward passes only (meter.py), so its answers on the
                # replay and canary rows are the handed-over model's
                self.enter("save")
                meter.open("after_hand_over", spec.handover_cpu_s, prefix=True, start=meter.close())
                self.enter("replay")
                replay = probes.direct_plan(self.train_tokens, spec.replay_windows, spec.seq_len, self.rng)
                self.replay_x = replay.x
                self.replay_ref = probes.full_log_probs(  # fp32: see replay()
                    self.forward(worker, exchange, replay.x, "eval", "fp32"))
                if self.mode == "full":
                    self.plan = self.hidden_plan()
                    self.canary_ref = self.canary_reference(worker, exchange)
                self.direct_probes(worker, exchange, "trained", self.train_tokens)
                meter.close()
            finally:
                self.peak_rss_mb = max(self.peak_rss_mb, worker.peak_rss_mb)
                exchange.close()
        remove_tree(self.run_dir / "train")  # nothing else crosses over
        self.enter("budget")
        t0 = time.perf_counter()
        counts = budget.parameter_counts(state, spec.vocab_size)
        self.result["params"].update(counts, step_flops=step_flops)
        self.result["param_count"] = counts["total"]
        if not spec.experiment:
            verdicts = budget.structure_checks(state, self.result["layer_top_k"], spec)
            verdicts += [budget.param_check(counts, spec), budget.flops_check(step_flops, spec)]
            if cpu_per_step is not None:
                verdicts.append(self.step_check(cpu_per_step, step_flops, floor=self.steps_floor))
            self.checks.extend(verdicts)
            budget.raise_on_failure("budget", verdicts)
        self.timings["probes_s"] = self.timings.get("probes_s", 0.0) + time.perf_counter() - t0
        return state

    def saved_state(self, worker: WorkerProcess) -> dict:
        """The training worker's state dict, as it writes it now (read once, every offset checked).
        Writing it takes an honest model well under a second: one that takes over
        spec.save_limit_s (training on inside state_dict()) is stopped."""
        stage, spec = self.stage, self.spec
        self.enter("save")
        t0 = time.perf_counter()
        worker.send(Op("save"))
        self.expect(worker, "saved")
        took = time.perf_counter() - t0
        if not spec.experiment:
            self.verdict_now(check("save_time", took <= spec.save_limit_s,
                                   f"handing over the state dict took {took:.1f} s (limit {spec.save_limit_s:g} s): "
                                   "state_dict() must only return the model's tensors, not train or compute"), "")
        self.enter(stage)
        try:
            return statefile.read(self.run_dir / "train" / STATE_FILE, spec.max_state_bytes)
        except statefile.StateFileError as exc:
            raise EvalFailure("budget", "state_error", f"the model's state dict is unusable: {exc} (the worker "
                              f"writes state_dict() to one file, at most {spec.max_state_bytes:,} bytes: twice the "
                              "parameter budget; nothing else may touch it)") from exc

    def state_verdicts(self, state: dict, when: str) -> None:
        """The size and structure rules on the untrained model's state: a failure stops the run
        before training (the trained state is judged again by the same rules)."""
        t0 = time.perf_counter()
        verdicts = budget.structure_checks(state, self.result["layer_top_k"], self.spec)
        verdicts.append(budget.param_check(budget.parameter_counts(state, self.spec.vocab_size), self.spec))
        self.timings["probes_s"] = self.timings.get("probes_s", 0.0) + time.perf_counter() - t0
        for verdict in verdicts:
            self.verdict_now(verdict, when)

    def direct_probes(self, worker: WorkerProcess, exchange: Exchange, prefix: str, tokens: np.ndarray) -> None:
        """fp32 causality (eval and train mode) and batch independence on windows of `tokens`."""
        self.enter("probe")
        spec, t0 = self.spec, time.perf_counter()
        plan = probes.direct_plan(tokens, spec.probe_windows, spec.seq_len, self.rng)
        targets = torch.as_tensor(plan.targets)
        mask, band = probes.prefix_mask(plan.cuts, spec.seq_len), probes.band_mask(plan.cuts, spec.seq_len)
        tol, gain = spec.probe_tol_fp32, spec.probe_gain_tol_fp32

        def logp(x, mode="eval", seed=None):
            return probes.full_log_probs(self.forward(worker, exchange, x, mode, "fp32", seed))

        ref = logp(plan.x)
        results = [probes.compare(f"{prefix}:causality_eval", ref, logp(plan.swapped), mask, tol, gain,
                                  probes.LEAK, band, targets)]
        if len(plan.x) > 1:
            everywhere = torch.ones(len(plan.x), spec.seq_len, dtype=torch.bool)
            results.append(probes.compare(f"{prefix}:batch_independence", ref[plan.perm],
                                          logp(plan.x[plan.perm]), everywhere, tol, gain, probes.MIXING))
        del ref
        ref = logp(plan.x, "train", plan.dropout_seed)
        results.append(probes.compare(f"{prefix}:causality_train", ref,
                                      logp(plan.swapped, "train", plan.dropout_seed), mask, tol, gain,
                                      probes.LEAK, band, targets))
        self.checks.extend(results)
        self.timings["probes_s"] = self.timings.get("probes_s", 0.0) + time.perf_counter() - t0
        budget.raise_on_failure("probe", results)

    def train(self, worker: WorkerProcess) -> tuple:
        """Runs the training loop; returns (the largest counted step's FLOPs, CPU seconds per step
        after step 0, the counted steps left out). A counted step over the FLOP budget, or the
        first steps far over the CPU budget, stop the run there (README "Rules")."""
        self.enter("train")
        spec = self.spec
        n_steps = len(self.windows)
        # the steps whose FLOPs are counted are secret (not always the first: a candidate doing
        # extra passes from step 1 on would pass a count of step 0), one of them early
        counted = probes.counted_steps(n_steps, spec.seed, self.rng, spec.early_count_fraction)
        early_cpu = spec.early_cpu_steps if spec.early_cpu_steps < n_steps - 1 else None

        def send_batch(i: int) -> None:
            worker.send(Op("batch", tokens=self.windows[i].tolist(), count=i in counted))

        meter = self.meters[worker]  # training text from here: the steps' allowance only
        meter.open("training", spec.handover_cpu_s, prefix=True, start=meter.close())
        worker.send(Op("train", steps=n_steps))
        for i in range(min(2, n_steps)):  # two steps ahead: the worker never waits, never sees more
            send_batch(i)
        if self.mode == "full":  # they import torch while the model trains; no candidate code yet
            self.spawn("score0")
            self.spawn("score1")
        losses, step_times, counted_flops, counted_times = [], [], [], []
        cpu = {}  # step -> the worker's CPU seconds when it reported that step
        since = None  # the load reading at step 0
        heartbeat = spec.heartbeat_s
        start = t_prev = time.perf_counter()
        while len(losses) < len(self.windows):
            message = self.expect(worker, "step", heartbeat)
            now = time.perf_counter()
            step = message.step
            if step != len(losses):
                raise EvalFailure("train", "protocol_error",
                                  f"the worker reported step {step} where step {len(losses)} was due")
            if step + 2 < n_steps:
                send_batch(step + 2)
            if step == 0 or step == early_cpu or step in counted or step + 1 in counted:
                cpu[step] = worker.cpu_s()
            if step == 0:
                since = self.others.reading()  # the load over the steps, for their CPU verdicts
            if step in counted:
                counted_flops.append(message.flops)
                if message.flops:
                    self.flops["step"] = max(self.flops["step"] or 0, message.flops)
                if step > 0:
                    counted_times.append(now - t_prev)
                if not spec.experiment:
                    self.verdict_now(budget.flops_check(message.flops, spec), f" (step {step})")
            elif step > 0:
                step_times.append(now - t_prev)
            t_prev = now
            # CPU after a counted step's FLOP verdict, the more telling one
            meter.add(steps=spec.counted_step_allowance if step in counted else 1)
            if step < n_steps - 1:
                meter.answered()  # work piled into one step (step 0 included) stops the run there
            else:
                meter.open("hand_over", spec.handover_cpu_s, start=meter.close())
            losses.append(message.loss if message.loss is not None else float("nan"))
            self.result["steps_completed"] = len(losses)
            if step == early_cpu and not spec.experiment and self.cpu_per_step(cpu, counted, step) is not None:
                flops = max((f for f in counted_flops if f), default=None)
                self.verdict_now(self.step_check(self.cpu_per_step(cpu, counted, step), flops, since,
                                                 spec.early_cpu_margin, f" over steps 1-{step}"), "")
            if len(step_times) >= 5:
                heartbeat = max(spec.heartbeat_s, spec.heartbeat_factor * statistics.median(step_times[-50:]))
        cpu[n_steps - 1] = worker.cpu_s()
        self.steps_floor = self.lenient_floor(since)  # read now: the steps' load, not the hand-over's
        self.expect(worker, "trained", heartbeat)
        train_s = time.perf_counter() - start
        curve = self.curve(losses)
        step_times = step_times or counted_times  # a 2-step run
        median = statistics.median(step_times) if step_times else None
        self.result.update(train_loss=_mean_tail(losses), loss_curve=curve, steps_completed=n_steps,
                           step_ms_median=1000 * median if median else None)
        tokens = spec.batch_size * spec.seq_len
        self.timings.update(train_s=train_s, step_ms_median=1000 * median if median else None,
                            tokens_per_s=tokens * n_steps / train_s if train_s else None)
        self.checks.append(check("step_count", True, f"{n_steps} optimizer steps of batch {spec.batch_size}"))
        cpu_per_step = self.cpu_per_step(cpu, counted, n_steps - 1) if n_steps > 1 else None
        self.timings["cpu_ms_per_step"] = 1000 * cpu_per_step if cpu_per_step is not None else None
        self.result["params"]["counted_steps"] = len(counted)
        step_flops = None if None in counted_flops or not counted_flops else max(counted_flops)
        return step_flops, cpu_per_step

    @staticmethod
    def cpu_per_step(cpu: dict, counted: list, last: int) -> Optional[float]:
        """CPU seconds per step over steps 1..last, from the readings at step 0 and `last`, with
        the counted steps (slow under the FLOP counter) left out; None when no step is left."""
        left_out = [c for c in counted if 0 < c <= last]
        if last <= len(left_out):
            return None
        spent = cpu[last] - cpu[0] - sum(cpu[c] - cpu[c - 1] for c in left_out)
        return spent / (last - len(left_out))

    def workers_cpu_s(self) -> float:
        """CPU seconds this evaluation's workers have used so far (each its largest reading)."""
        for worker in self.spawned:
            try:
                self.worker_cpu[worker] = max(self.worker_cpu.get(worker, 0.0), worker.cpu_s())
            except (OSError, ValueError):
                pass
        return sum(self.worker_cpu.values())

    def lenient_floor(self, since) -> Optional[budget.Floor]:
        """The lower floor a CPU verdict over the strict one gets (spec.spinning_cpu_efficiency):
        only where the workers' threads spin and other processes loaded the machine since the
        load reading `since`; None otherwise (the strict floor stands)."""
        if since is None or not self.spinning:
            return None
        cores = self.others.cores(since)
        return budget.Floor.spinning(self.spec, cores) if cores > load.limit() else None

    def step_check(self, cpu_per_step: float, flops, since=None, margin: float = 1.0, steps: str = "",
                   floor: Optional[budget.Floor] = None) -> dict:
        """The steps' CPU verdict at the strict floor; one over it is judged again at the lenient
        floor (`floor`, or the one the load since `since` grants), where there is one."""
        rate, spec = matmul_flops_per_cpu_s(), self.spec
        return budget.strict_then_lenient(
            lambda at: budget.cpu_check(cpu_per_step, flops, rate, spec, margin, steps, at),
            lambda: floor or self.lenient_floor(since))[0]

    def verdict_now(self, verdict: dict, when: str) -> None:
        """A budget verdict reached during training: a failure stops the run at once."""
        if not verdict["passed"]:
            verdict = dict(verdict, detail=verdict["detail"] + when)
            self.checks.append(verdict)
            budget.raise_on_failure("budget", [verdict])

    def meter(self, worker: WorkerProcess, name: str, who: str, check_name: str) -> Meter:
        """Meters `worker`'s CPU time window by window (benchmark/judge/meter.py)."""
        meter = Meter(worker, who, check_name, self.spec, matmul_flops_per_cpu_s(), self.cpu_verdict,
                      lambda: (self.flops["step"], self.flops["token"]), self.others.reading, self.lenient_floor)
        self.meters[worker] = meter
        self.result["cpu"][name] = meter.windows
        return meter

    def cpu_verdict(self, verdict: dict) -> None:
        """A worker's CPU window against its allowance: recorded, and a failure stops the run
        (a benchmark-owned experiment model is exempt, as from every budget rule)."""
        if self.spec.experiment:
            return
        self.checks.append(verdict)
        budget.raise_on_failure(self.stage, [verdict])

    def canary_verdict(self, name: str, rows: np.ndarray, recorder: "probes.HiddenRecorder", tol: float,
                       gain: float) -> None:
        """A scoring process's answers on its canary rows against the training worker's at hand-over."""
        scored = torch.stack([recorder.probe[int(i)] for i in rows])
        reference = torch.stack([self.canary_ref[int(i)] for i in rows])
        verdict = canary.compare(f"probe:canary:{name}", scored, reference, tol, gain)
        self.checks.append(verdict)
        budget.raise_on_failure("probe", [verdict])

    @staticmethod
    def curve(losses: list, every: int = 100) -> list:
        """[[step, mean reported loss]] every 100 steps (the worker's report: informational)."""
        points = []
        for end in list(range(every, len(losses) + 1, every)) + ([len(losses)] if len(losses) % every else []):
            chunk = [l for l in losses[max(0, end - every):end] if l == l]
            if chunk:
                points.append([end, round(sum(chunk) / len(chunk), 4)])
        return points

    # ------------------------------------------------------------------ scoring workers
    def hidden_plan(self) -> "probes.HiddenPlan":
        """The scoring workers' secret sequences of batches with their canaries, drawn at the
        hand-over: the training worker answers the canary rows there (canary.py)."""
        spec = self.spec
        plan = probes.hidden_plan(self.val_x, spec.val_batch_size, power.causal_rows(spec),
                                  spec.probe_repeat_rows, spec.probe_vocab_columns, spec.vocab_size,
                                  spec.seed, self.rng, power.scoring_processes(spec, len(self.val_x)))
        self.result.update(audit=spec.audit, probe_power=power.summary(plan.positions_tested, None))
        self.canary_rows = canary.place(plan, self.val_x, spec.canary_rows, self.rng)
        return plan

    def canary_reference(self, worker: WorkerProcess, exchange: Exchange) -> dict:
        """The handed-over model's log-probabilities on every canary row (row id -> (T, C + 1)), at
        the run's precision, in batches of at most a validation batch's rows."""
        plan, refs = self.plan, {}
        rows = np.concatenate(self.canary_rows)
        t0 = time.perf_counter()
        for start in range(0, len(rows), self.max_rows):
            ids = rows[start:start + self.max_rows]
            logits = self.forward(worker, exchange, plan.probe_rows[ids], "eval", self.precision)
            logp = self.compared_log_probs(logits, self.val_y[plan.row_window[ids]], plan.columns)[1]
            refs.update((int(i), logp[k]) for k, i in enumerate(ids))
        self.timings["probes_s"] = self.timings.get("probes_s", 0.0) + time.perf_counter() - t0
        return refs

    def compared_log_probs(self, logits: torch.Tensor, targets, columns: torch.Tensor) -> tuple:
        """(the rows' stats, their (rows, T, C + 1) log-probabilities the hidden probes compare: on
        the secret columns, then on each position's true next token, `targets` (rows, T))."""
        where, chunk = scoring_plan(self.device, self.spec)
        targets = torch.as_tensor(targets)
        stats = row_stats(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), columns, chunk, where)
        return stats, stats.log_probs(torch.cat([stats.columns, stats.picked.unsqueeze(1)], 1)).view(*targets.shape, -1)

    def score_phase(self, state: dict) -> None:
        """Validation in fresh scoring processes (two, each with half the batches; probe copies of
        a window go to the process that does not score it), each replaying the training worker's
        windows first and answering its canaries among its batches and last."""
        spec = self.spec
        self.enter("validate")
        plan = self.plan
        recorder = probes.HiddenRecorder(plan, self.val_y)
        score = Score(len(self.val_x))
        tol = spec.probe_tol_bf16 if self.precision == "bf16" else spec.probe_tol_fp32
        gain = spec.probe_gain_tol_bf16 if self.precision == "bf16" else spec.probe_gain_tol_fp32
        self.timings.update(second_process_s=0.0, validation_s=0.0, judge_scoring_s=0.0)
        for name in [n for n in self.workers if n.startswith("score")][len(plan.runs):]:
            self.workers.pop(name).close()  # pre-spawned, never given candidate code
            self.exchanges.pop(name).close()
        step = 0
        for run, batches in enumerate(plan.runs):
            name = f"score{run}"
            self.enter("load_state")
            (self.run_dir / name).mkdir(mode=0o700, exist_ok=True)
            statefile.write(self.run_dir / name / STATE_FILE, state)
            worker, exchange = self.start(name, "score")
            meter = self.meter(worker, name, f"scoring worker {name}", f"scoring_budget:{name}")
            meter.open("scoring", spec.startup_cpu_s, prefix=True, start=0.0)
            t_start = time.perf_counter()
            with worker:
                try:
                    self.expect(worker, "hello")
                    self.expect(worker, "built")
                    self.timings["second_process_s"] += time.perf_counter() - t_start
                    self.replay(worker, exchange)
                    step = self.validate(worker, exchange, batches, score, recorder, step)
                    meter.close()
                    self.canary_verdict(name, self.canary_rows[run], recorder, tol, gain)
                finally:
                    self.peak_rss_mb = max(self.peak_rss_mb, worker.peak_rss_mb)
                    exchange.close()
            self.workers.pop(name).close()
            remove_tree(self.run_dir / name)
        del state
        if not score.complete:
            raise EvalFailure("validate", "evaluator_error", "not every validation window was scored")
        t1 = time.perf_counter()
        hidden = recorder.checks(tol, gain)
        self.checks.extend(hidden)
        self.timings["probes_s"] = self.timings.get("probes_s", 0.0) + time.perf_counter() - t1
        budget.raise_on_failure("probe", hidden)
        self.result.update(score.metrics())
        self.result["probe_power"] = power.summary(plan.positions_tested, self.result.get("val_loss"))

    def replay(self, worker: WorkerProcess, exchange: Exchange) -> None:
        """The fresh process must give the trained model's logits on the replay windows, in fp32
        whatever the run's precision: a bf16 comparison needs bf16's 0.1-nat tolerance, which let a
        table kept outside the state dict through (it moved log-probabilities by 0.05), and a
        compiled model's training-time and scoring-time bf16 graphs round apart by more than that."""
        self.enter("replay")
        spec, t0 = self.spec, time.perf_counter()
        alt = probes.full_log_probs(self.forward(worker, exchange, self.replay_x, "eval", "fp32"))
        everywhere = torch.ones(len(self.replay_x), spec.seq_len, dtype=torch.bool)
        replay = probes.compare("probe:replay", self.replay_ref, alt, everywhere, spec.probe_tol_fp32,
                                spec.probe_gain_tol_fp32, probes.REPLAY)
        del alt
        previous = next((c for c in self.checks if c["name"] == "probe:replay"), None)
        if previous is None:
            self.checks.append(replay)
        elif not replay["passed"]:
            self.checks[self.checks.index(previous)] = replay
        self.timings["probes_s"] = self.timings.get("probes_s", 0.0) + time.perf_counter() - t0
        budget.raise_on_failure("probe", [replay])

    def validate(self, worker: WorkerProcess, exchange: Exchange, batches: list, score: Score,
                 recorder: "probes.HiddenRecorder", step: int) -> int:
        """One scoring process's share: its validation batches in a random order with probe
        batches among them; the judge scores each batch as it arrives. Returns the next step."""
        from tqdm import tqdm

        spec = self.spec
        self.enter("validate")
        times, handover = [], 0.0
        heartbeat = spec.heartbeat_s
        plan = recorder.plan
        t0 = time.perf_counter()
        for kind, rows, probe_ids in tqdm(batches, desc="validate", file=sys.stderr,
                                          disable=not self.progress, mininterval=1.0):
            x = np.concatenate([self.val_x[rows], plan.probe_rows[probe_ids]])
            t_batch = time.perf_counter()
            logits = self.forward(worker, exchange, x, "eval", self.precision, heartbeat_s=heartbeat)
            times.append(time.perf_counter() - t_batch)
            if len(times) >= 3:
                heartbeat = max(spec.heartbeat_s, spec.heartbeat_factor * statistics.median(times))
            t_judge = time.perf_counter()
            n = len(rows)  # the batch's windows first, then its probe rows (targets: their windows')
            targets = torch.as_tensor(np.concatenate([self.val_y[rows], self.val_y[plan.row_window[probe_ids]]]))
            stats, logp = self.compared_log_probs(logits, targets, plan.columns)
            T = targets.shape[1]
            if n:
                score_batch(score, rows, stats.head(n * T), T)
                recorder.record_real(step, rows, logp[:n])
            if len(probe_ids):
                recorder.record_probe(step, probe_ids, logp[n:])
            handover += time.perf_counter() - t_judge
            step += 1
            if score.non_finite:
                raise EvalFailure("validate", "non_finite_logits",
                                  "the model produced NaN/Inf logits in validation")
        self.timings["validation_s"] += time.perf_counter() - t0
        self.timings["judge_scoring_s"] += handover
        return step


def _mean_tail(losses: list, n: int = 100) -> Optional[float]:
    tail = [l for l in losses[-n:] if l == l]
    return sum(tail) / len(tail) if tail else None
