"""One evaluation, run inside the worker process: data, build, checks, probes, train, validate.

:func:`run` returns a result dict (schema in :mod:`benchmark.result`) and never raises for a
candidate's fault. It is called by :mod:`benchmark.worker` in an isolated subprocess; the parent
(:mod:`benchmark.runner`) has already done the static checks and owns the time and memory limits.
"""

from __future__ import annotations

import ctypes
import logging
import os
import platform
from typing import Callable, Optional

import numpy as np
import torch

from . import guard, model_checks, probes
from .candidate import build, check_logits, import_candidate, split_output, tail_traceback
from .data import DataError, load_benchmark_data
from .result import EvalFailure, base_result, check, failure
from .spec import Spec
from .train import (Runtime, eval_windows, make_optimizer, resolve_runtime, train,
                    train_windows, validate)

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


def _forward_fn(model, rt: Runtime, vocab: int, grad: bool = False) -> Callable:
    def forward(x: torch.Tensor) -> torch.Tensor:
        x = x.to(rt.device)
        with torch.set_grad_enabled(grad), rt.autocast():
            logits, _ = split_output(model(x))
        check_logits(logits, x.shape[0], x.shape[1], vocab, "probe")
        if not bool(guard.isfinite(logits).all()):
            raise EvalFailure("probe", "non_finite_logits", "the model produced NaN/Inf logits")
        return logits.detach().float()
    return forward


