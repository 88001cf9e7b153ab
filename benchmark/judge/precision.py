"""Which precision an evaluation trains and scores in, chosen for the machine it runs on.

bf16 autocast is not faster on every CPU: reported on a Sapphire Rapids Xeon (AMX), a training
step of the reference was no faster in bf16 (ratio 1.03), and a CPU without native bf16 emulates
it: 13x slower than fp32 on this project's AMD EPYC (the step below, measured). So on a CPU "auto" (the spec's default) picks bf16 only where the CPU
supports it and a training step shaped like the reference's is at least ``MIN_SPEEDUP`` faster
in bf16, measured once per machine, torch version and thread count and kept in
PLASA_CACHE_DIR/precision/. On CUDA "auto" is bf16 where the GPU supports it. The choice and the
measurement it rests on are recorded in the result (``precision``, ``precision_choice``).

Runs in the judge's process on synthetic tensors: no candidate code is involved.
"""

from __future__ import annotations

import hashlib
import json
import platform
import statistics
import time
from typing import Callable, Optional

import torch
import torch.nn.functional as F

from ..fsutil import atomic_write, cache_dir
from ..spec import SPEC

PRECISIONS = ("auto", "bf16", "fp32")
MIN_SPEEDUP = 1.10   # bf16 step time at most 1/1.10 of fp32's
STEPS, WARMUP = 6, 2


def bf16_supported(device: str) -> bool:
    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    return (torch.backends.mkldnn.is_available()
            and bool(torch.ops.mkldnn._is_mkldnn_bf16_supported()))


def reference_step_s(precision: str, tokens: int = SPEC.batch_size * SPEC.seq_len,
                     seq_len: int = SPEC.seq_len, hidden: int = SPEC.hidden_size, vocab: int = SPEC.vocab_size,
                     layers: int = SPEC.n_layers, steps: int = STEPS) -> float:
    """Median seconds of a forward + backward + AdamW step shaped like the reference's (per layer
    a fused qkv and output projection, a SwiGLU of width 4x, norms; an untied output head over
    the whole vocabulary and an fp32 cross-entropy) in `precision` on this CPU."""
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
    return statistics.median(times)


def _machine_key() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:
        pass
    key = json.dumps([cpu, torch.__version__, torch.get_num_threads(), MIN_SPEEDUP, STEPS])
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def measured_choice(measure: Callable[[str], float] = reference_step_s) -> dict:
    """{"fp32_step_ms", "bf16_step_ms", "speedup", "chose"} for this CPU, from the cache when this
    machine, torch and thread count were measured before."""
    path = cache_dir() / "precision" / f"{_machine_key()}.json"
    try:
        cached = json.loads(path.read_text())
        if cached.get("chose") in ("bf16", "fp32"):
            return cached
    except (OSError, ValueError):
        pass
    fp32, bf16 = measure("fp32"), measure("bf16")
    speedup = fp32 / bf16 if bf16 > 0 else 0.0
    choice = {"fp32_step_ms": round(1000 * fp32, 2), "bf16_step_ms": round(1000 * bf16, 2),
              "speedup": round(speedup, 3), "chose": "bf16" if speedup >= MIN_SPEEDUP else "fp32"}
    try:
        atomic_write(path, json.dumps(choice).encode())
    except OSError:
        pass  # an unwritable cache: measure again next time
    return choice


def resolve_precision(device: str, precision: Optional[str]) -> tuple:
    """(precision the run uses, why): "fp32" always; "bf16" where the device supports it;
    "auto" (or None) as the module's docstring says."""
    requested = precision or SPEC.precision
    if requested not in PRECISIONS:
        raise ValueError(f"precision {requested!r}; expected one of {', '.join(PRECISIONS)}")
    if requested == "fp32":
        return "fp32", {"requested": requested}
    if not bf16_supported(device):
        return "fp32", {"requested": requested, "bf16_supported": False}
    if requested == "bf16" or device.startswith("cuda"):
        return "bf16", {"requested": requested, "bf16_supported": True}
    choice = measured_choice()
    return choice["chose"], {"requested": requested, "bf16_supported": True, **choice}
