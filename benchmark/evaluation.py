"""One evaluation, run inside the worker process: data, build, checks, probes, train, validate.

:func:`run` returns a result dict (schema in :mod:`benchmark.result`) and never raises for a
candidate's fault. It is called by :mod:`benchmark.worker` in an isolated subprocess; the parent
(:mod:`benchmark.runner`) has already done the static checks and owns the time and memory limits.
Each stage is one method of :class:`Evaluation` and adds its checks and timings to the result.
"""

from __future__ import annotations

import ctypes
import logging
import platform
from typing import Callable, Optional

import numpy as np
import torch

from . import guard, model_checks, probes
from .candidate import build, import_candidate, tail_traceback
from .data import DataError, load_benchmark_data
from .result import EvalFailure, base_result, check, failure
from .spec import Spec
from .train import (Runtime, TrainStats, eval_windows, forward_logits, make_optimizer,
                    resolve_runtime, train, train_windows, validate)

log = logging.getLogger(__name__)

MODES = ("full", "stage1")


def tune_allocator() -> None:
    """Keep freed memory in the process: glibc returning it to the OS each step costs ~1/3 of a
    CPU training step in page faults (M_MMAP_THRESHOLD = 256 MiB, M_TRIM_THRESHOLD = 1 GiB)."""
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, 256 << 20)  # M_MMAP_THRESHOLD
        libc.mallopt(-1, 1 << 30)    # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def environment(rt: Runtime) -> dict:
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((l.split(":", 1)[1].strip() for l in fh if l.startswith("model name")), cpu)
    except OSError:
        pass
    return {"torch": torch.__version__, "python": platform.python_version(),
            "threads": torch.get_num_threads(), "cpu": cpu, "device": str(rt.device),
            "device_name": torch.cuda.get_device_name(rt.device) if rt.device.type == "cuda" else cpu}


def probe_forward(model, rt: Runtime, vocab: int, training: bool = False) -> Callable:
    """input_ids -> detached fp32 logits, failing on NaN/Inf: the forward pass the probes compare.
    training=True runs it as a training step would (train mode, autograd on)."""
    def forward(x: torch.Tensor) -> torch.Tensor:
        model.train(training)
        logits = forward_logits(model, x.to(rt.device), rt, vocab, "probe", grad=training)
        if not bool(guard.isfinite(logits).all()):
            raise EvalFailure("probe", "non_finite_logits", "the model produced NaN/Inf logits")
        return logits.detach().float()
    return forward


def run(request: dict, report: Optional[Callable[[dict], None]] = None) -> dict:
    """Evaluates request["candidate"]; `report` receives progress dicts (stage, partial results)."""
    return Evaluation(request, report or (lambda msg: None)).run()


