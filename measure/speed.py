"""Speed of an evaluation of the reference candidate on this machine.

Prints (and with --output writes as JSON):
  step_ms, dense_step_ms    median training step of the evaluator's loop, PLASA and dense schedules
  loop_step_ms, bare_step_ms   the evaluator's loop and a minimal hand-written loop, alternating on
                            one model: the evaluator's own overhead per step is their difference
  step_flops, peak_gflops, physical_ratio   FLOPs of one training step over a matmul peak
                            measured here: step_ms / ideal_ms
  memory_gbps               copy bandwidth (read + write) with the default threads
  validation_limit_s        the candidate's forward over every validation and probe token at the
                            matmul peak plus the logits written once and read twice at memory_gbps;
                            validation_over_limit and validation_fraction_at_limit compare with it
  judge: a real evaluation through the judge (evaluate_file, --eval-steps steps, the whole
  validation split) and where its time goes: data, build, training, validation, probes, the
  two fresh scoring processes, the judge's scoring of the handed-over logits, and the hand-over copy
  (measured here: one memcpy of each batch's logits into shared memory). judge_extra_s is what the
  judge design adds to an evaluation (second process + hand-over copies + hidden probe batches +
  replay), judge_extra_fraction that over the official evaluation's estimated wall time.

  and a table of each stage's seconds and share of the official evaluation, projected from the
  judged run (also for a saved run: --report speed.json).

    python measure/speed.py [--steps 150] [--eval-steps 100] [--precision auto|bf16|fp32] [--output speed.json]
"""

from __future__ import annotations

import argparse
import json
import math
import mmap
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmark.judge.data import eval_windows, load_benchmark_data, train_windows  # noqa: E402
from benchmark.judge import probes  # noqa: E402
from benchmark.judge.runner import evaluate_file  # noqa: E402
from benchmark.judge.tuning import resolve  # noqa: E402
from benchmark.spec import SPEC  # noqa: E402
from benchmark.worker import guard  # noqa: E402  (captured before any candidate import)
from benchmark.worker.candidate import import_candidate, split_output  # noqa: E402
from benchmark.worker.serve import tune_allocator  # noqa: E402
from benchmark.worker.train import Runtime, default_optimizer, loss_of, train  # noqa: E402

REPO = Path(__file__).resolve().parent.parent
WARMUP = 10


def build(module, schedule: str, device):
    guard.seed_everything(SPEC.seed)
    cfg = SPEC.model_config()
    return module.PLASAModel(vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, n_layers=cfg.n_layers,
                             n_heads=cfg.n_heads, max_seq_len=cfg.max_seq_len, schedule=schedule).to(device)


def loop_times(model, opt, windows, rt) -> list:
    """The evaluator's loop; step times from its heartbeats."""
    stamps = []
    train(model, opt, None, len(windows), lambda step: (windows[step], step == 0), SPEC, rt,
          lambda step, loss, flops: stamps.append(time.perf_counter()))
    return [b - a for a, b in zip(stamps, stamps[1:])]


def bare_steps(model, opt, windows, rt) -> list:
    """The minimum any loop must do: forward, loss, backward, clip, step."""
    params = list(model.parameters())
    times = []
    for step in range(len(windows)):
        t0 = time.perf_counter()
        with rt.autocast():
            logits, aux = split_output(model(windows[step, :, :-1]))
        loss = loss_of(logits, windows[step, :, 1:]) + aux.float()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, SPEC.grad_clip, foreach=True)
        opt.step()
        times.append(time.perf_counter() - t0)
    return times


def step_ms(module, schedule, windows, rt) -> float:
    model = build(module, schedule, rt.device)
    return 1000 * statistics.median(loop_times(model, default_optimizer(model, SPEC), windows, rt)[WARMUP:])


def overhead(module, windows, rt, rounds: int = 4) -> tuple:
    """(evaluator ms, bare ms): alternating rounds on one model, so drift hits both alike."""
    model = build(module, "progressive_sparse", rt.device)
    opt = default_optimizer(model, SPEC)
    ours, bare = [], []
    for _ in range(rounds):
        ours += loop_times(model, opt, windows, rt)[WARMUP:]
        bare += bare_steps(model, opt, windows, rt)[WARMUP:]
    return 1000 * statistics.median(ours), 1000 * statistics.median(bare)


