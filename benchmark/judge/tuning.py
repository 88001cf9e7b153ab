"""How an evaluation runs on the machine it runs on: its precision and its workers' threads,
chosen by measurement.

Precision. bf16 autocast is not faster on every CPU: reported on a Sapphire Rapids Xeon (AMX), a
training step of the reference was no faster in bf16 (ratio 1.03), and a CPU without native bf16
emulates it: 13x slower than fp32 on this project's AMD EPYC (the step below, measured). So on a
CPU "auto" (the spec's default) picks bf16 only where the CPU supports it and a training step
shaped like the reference's is at least ``MIN_SPEEDUP`` faster in bf16. On CUDA "auto" is bf16
where the GPU supports it.

Threads. A model 128 wide gains nothing from dozens of threads, and their synchronisation can
cost more than they add, so the workers run with the fewest threads (1, 2, 4, ... up to the
judge's own count, which OMP_NUM_THREADS caps) whose fp32 step is within ``THREAD_TOLERANCE`` of
the fastest, unless the caller fixes the count.

Both are measured on a quiet machine only. While measuring, the judge watches the rest of the
machine and the spread between repeats (:mod:`benchmark.judge.load`); measured under load, the
figures are recorded but not kept, and the run uses a safe default (``DEFAULT_THREADS``, fp32). A
measurement whose repeats alone disagree (the rest of the machine idle) is taken once more before
it counts as loaded. A later evaluation measures again (after ``load.RETRY_S``, so evaluations
starting together on a busy machine do not all measure). A quiet measurement is kept in
PLASA_CACHE_DIR/tuning/ per machine (CPU model, torch version, thread cap). When an evaluation's
own steps run far faster than its kept profile says they can (``CONTRADICTION``), the profile was
slowed by a load the checks missed: :func:`review` forgets it, and the next evaluation measures
again. The matmul peak of the CPU budget checks (:mod:`benchmark.judge.peak`) is kept the same way,
once quiet.

The result records which profile a run used and how it was measured (``precision``, ``tuning``:
``source`` cache, measured or default, ``profile``, ``under_load``, ``load``, the step times, the
matmul peak). Runs in the judge's process on synthetic tensors: no candidate code.
"""

from __future__ import annotations

import json
import logging
import os
import statistics
import time
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from . import load, machine
from .peak import matmul_peak
from ..fsutil import atomic_write, locked
from ..spec import SPEC

log = logging.getLogger(__name__)

PRECISIONS = ("auto", "bf16", "fp32")
MIN_SPEEDUP = 1.10       # bf16 is chosen when its step takes at most 1/1.10 of fp32's
THREAD_TOLERANCE = 1.05  # the fewest threads within 5% of the fastest count
STEPS, WARMUP = 6, 2
FORMAT = 2               # of a kept profile; 1 (before load detection) may have been measured under load
DEFAULT_THREADS = 4      # the safe default's cap: every core of a small machine (2 measured best on
                         # a 2-core EPYC, where a loaded tuning chose 1), never dozens on a large one
CONTRADICTION = 1.5      # a run's step this much faster (per counted FLOP) than its profile's: forget it


def bf16_supported(device: str) -> bool:
    """Native bf16 on `device`: on CUDA compute capability 8.0+ (Ampere on), since
    torch.cuda.is_bf16_supported() also counts emulation, far slower than fp32 on a V100 or T4."""
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            return False
        index = int(device.partition(":")[2] or 0)
        return torch.cuda.get_device_capability(index)[0] >= 8 and torch.cuda.is_bf16_supported(including_emulation=False)
    return (torch.backends.mkldnn.is_available()
            and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()))


def reference_step_s(precision: str, **shape) -> float:
    """Median seconds of :func:`reference_step_times`."""
    return statistics.median(reference_step_times(precision, **shape))


