"""Speed of an evaluation of the reference candidate, measured in one process.

Prints (and with --output writes as JSON):
  step_ms             median training step of the evaluator's loop (bf16 where supported)
  dense_step_ms       the same for a dense causal model of the same sizes (schedule
                      dense_baseline): the indexer and top-k overhead is step_ms / dense_step_ms
  loop_step_ms, bare_step_ms   the evaluator's loop and a minimal hand-written loop doing the same
                      work, alternating on one model: the evaluator's own overhead per step is
                      their difference
  step_flops, peak_gflops, physical_ratio   FLOPs of one training step (FlopCounterMode,
                      forward + backward) over a matmul peak measured here: step_ms / ideal_ms
  validation_s        one pass over the whole validation split, hidden probe batch included
  full_run_estimate_s 1000 steps x step_ms + validation + data/build/probe set-up

    python benchmarks/speed.py [--steps 150] [--precision bf16|fp32] [--output speed.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmark import guard  # noqa: E402  (captured before any candidate import)
from benchmark.candidate import import_candidate, split_output  # noqa: E402
from benchmark.data import load_benchmark_data  # noqa: E402
from benchmark.evaluation import tune_allocator  # noqa: E402
from benchmark.probes import HiddenProbes  # noqa: E402
from benchmark.spec import SPEC  # noqa: E402
from benchmark.train import (default_optimizer, eval_windows, loss_of, resolve_runtime,  # noqa: E402
                             train, train_windows, validate)

REPO = Path(__file__).resolve().parent.parent
WARMUP = 10


def build(module, schedule: str, device):
    guard.seed_everything(SPEC.seed)
    cfg = SPEC.model_config()
    return module.PLASAModel(vocab_size=cfg.vocab_size, hidden_size=cfg.hidden_size, n_layers=cfg.n_layers,
                             n_heads=cfg.n_heads, max_seq_len=cfg.max_seq_len, schedule=schedule).to(device)


def evaluator_step_ms(module, schedule, windows, rt) -> float:
    model = build(module, schedule, rt.device)
    stats = train(model, default_optimizer(model, SPEC, rt.device), None, windows, SPEC, rt, progress=False)
    return 1000 * statistics.median(stats.step_times[WARMUP:])


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


def overhead(module, windows, rt, rounds: int = 4) -> tuple:
    """(evaluator ms, bare ms): alternating rounds on one model, so drift hits both alike."""
    model = build(module, "progressive_sparse", rt.device)
    opt = default_optimizer(model, SPEC, rt.device)
    ours, bare = [], []
    for _ in range(rounds):
        ours += train(model, opt, None, windows, SPEC, rt, progress=False).step_times[WARMUP:]
        bare += bare_steps(model, opt, windows, rt)[WARMUP:]
    return 1000 * statistics.median(ours), 1000 * statistics.median(bare)


def step_flops(module, windows, device) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    model = build(module, "progressive_sparse", device)
    with FlopCounterMode(display=False) as counter:
        logits, aux = split_output(model(windows[0, :, :-1]))
        (loss_of(logits, windows[0, :, 1:]) + aux).backward()
    return int(counter.get_total_flops())


def peak_gflops(rt, size: int = 2048, reps: int = 20) -> float:
    dtype = torch.bfloat16 if rt.precision == "bf16" else torch.float32
    a = torch.randn(size, size, device=rt.device, dtype=dtype)
    b = torch.randn(size, size, device=rt.device, dtype=dtype)
    for _ in range(3):
        a @ b
    rt.sync()
    t0 = time.perf_counter()
    for _ in range(reps):
        a @ b
    rt.sync()
    return 2 * size ** 3 * reps / (time.perf_counter() - t0) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--precision", choices=("bf16", "fp32"))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--output")
    args = parser.parse_args()

    tune_allocator()
    rt = resolve_runtime(args.device, args.precision)
    t0 = time.perf_counter()
    data = load_benchmark_data(SPEC)
    module = import_candidate(str(REPO / "initial_program.py"), "reference_candidate")
    setup_s = time.perf_counter() - t0
    windows = train_windows(data.train, args.steps, SPEC.batch_size, SPEC.seq_len, SPEC.seed).to(rt.device)

    report = {"precision": rt.precision, "device": str(rt.device), "threads": torch.get_num_threads(),
              "torch": torch.__version__, "steps_timed": args.steps - WARMUP}
    report["step_ms"] = evaluator_step_ms(module, "progressive_sparse", windows, rt)
    report["dense_step_ms"] = evaluator_step_ms(module, "dense_baseline", windows, rt)
    report["sparse_over_dense"] = report["step_ms"] / report["dense_step_ms"]
    loop_ms, bare_ms = overhead(module, windows[: max(WARMUP + 20, args.steps // 3)], rt)
    report["loop_step_ms"], report["bare_step_ms"] = loop_ms, bare_ms
    report["overhead_ms_per_step"] = loop_ms - bare_ms
    report["overhead_fraction"] = report["overhead_ms_per_step"] / loop_ms
    report["step_flops"] = step_flops(module, windows, rt.device)
    report["peak_gflops"] = peak_gflops(rt)
    ideal_ms = report["step_flops"] / (report["peak_gflops"] * 1e9) * 1000
    report["ideal_step_ms"] = ideal_ms
    report["physical_ratio"] = report["step_ms"] / ideal_ms

    model = build(module, "progressive_sparse", rt.device)
    val_x, val_y = eval_windows(data.eval, SPEC.seq_len, None)
    import numpy as np

    hidden = HiddenProbes(val_x, SPEC.val_batch_size, SPEC.probe_windows, SPEC.probe_vocab_columns,
                          SPEC.vocab_size, np.random.default_rng(0))
    vstats = validate(model, val_x, val_y, SPEC, rt, probes=hidden, progress=False)
    report["validation_s"] = vstats.validation_s
    report["validation_tokens"] = vstats.count
    report["setup_s"] = setup_s
    report["full_run_estimate_s"] = SPEC.steps * report["step_ms"] / 1000 + vstats.validation_s + setup_s

    for key, value in report.items():
        print(f"{key:>22}: {value:.4g}" if isinstance(value, float) else f"{key:>22}: {value}")
    if args.output:
        Path(args.output).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