def step_flops(module, windows, device) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    model = build(module, "progressive_sparse", device)
    opt = default_optimizer(model, SPEC)
    with FlopCounterMode(display=False) as counter:
        logits, aux = split_output(model(windows[0, :, :-1]))
        (loss_of(logits, windows[0, :, 1:]) + aux).backward()
        opt.step()
    return int(counter.get_total_flops())


def peak_gflops(precision: str, size: int = 2048, reps: int = 20) -> float:
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    for _ in range(3):
        a @ b
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    return 2 * size ** 3 * reps / (time.perf_counter() - t0) / 1e9


def memory_gbps(mib: int = 256, reps: int = 5) -> float:
    """Copy bandwidth (bytes read + written per second) with the default threads."""
    a = torch.empty(mib * 2 ** 18).normal_()
    b = torch.empty_like(a)
    b.copy_(a)
    best = math.inf
    for _ in range(reps):
        t0 = time.perf_counter()
        b.copy_(a)
        best = min(best, time.perf_counter() - t0)
    return 2 * a.numel() * 4 / best / 1e9


def validation_limit(tokens: int, flops_per_token: int, peak: float, gbps: float) -> dict:
    """The least time validation can take here: the candidate's forward at the matmul peak, and
    the logits (4 bytes x vocabulary per token) written once by the worker and read twice by the
    judge (max and log-sum-exp) at the copy bandwidth."""
    compute_s = tokens * flops_per_token / (peak * 1e9)
    logits_gb = tokens * SPEC.vocab_size * 4 / 1e9
    return {"val_logits_gb": logits_gb, "val_compute_limit_s": compute_s,
            "val_memory_limit_s": 3 * logits_gb / gbps, "validation_limit_s": compute_s + 3 * logits_gb / gbps}


def handover_s(precision: str, batches: int) -> float:
    """One copy of a validation batch's logits into a shared-memory mapping, times `batches`."""
    dtype = torch.bfloat16 if precision == "bf16" else torch.float32
    logits = torch.randn(SPEC.val_batch_size, SPEC.seq_len, SPEC.vocab_size).to(dtype)
    buf = mmap.mmap(-1, logits.numel() * logits.element_size())
    out = torch.frombuffer(buf, dtype=dtype, count=logits.numel())
    out.copy_(logits.reshape(-1))  # first touch
    times = []
    for _ in range(5):
        t0 = time.perf_counter()
        out.copy_(logits.reshape(-1))
        times.append(time.perf_counter() - t0)
    del out
    buf.close()
    return statistics.median(times) * batches


def judge_report(eval_steps: int, precision: str, step_ms_measured: float, n_windows: int) -> dict:
    result = evaluate_file(str(REPO / "initial_program.py"), overrides={"steps": eval_steps},
                           precision=precision, progress=False, use_cache=False)
    if not result.get("valid"):
        raise SystemExit(f"the reference failed: {result.get('error')}")
    t = result["timings"]
    n_val = math.ceil(n_windows / SPEC.val_batch_size)
    plan = probes.hidden_plan(np.zeros((n_windows, SPEC.seq_len), dtype=np.int64), SPEC.val_batch_size,
                              SPEC.probe_causal_rows, SPEC.probe_repeat_rows, SPEC.probe_vocab_columns,
                              SPEC.vocab_size, SPEC.seed, np.random.default_rng(0))
    n_probe = sum(kind == "probe" for kind, _, _ in plan.batches)
    forward_s = (t["validation_s"] - t["judge_scoring_s"]) / (n_val + n_probe)
    copy_s = handover_s(result["precision"], n_val + n_probe)
    official_s = t["wall_s"] + (SPEC.steps - eval_steps) * step_ms_measured / 1000
    extra = t["second_process_s"] + copy_s + n_probe * forward_s
    stages = {k: t.get(k) for k in ("data_s", "build_s", "train_s", "probes_s", "second_process_s",
                                    "validation_s", "judge_scoring_s", "wall_s")}
    flops_per_token = (result.get("params") or {}).get("flops_per_token") or 0
    return {"judge_eval_steps": eval_steps, **{f"judge_{k}": v for k, v in stages.items()},
            "forward_flops_per_token": flops_per_token,
            "val_forward_tokens": (n_val + n_probe) * SPEC.val_batch_size * SPEC.seq_len,
            "judge_val_ppl": result["val_ppl"], "judge_handover_copy_s": copy_s,
            "judge_probe_batches": n_probe, "judge_probe_batches_s": n_probe * forward_s, "official_estimate_s": official_s,
            "judge_extra_s": extra, "judge_extra_fraction": extra / official_s,
            "validation_fraction": t["validation_s"] / official_s}