class Evaluation:
    """The stages of one evaluation, in order; `self.result` holds whatever is known so far."""

    def __init__(self, request: dict, report: Callable[[dict], None]) -> None:
        self.request, self.report = request, report
        self.spec: Spec = Spec().replace(**request.get("overrides", {}))
        self.mode = request.get("mode", "full")
        self.result = base_result(self.spec, self.mode, request.get("sha256"), request.get("display_path"),
                                  request.get("checks", []))
        self.timings = self.result["timings"]
        self.checks = self.result["checks"]
        self.stage = "setup"
        self.clock = guard.perf_counter
        self.probe_rng = np.random.default_rng([self.spec.seed, 0xC0FFEE])
        self.progress = request.get("progress", True)

    def run(self) -> dict:
        t_start = self.clock()
        try:
            self.setup()
            self.load_data()
            module, config, model = self.build()
            self.budget(model)
            self.direct_probes(model, self.windows[0, :, :-1], "untrained")
            stats = self.train(module, config, model)
            if self.mode == "stage1":
                self.result.update(combined_score=self.spec.stage1_pass_score)
            else:
                self.validate(model)
            self.timings["total_s"] = self.clock() - t_start
            self.result.update(valid=True, stage="done", step_ms_median=stats.step_ms_median,
                               param_count=self.result["params"]["total"])
            return self.result
        except EvalFailure as exc:
            self.checks.extend(c for c in exc.checks if c not in self.checks)
            self.timings["total_s"] = self.clock() - t_start
            return failure(self.result, exc.stage if exc.stage != "forward" else self.stage,
                           exc.error_type, exc.message)
        except BaseException as exc:  # a candidate's exception anywhere in the loop
            self.timings["total_s"] = self.clock() - t_start
            return failure(self.result, self.stage, "runtime_error",
                           f"{type(exc).__name__} during {self.stage}: {exc}", traceback=tail_traceback(exc))

    def enter(self, stage: str) -> None:
        self.stage = stage
        self.report({"type": "progress", "stage": stage})

    def setup(self) -> None:
        self.rt = resolve_runtime(self.request.get("device", "cpu"),
                                  self.request.get("precision", self.spec.precision))
        self.result.update(precision=self.rt.precision, device=str(self.rt.device),
                           environment=environment(self.rt))
        tune_allocator()

    def load_data(self) -> None:
        """Training windows (the evaluator's batch order) and validation windows."""
        self.enter("data")
        spec, t0 = self.spec, self.clock()
        try:
            data = load_benchmark_data(spec, data_dir=self.request.get("data_dir"),
                                       tokenizer_dir=self.request.get("tokenizer_dir"))
        except DataError as exc:
            raise EvalFailure("data", "data_error", str(exc)) from exc
        if data.vocab_size != spec.vocab_size:
            raise EvalFailure("data", "data_error", f"the tokenizer has {data.vocab_size} tokens; "
                                                    f"the spec says {spec.vocab_size}")
        steps = spec.steps if self.mode == "full" else spec.smoke_steps
        self.windows = train_windows(data.train, steps, spec.batch_size, spec.seq_len, spec.seed)
        self.val_x, self.val_y = eval_windows(data.eval, spec.seq_len, spec.val_tokens)
        self.timings["data_s"] = self.clock() - t0

    def build(self) -> tuple:
        self.enter("load")
        guard.seed_everything(self.spec.seed)
        module = import_candidate(self.request["candidate"])
        self.enter("build")
        t0 = self.clock()
        config = self.spec.model_config()
        guard.seed_everything(self.spec.seed)
        model = build(module, config).to(self.rt.device)
        self.timings["build_s"] = self.clock() - t0
        self.checks.append(guard.verify("build"))
        top_k = getattr(model, "layer_top_k", None)
        self.result["layer_top_k"] = list(top_k) if isinstance(top_k, (list, tuple)) else None
        return module, config, model

    def budget(self, model) -> None:
        """Parameter and FLOP counts; for official runs, the architecture and budget checks."""
        self.enter("budget")
        spec, t0 = self.spec, self.clock()
        counts = model_checks.parameter_counts(model, spec.vocab_size)
        fp32 = Runtime(self.rt.device, "fp32")
        flops = model_checks.flops_per_token(probe_forward(model, fp32, spec.vocab_size),
                                             spec.seq_len, self.rt.device)
        self.result["params"] = dict(counts, flops_per_token=flops)
        if not spec.experiment:
            structural = (model_checks.structure_checks(model, spec)
                          + model_checks.budget_checks(counts, flops, spec))
            self.checks.extend(structural)
            model_checks.raise_on_failure("budget", structural)
        self.timings["probes_s"] = self.timings.get("probes_s", 0.0) + self.clock() - t0

    def direct_probes(self, model, train_x: torch.Tensor, prefix: str) -> None:
        """Causality (eval and train mode) and batch independence in fp32 with the tight
        tolerance, on `spec.probe_windows` validation windows and one training batch."""
        self.enter("probe")
        spec, t0 = self.spec, self.clock()
        fp32 = Runtime(self.rt.device, "fp32")
        picked = torch.as_tensor(self.probe_rng.choice(len(self.val_x), min(len(self.val_x), spec.probe_windows),
                                                       replace=False))
        results = probes.direct_probes(
            probe_forward(model, fp32, spec.vocab_size),
            probe_forward(model, fp32, spec.vocab_size, training=True),
            self.val_x[picked], train_x, spec.probe_tol_fp32, self.probe_rng, spec.seed,
            self.rt.device, prefix)
        self.checks.extend(results)
        model_checks.raise_on_failure("probe", results)
        self.timings["probes_s"] = self.timings.get("probes_s", 0.0) + self.clock() - t0

    def train(self, module, config, model) -> TrainStats:
        spec = self.spec
        guard.seed_everything(spec.seed)
        self.enter("train")
        optimizer, scheduler = make_optimizer(model, module, spec, config, self.rt.device)
        self.checks.append(guard.verify("optimizer"))

        def on_progress(stats: TrainStats) -> None:
            self.report({"type": "progress", "stage": "train", "step": stats.steps,
                         "loss_curve": stats.curve()})

        stats = train(model, optimizer, scheduler, self.windows, spec, self.rt,
                      progress=self.progress, on_progress=on_progress, check_every=10)
        self.checks.append(guard.verify("train"))
        self.checks.append(check("step_count", stats.steps == len(self.windows),
                                 f"{stats.steps} optimizer steps of batch {spec.batch_size}"))
        self.result.update(train_loss=stats.train_loss, loss_curve=stats.curve())
        n_tokens = spec.batch_size * spec.seq_len
        self.timings.update(train_s=stats.train_s, step_ms_median=stats.step_ms_median,
                            tokens_per_s=n_tokens * stats.steps / stats.train_s if stats.train_s else None)
        return stats

    def validate(self, model) -> None:
        """The trained model's direct probes, then validation with a hidden probe batch among the
        real batches, then the state and hidden-probe checks."""
        spec = self.spec
        self.direct_probes(model, self.windows[-1, :, :-1], "trained")
        self.enter("validate")
        fingerprint = probes.state_fingerprint(model)
        hidden = probes.HiddenProbes(self.val_x, spec.val_batch_size, spec.probe_windows,
                                     spec.probe_vocab_columns, spec.vocab_size, self.probe_rng)
        vstats = validate(model, self.val_x, self.val_y, spec, self.rt, probes=hidden, progress=self.progress)
        t0 = self.clock()
        unchanged = probes.state_fingerprint(model) == fingerprint
        after = [check("probe:state_unchanged", unchanged,
                       "parameters and buffers are bit-identical before and after validation"
                       if unchanged else
                       "parameters or buffers changed during validation (state across forward calls)")]
        after += hidden.checks(spec.probe_tol_bf16 if self.rt.precision == "bf16" else spec.probe_tol_fp32)
        self.checks.extend(after)
        self.checks.append(guard.verify("validate"))
        model_checks.raise_on_failure("probe", after)
        self.timings["probes_s"] += self.clock() - t0
        self.result.update(vstats.metrics())
        self.timings["validation_s"] = vstats.validation_s