def reference_step_times(precision: str, tokens: int = SPEC.batch_size * SPEC.seq_len,
                         seq_len: int = SPEC.seq_len, hidden: int = SPEC.hidden_size,
                         vocab: int = SPEC.vocab_size, layers: int = SPEC.n_layers,
                         steps: int = STEPS) -> list:
    """Seconds of each of `steps` forward + backward + AdamW steps (after untimed warm-up) shaped
    like the reference's (per layer a fused qkv, causal attention and an output projection, a
    SwiGLU of width 4x, norms; an untied output head over the whole vocabulary and an fp32
    cross-entropy) in `precision` on this CPU with the current torch threads."""
    gen = torch.Generator().manual_seed(0)
    emb = torch.nn.Embedding(vocab, hidden)
    blocks = torch.nn.ModuleList(torch.nn.ModuleDict({
        "qkv": torch.nn.Linear(hidden, 3 * hidden, bias=False),
        "out": torch.nn.Linear(hidden, hidden, bias=False),
        "up": torch.nn.Linear(hidden, 8 * hidden, bias=False),
        "down": torch.nn.Linear(4 * hidden, hidden, bias=False)}) for _ in range(layers))
    head = torch.nn.Linear(hidden, vocab, bias=False)
    params = [*emb.parameters(), *blocks.parameters(), *head.parameters()]
    opt = torch.optim.AdamW(params, lr=1e-4, fused=True)
    heads = max(1, hidden // 32)
    ids = torch.randint(0, vocab, (tokens + 1,), generator=gen)
    autocast = (torch.autocast("cpu", dtype=torch.bfloat16) if precision == "bf16"
                else torch.autocast("cpu", enabled=False))
    times = []
    for i in range(WARMUP + steps):
        t0 = time.perf_counter()
        with autocast:
            x = emb(ids[:-1]).view(-1, seq_len, hidden)
            for block in blocks:
                h = F.rms_norm(x, (hidden,))
                q, k, v = (t.unflatten(-1, (heads, -1)).transpose(1, 2)
                           for t in block["qkv"](h).chunk(3, -1))
                att = F.scaled_dot_product_attention(q, k, v, is_causal=True)
                x = x + block["out"](att.transpose(1, 2).flatten(-2))
                gate, up = block["up"](F.rms_norm(x, (hidden,))).chunk(2, -1)
                x = x + block["down"](F.silu(gate) * up)
            logits = head(F.rms_norm(x, (hidden,)))
        loss = F.cross_entropy(logits.float().flatten(0, 1), ids[1:])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if i >= WARMUP:
            times.append(time.perf_counter() - t0)
    return times


def _machine_key() -> str:
    """The machine, torch, the thread cap and the tuning's own settings."""
    return machine.key(FORMAT, torch.get_num_threads(), MIN_SPEEDUP, THREAD_TOLERANCE, STEPS)


def thread_counts(cap: int) -> list:
    """1, 2, 4, ... below `cap`, and `cap`."""
    counts, n = [], 1
    while n < cap:
        counts.append(n)
        n *= 2
    return counts + [max(1, cap)]


def measure_machine(measure: Optional[Callable[[str], list]] = None, bf16: bool = False,
                    others: Optional[Callable[[], float]] = None) -> dict:
    """The fp32 step at each thread count, the fewest threads near the fastest, and (where the CPU
    supports bf16) fp32 against bf16 at that count, watched for load: {"threads",
    "step_ms_by_threads", "fp32_step_ms", "bf16_step_ms", "speedup", "precision", "load"}.
    `measure(precision)` gives the seconds of each repeat (:func:`reference_step_times`)."""
    measure = measure or reference_step_times
    cap = torch.get_num_threads()
    by_threads, spreads = {}, []

    def median(precision: str) -> float:
        times = list(measure(precision))
        spreads.append(load.spread(times))
        return statistics.median(times)

    try:
        with load.Watch(others) as watch:
            for n in thread_counts(cap):
                torch.set_num_threads(n)
                by_threads[n] = median("fp32") if cap > 1 else None
            fastest = min((t for t in by_threads.values() if t is not None), default=None)
            threads = (min(n for n, t in by_threads.items() if t is not None and t <= THREAD_TOLERANCE * fastest)
                       if fastest is not None else cap)
            torch.set_num_threads(threads)
            fp32 = by_threads[threads] if by_threads[threads] is not None else (median("fp32") if bf16 else None)
            bf16_s = median("bf16") if bf16 else None
    finally:
        torch.set_num_threads(cap)
    speedup = fp32 / bf16_s if bf16_s else None
    ms = (lambda s: round(1000 * s, 2) if s is not None else None)  # noqa: E731
    return {"threads": threads, "step_ms_by_threads": {str(n): ms(t) for n, t in by_threads.items()},
            "fp32_step_ms": ms(fp32), "bf16_step_ms": ms(bf16_s),
            "speedup": round(speedup, 3) if speedup else None,
            "precision": "bf16" if speedup and speedup >= MIN_SPEEDUP else "fp32",
            "load": load.verdict(watch, spreads)}


def default_threads(cap: Optional[int] = None) -> int:
    return max(1, min(cap or torch.get_num_threads(), DEFAULT_THREADS))


def _kept(path) -> Optional[dict]:
    try:
        profile = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    ok = (isinstance(profile, dict) and profile.get("precision") in ("bf16", "fp32")
          and isinstance(profile.get("threads"), int) and isinstance(profile.get("load"), dict))
    return profile if ok else None


def _default(profile: dict, ago_s: float) -> dict:
    """The safe default of a run whose tuning was measured under load: fp32 and
    :func:`default_threads`, with the loaded figures for the record."""
    profile = {k: v for k, v in profile.items() if k != "at"}
    return dict(profile, threads=default_threads(), precision="fp32", measured_threads=profile["threads"],
                measured_precision=profile["precision"], source="default", profile=None, under_load=True,
                measured_ago_s=round(ago_s, 1))


def machine_profile(bf16: bool, measure: Optional[Callable[[str], list]] = None,
                    others: Optional[Callable[[], float]] = None) -> dict:
    """:func:`measure_machine`, from PLASA_CACHE_DIR/tuning/ when this machine, torch and thread cap
    were measured quiet before (with bf16 where `bf16` asks for it). Measured under load: the safe
    default, nothing kept, and (for load.RETRY_S) later calls take the default unmeasured. Adds
    "source" (cache, measured or default), "profile" (the kept profile's name), "under_load",
    "measured_threads" and "measured_precision"."""
    name = f"{_machine_key()}-{'bf16' if bf16 else 'fp32'}"
    path = machine.kept(name)
    busy = path.with_suffix(".busy")

    def known() -> Optional[dict]:
        if (profile := _kept(path)) is not None:
            return dict(profile, source="cache", profile=name, under_load=False,
                        measured_threads=profile["threads"], measured_precision=profile["precision"])
        loaded = _kept(busy)
        if loaded is not None and 0 <= time.time() - loaded.get("at", 0) < load.RETRY_S:
            return _default(loaded, time.time() - loaded["at"])
        return None

    def measured() -> dict:
        profile = measure_machine(measure, bf16, others)
        if profile["load"]["loaded"] and profile["load"]["other_cores"] <= load.limit():
            # only the repeats disagreed while the rest of the machine was idle: more often a stray
            # burst (a virtual machine's neighbour, a first call's kernel set-up) than load, and a
            # spread of 29% on a quiet 2-core EPYC once sent a run to fp32 where bf16 measured 1.3x
            # faster. Measure once more; load that lasts shows again.
            profile = measure_machine(measure, bf16, others)
        if profile["load"]["loaded"]:
            log.warning("this machine was busy while the evaluation measured its threads and precision (%s): "
                        "this run uses %d threads and fp32, and keeps nothing; an evaluation after %d s "
                        "measures again (the result's 'tuning' records it)", profile["load"]["why"],
                        default_threads(), load.RETRY_S)
            try:
                atomic_write(busy, json.dumps(dict(profile, at=time.time())).encode())
            except OSError:
                pass
            return _default(profile, 0.0)
        try:
            atomic_write(path, json.dumps(profile).encode())
            busy.unlink(missing_ok=True)
        except OSError:
            pass
        return dict(profile, source="measured", profile=name, under_load=False,
                    measured_threads=profile["threads"], measured_precision=profile["precision"])

    if (profile := known()) is not None:
        return profile
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        writable = os.access(path.parent, os.W_OK)
    except OSError:
        writable = False                          # an unwritable cache: measure every time
    if writable:
        try:  # evaluations starting together measure once
            with locked(path.with_suffix(".lock")):
                if (profile := known()) is not None:
                    return profile
                return measured()
        except OSError:
            pass  # a lock or profile file we may not write (another user's): measure unlocked
    return measured()


def resolve(device: str, precision: Optional[str], threads: Optional[int]) -> tuple:
    """(precision, worker threads or None for torch's default, what it rests on). "fp32" is
    fp32; "bf16" is bf16 where the device supports it; "auto" (or None) as the module says.
    `threads` given by the caller is kept as it is."""
    requested = precision or SPEC.precision
    if requested not in PRECISIONS:
        raise ValueError(f"precision {requested!r}; expected one of {', '.join(PRECISIONS)}")
    peak = matmul_peak()
    why = {"requested_precision": requested, "requested_threads": threads,
           "matmul_flops_per_cpu_s": peak["flops_per_cpu_s"], "matmul_under_load": peak["under_load"],
           "matmul_source": peak["source"]}
    supported = requested != "fp32" and bf16_supported(device)
    if requested != "fp32":
        why["bf16_supported"] = supported
    fixed = "bf16" if supported and (requested == "bf16" or device.startswith("cuda")) else None
    if device.startswith("cuda"):  # the CPU side of a GPU evaluation: its share of the cores
        workers = threads or max(1, (os.cpu_count() or 1) // max(1, torch.cuda.device_count()))
        why.update(precision=fixed or "fp32", threads=workers, source="fixed")
        return fixed or "fp32", workers, why
    if threads and (fixed or not supported):
        why.update(source="fixed")
        return fixed or "fp32", threads, why
    profile = machine_profile(bf16=supported and fixed is None)
    why.update(profile)
    chosen, workers = fixed or (profile["precision"] if supported else "fp32"), threads or profile["threads"]
    why.update(precision=chosen, threads=workers)  # what the run uses (a caller's choice wins)
    return chosen, workers, why


def review(result: dict, spec) -> None:
    """After training: when the run's median step (per counted FLOP, against the reference's) was
    over CONTRADICTION times faster than its kept profile's step at the same threads and
    precision, that profile was slowed by a load its checks missed: it is forgotten (the next
    evaluation measures again) and ``tuning["contradicted"]`` says why. Never raises."""
    tuning = result.get("tuning") or {}
    step_ms = result.get("step_ms_median")
    if tuning.get("source") not in ("cache", "measured") or not tuning.get("profile") or not step_ms:
        return
    threads = tuning.get("threads")
    if result.get("precision") == "bf16":
        expected = tuning.get("bf16_step_ms") if threads == tuning.get("measured_threads") else None
    else:
        expected = (tuning.get("step_ms_by_threads") or {}).get(str(threads))
    if not expected:
        return
    flops = (result.get("params") or {}).get("step_flops")
    per_reference = step_ms * spec.reference_step_flops / flops if flops else step_ms
    if per_reference * CONTRADICTION >= expected:
        return
    tuning["contradicted"] = (f"the run's median step took {step_ms:.0f} ms ({per_reference:.0f} ms per reference "
                              f"step) where its profile measured {expected:.0f} ms at {threads} threads: the "
                              "profile was measured under a load its checks missed; the next evaluation "
                              "measures again")
    log.warning("%s", tuning["contradicted"])
    try:
        machine.kept(tuning["profile"]).unlink(missing_ok=True)
    except OSError:
        pass