def run(request: dict, report: Optional[Callable[[dict], None]] = None) -> dict:
    """Evaluates request["candidate"]; `report` receives progress dicts (stage, partial results)."""
    report = report or (lambda msg: None)
    spec: Spec = Spec().replace(**request.get("overrides", {}))
    mode = request.get("mode", "full")
    base = base_result(spec, mode, request.get("sha256"), request.get("display_path"),
                       request.get("checks", []))
    stage = "setup"

    def enter(name: str) -> None:
        nonlocal stage
        stage = name
        report({"type": "progress", "stage": name})

    clock = guard.perf_counter
    t_start = clock()
    try:
        rt = resolve_runtime(request.get("device", "cpu"), request.get("precision", spec.precision))
        base.update(precision=rt.precision, device=str(rt.device), environment=environment(rt))
        tune_allocator()
        enter("data")
        t0 = clock()
        try:
            data = load_benchmark_data(spec, data_dir=request.get("data_dir"),
                                       tokenizer_dir=request.get("tokenizer_dir"))
        except DataError as exc:
            raise EvalFailure("data", "data_error", str(exc)) from exc
        if data.vocab_size != spec.vocab_size:
            raise EvalFailure("data", "data_error", f"the tokenizer has {data.vocab_size} tokens; "
                                                    f"the spec says {spec.vocab_size}")
        windows = train_windows(data.train, spec.steps if mode == "full" else spec.smoke_steps,
                                spec.batch_size, spec.seq_len, spec.seed)
        val_x, val_y = eval_windows(data.eval, spec.seq_len, spec.val_tokens)
        probe_rng = np.random.default_rng([spec.seed, 0xC0FFEE])
        base["timings"]["data_s"] = clock() - t0

        enter("load")
        guard.seed_everything(spec.seed)
        module = import_candidate(request["candidate"])
        enter("build")
        t0 = clock()
        config = spec.model_config()
        guard.seed_everything(spec.seed)
        model = build(module, config).to(rt.device)
        base["timings"]["build_s"] = clock() - t0
        base["checks"].append(guard.verify("build"))
        top_k = getattr(model, "layer_top_k", None)
        base["layer_top_k"] = list(top_k) if isinstance(top_k, (list, tuple)) else None

        enter("budget")
        t0 = clock()
        counts = model_checks.parameter_counts(model, spec.vocab_size)
        model.eval()
        flops = model_checks.flops_per_token(_forward_fn(model, Runtime(rt.device, "fp32"), spec.vocab_size),
                                             spec.seq_len, rt.device)
        base["params"] = dict(counts, flops_per_token=flops)
        if not spec.experiment:
            structural = model_checks.structure_checks(model, spec) + model_checks.budget_checks(counts, flops, spec)
            base["checks"].extend(structural)
            model_checks.raise_on_failure("budget", structural)

        enter("probe")
        pre = _direct_probes(model, val_x, windows[0, :, :-1], spec, rt, probe_rng, "untrained")
        base["checks"].extend(pre)
        model_checks.raise_on_failure("probe", pre)
        base["timings"]["probes_s"] = clock() - t0
        guard.seed_everything(spec.seed)

        enter("train")
        optimizer, scheduler = make_optimizer(model, module, spec, config, rt.device)
        base["checks"].append(guard.verify("optimizer"))

        def on_progress(stats) -> None:
            report({"type": "progress", "stage": "train", "step": stats.steps,
                    "loss_curve": stats.curve()})

        stats = train(model, optimizer, scheduler, windows, spec, rt,
                      progress=request.get("progress", True), on_progress=on_progress,
                      check_every=10)
        base["checks"].append(guard.verify("train"))
        base["checks"].append(check("step_count", stats.steps == len(windows),
                                    f"{stats.steps} optimizer steps of batch {spec.batch_size}"))
        base.update(train_loss=stats.train_loss, loss_curve=stats.curve())
        n_tokens = spec.batch_size * spec.seq_len
        base["timings"].update(train_s=stats.train_s, step_ms_median=stats.step_ms_median,
                               tokens_per_s=n_tokens * stats.steps / stats.train_s if stats.train_s else None)
        if mode == "stage1":
            base.update(combined_score=spec.stage1_pass_score, valid=True, stage="done",
                        step_ms_median=stats.step_ms_median, param_count=counts["total"])
            base["timings"]["total_s"] = clock() - t_start
            return base

        enter("validate")
        t0 = clock()
        post = _direct_probes(model, val_x, windows[-1, :, :-1], spec, rt, probe_rng, "trained")
        base["checks"].extend(post)
        model_checks.raise_on_failure("probe", post)
        base["timings"]["probes_s"] += clock() - t0
        fingerprint = probes.state_fingerprint(model)
        hidden = probes.HiddenProbes(val_x, spec.val_batch_size, spec.probe_windows,
                                     spec.probe_vocab_columns, spec.vocab_size, probe_rng)
        vstats = validate(model, val_x, val_y, spec, rt, probes=hidden,
                          progress=request.get("progress", True))
        t0 = clock()
        unchanged = probes.state_fingerprint(model) == fingerprint
        after = [check("probe:state_unchanged", unchanged,
                       "parameters and buffers are bit-identical before and after validation"
                       if unchanged else
                       "parameters or buffers changed during validation (state across forward calls)")]
        after += hidden.checks(_tol(spec, rt))
        base["checks"].extend(after)
        base["checks"].append(guard.verify("validate"))
        model_checks.raise_on_failure("probe", after)
        base["timings"]["probes_s"] += clock() - t0
        base.update(vstats.metrics())
        base["timings"]["validation_s"] = vstats.validation_s
        base["timings"]["total_s"] = clock() - t_start
        base.update(valid=True, stage="done", step_ms_median=stats.step_ms_median,
                    param_count=counts["total"])
        return base
    except EvalFailure as exc:
        base["checks"].extend(c for c in exc.checks if c not in base["checks"])
        base["timings"]["total_s"] = clock() - t_start
        return failure(base, exc.stage if exc.stage != "forward" else stage, exc.error_type, exc.message)
    except BaseException as exc:  # a candidate's exception anywhere in the loop
        base["timings"]["total_s"] = clock() - t_start
        return failure(base, stage, "runtime_error",
                       f"{type(exc).__name__} during {stage}: {exc}", traceback=tail_traceback(exc))


def _tol(spec: Spec, rt: Runtime) -> float:
    return spec.probe_tol_bf16 if rt.precision == "bf16" else spec.probe_tol_fp32


def _direct_probes(model, val_x, train_x, spec: Spec, rt: Runtime, rng, prefix: str) -> list:
    """Causality (eval and train mode) and batch independence in fp32 with the tight tolerance,
    on `spec.probe_windows` validation windows and one training batch."""
    fp32 = Runtime(rt.device, "fp32")
    picked = torch.as_tensor(rng.choice(len(val_x), min(len(val_x), spec.probe_windows), replace=False))
    return probes.direct_probes(
        _forward_fn(model.eval(), fp32, spec.vocab_size),
        lambda x: _forward_fn(model.train(), fp32, spec.vocab_size, grad=True)(x),
        val_x[picked], train_x, spec.probe_tol_fp32, rng, spec.seed, rt.device, prefix)