def stage_shares(report: dict) -> dict:
    """Seconds and share of each stage of the projected official evaluation: the judged run's
    stages with the official steps beyond its own at the measured median step (as
    official_estimate_s); "start-up" is the rest of the run's wall time (processes, imports, the
    judge's state and worker start)."""
    train = report["judge_train_s"] + (SPEC.steps - report["judge_eval_steps"]) * report["step_ms"] / 1000
    forward = report["judge_validation_s"] - report["judge_judge_scoring_s"]
    stages = {"data": report["judge_data_s"], "build": report["judge_build_s"], "train": train,
              "probes": report["judge_probes_s"], "second process": report["judge_second_process_s"],
              "validation forward + hand-over": forward, "judge scoring": report["judge_judge_scoring_s"]}
    known = sum(stages.values()) - train + report["judge_train_s"]
    stages = {"start-up": max(0.0, report["judge_wall_s"] - known), **stages}
    total = sum(stages.values())
    return {name: (seconds, seconds / total) for name, seconds in stages.items()}


def print_shares(report: dict) -> None:
    shares = stage_shares(report)
    total = sum(s for s, _ in shares.values())
    print(f"\nofficial evaluation ({SPEC.steps} steps), projected from the judged run:")
    for name, (seconds, share) in shares.items():
        print(f"{name:>32}: {seconds:7.1f} s  {100 * share:5.1f}%")
    print(f"{'total':>32}: {total:7.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--eval-steps", type=int, default=100, help="steps of the judged evaluation")
    parser.add_argument("--precision", choices=("auto", "bf16", "fp32"))
    parser.add_argument("--output")
    parser.add_argument("--report", metavar="JSON", help="print the stage table of a saved run and exit")
    args = parser.parse_args()
    if args.report:
        print_shares(json.loads(Path(args.report).read_text()))
        return

    tune_allocator()
    # the step at this process's threads (what an evaluation's workers get unless tuning picks fewer)
    precision, _, _ = resolve("cpu", args.precision, torch.get_num_threads())
    rt = Runtime(torch.device("cpu"), precision)
    data = load_benchmark_data(SPEC)
    module = import_candidate(str(REPO / "initial_program.py"), "reference_candidate")
    windows = torch.from_numpy(train_windows(data.train, args.steps, SPEC.batch_size, SPEC.seq_len, SPEC.seed))

    report = {"precision": precision, "threads": torch.get_num_threads(), "torch": torch.__version__,
              "steps_timed": args.steps - WARMUP}
    report["step_ms"] = step_ms(module, "progressive_sparse", windows, rt)
    report["dense_step_ms"] = step_ms(module, "dense_baseline", windows, rt)
    report["sparse_over_dense"] = report["step_ms"] / report["dense_step_ms"]
    loop_ms, bare_ms = overhead(module, windows[: max(WARMUP + 20, args.steps // 3)], rt)
    report["loop_step_ms"], report["bare_step_ms"] = loop_ms, bare_ms
    report["overhead_ms_per_step"] = loop_ms - bare_ms
    report["step_flops"] = step_flops(module, windows, rt.device)
    report["peak_gflops"] = peak_gflops(precision)
    report["ideal_step_ms"] = report["step_flops"] / (report["peak_gflops"] * 1e9) * 1000
    report["physical_ratio"] = report["step_ms"] / report["ideal_step_ms"]
    n_windows = len(eval_windows(data.eval, SPEC.seq_len, None)[0])
    report["memory_gbps"] = memory_gbps()
    report.update(judge_report(args.eval_steps, args.precision, report["step_ms"], n_windows))
    report.update(validation_limit(report["val_forward_tokens"], report["forward_flops_per_token"],
                                   report["peak_gflops"], report["memory_gbps"]))
    report["validation_over_limit"] = report["judge_validation_s"] / report["validation_limit_s"]
    # the validation share an official evaluation would have with validation at its limit and the
    # rest as measured: the floor of validation_fraction on this machine
    rest = report["official_estimate_s"] - report["judge_validation_s"]
    report["validation_fraction_at_limit"] = report["validation_limit_s"] / (rest + report["validation_limit_s"])

    for key, value in report.items():
        print(f"{key:>26}: {value:.4g}" if isinstance(value, float) else f"{key:>26}: {value}")
    print_shares(report)
    if args.output:
        Path(args.output).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
