"""The result schema and the one failure helper.

Standard library only: the parent process (which never imports torch or the candidate) builds
failure results too.

The schema is :class:`Result` below: every key a result may carry, typed and documented. Every
number in it is the judge's (computed in a process that never imports the candidate), except
those marked "reported": a worker's declarations, shown for feedback and checked where the judge
can observe them.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, TypedDict

SCHEMA = "plasa-bench-result/2"


class Check(TypedDict):
    """One check the judge ran, with its evidence."""

    name: str                # e.g. static, budget:params, probe:causality_eval, train:cpu_time
    passed: bool
    detail: str


class Candidate(TypedDict, total=False):
    sha256: Optional[str]    # of the file's bytes (None when it could not be read)
    path: str                # as the caller named it


class Params(TypedDict, total=False):
    """The trained state's size and the reported FLOPs (README "Rules")."""

    total: int               # fp32 equivalents (bytes / 4, any dtype) of the trained state
    embedding: int           # of the token embedding and the LM head (tied copies once)
    non_embedding: int
    bytes: int               # the state's bytes, tied copies once
    flops_per_token: Optional[int]   # reported eval forward FLOPs / T
    trial_step_flops: int    # reported FLOPs of the trial step before training
    step_flops: int          # the largest of the counted training steps' FLOPs
    counted_steps: int       # how many training steps were counted


class Timings(TypedDict, total=False):
    """Seconds unless named."""

    total_s: float           # the evaluation, from the judge's start to its result
    wall_s: float            # evaluate_file's whole call (static checks, run folder included)
    data_s: float            # reading and tokenizing (cached) the corpus
    build_s: float           # the training worker's start, build and state checks
    probes_s: float          # the causality probes, before and after training
    train_s: float           # the training loop
    step_ms_median: float    # median wall time of a training step, between heartbeats
    cpu_ms_per_step: float   # the training worker's CPU time a step
    tokens_per_s: float      # training tokens a second
    second_process_s: float  # the scoring workers' start, rebuild and strict state load
    validation_s: float      # the scoring workers' forwards over the validation windows
    judge_scoring_s: float   # the judge's cross-entropy of the handed-over log-probabilities


class Environment(TypedDict, total=False):
    torch: str
    python: str
    threads: int             # the workers' torch threads
    judge_threads: int       # the judge's own, for its arithmetic
    cpu: str
    device: str
    device_name: str
    run_folder: str          # where the run folder was, and why (/dev/shm or the temp dir)
    omp_wait_policy: Optional[str]  # the CPU workers' OpenMP wait policy (None: spinning, OpenMP's default)
    other_cores: Optional[float]    # cores other processes used as the evaluation started (None: not watched)


class CpuWindow(TypedDict):
    used_s: float            # CPU seconds a worker used in one window of its life
    allowed_s: Optional[float]  # what the window allows (None: not bounded on its own)


class WorkerOutput(TypedDict):
    bytes: int               # what the workers wrote to stdout and stderr
    forwarded_bytes: int     # what the judge echoed (with progress on)
    dropped_bytes: int       # past spec.output_limit_bytes a worker, read and thrown away


class ProbePower(TypedDict, total=False):
    positions_tested: int    # cut positions the hidden causal rows tested for a next-token leak
    leak_density_caught_99: float  # a leak firing at this fraction of positions: caught with 0.99
    leak_worth_caught_99: float    # what such a leak is worth, as a fraction of the perplexity


class Result(TypedDict, total=False):
    """One evaluation's result (JSON object)."""

    schema: str              # "plasa-bench-result/2"
    combined_score: float    # 1 / val_ppl; 0.0 for any failure, never NaN
    valid: bool              # every check passed and a score was produced
    official: bool           # the official budget and data settings, full mode
    val_loss: float          # mean cross-entropy (nats) over every validation target token
    val_ppl: float           # exp(val_loss)
    val_acc: float           # top-1 accuracy over the same tokens
    train_loss: float        # reported: mean training loss of the last 100 steps
    loss_curve: list         # reported: [[step, mean training loss]] every 100 steps
    steps_completed: int     # training steps the worker reported
    step_ms_median: float    # median wall time of a training step, between heartbeats
    param_count: int         # = params.total
    params: Params
    layer_top_k: Any         # reported: the candidate's declared k per layer
    stage: str               # where it ended: cli, static, load, build, budget, probe, train,
                             # save, load_state, replay, validate, done
    error: str               # first line of the failure message
    error_type: str          # short failure category (static_check, hang, causality_eval ...)
    error_detail: str        # the whole failure message when it has several lines
    traceback: str           # tail of the candidate's traceback
    log_tail: str            # tail of the worker's stdout and stderr on failure
    checks: List[Check]      # every check run, with its evidence
    timings: Timings
    candidate: Candidate
    evaluator: str           # hash of the benchmark package's sources that produced this result
    spec_version: str
    spec: dict               # the whole spec used
    seed: int
    dataset: str
    split: str
    tokenizer: str
    steps: int
    mode: str                # full or stage1
    precision: str           # bf16 or fp32 (chosen by the judge for this machine)
    tuning: dict             # what precision and the workers' threads rest on: requested_precision,
                             # requested_threads, bf16_supported, and where measured (benchmark.judge.
                             # tuning): threads, step_ms_by_threads, fp32/bf16_step_ms, speedup
    device: str
    environment: Environment
    numerics: dict           # the torch numerics every worker applies (benchmark.numerics): TF32,
                             # deterministic algorithms, cuBLAS workspace
    sandbox: str             # what confined the workers (Landlock version, or none)
    probe_seed: str          # the OS randomness behind this run's probes (hex), for reproduction
    audit: bool              # the hidden causality probes ran at the audit's power (spec.audit)
    probe_power: ProbePower  # the hidden causal rows' power (benchmark/judge/power.py)
    peak_rss_mb: float       # the workers' peak resident memory
    cpu: Dict[str, Dict[str, CpuWindow]]  # each worker's CPU seconds by window of its life, from its
                             # start to its last reply (benchmark/judge/meter.py): {train:
                             # {before_training, training, hand_over, after_hand_over}, score0:
                             # {scoring}, score1: ...}
    worker_output: WorkerOutput
    compile_beats: int       # "compiling" heartbeats the workers sent while torch.compile built
                             # code (one per spec.compile_beat_s; absent when none)
    cached: bool             # served from the results cache
    descriptors: dict        # machine-independent features for MAP-Elites (None where unknown):
                             # attention_density (mean min(k, T) / T over layers, declared k),
                             # forward_flops_per_token (reported), param_count
    # --seeds N (benchmark.analysis.multiseed)
    seeds: list              # per-seed summaries
    n_seeds: int
    combined_score_std: float
    combined_score_ci95: list
    val_loss_std: float
    val_loss_ci95: list
    val_ppl_std: float
    val_ppl_ci95: list
    val_acc_std: float
    val_acc_ci95: list
    train_loss_std: float
    train_loss_ci95: list


# The nested objects with a schema of their own: key -> (its TypedDict, a list of them?)
NESTED = {"params": (Params, False), "timings": (Timings, False), "environment": (Environment, False),
          "candidate": (Candidate, False), "worker_output": (WorkerOutput, False),
          "probe_power": (ProbePower, False), "checks": (Check, True)}


def undeclared_keys(result: dict) -> list:
    """Keys of `result`, and of its nested objects (as "params.x"), that :class:`Result` and the
    TypedDicts above do not declare (a test keeps this empty)."""
    out = set(result) - set(Result.__annotations__)
    for key, (schema, many) in NESTED.items():
        value = result.get(key)
        for item in (value if many and isinstance(value, list) else [value]):
            if isinstance(item, dict):
                out |= {f"{key}.{k}" for k in set(item) - set(schema.__annotations__)}
    return sorted(out)
METRIC_KEYS = ("val_loss", "val_ppl", "val_acc", "train_loss")


class EvalFailure(Exception):
    """Raised inside the evaluator when a candidate fails; carries what the result reports."""

    def __init__(self, stage: str, error_type: str, message: str,
                 checks: Optional[list] = None) -> None:
        super().__init__(message)
        self.stage, self.error_type, self.message = stage, error_type, message
        self.checks = checks or []


def base_result(spec, mode: str, sha256, path, checks: list) -> dict:
    """The fields every result has, known before anything runs."""
    return {"schema": SCHEMA, "spec_version": spec.version, "official": spec.official and mode == "full",
            "seed": spec.seed, "dataset": spec.dataset, "split": spec.split, "tokenizer": spec.tokenizer,
            "steps": spec.steps, "mode": mode, "candidate": {"sha256": sha256, "path": path},
            "checks": list(checks), "timings": {}, "spec": spec.to_dict()}


def check(name: str, passed: bool, detail: str = "") -> dict:
    return {"name": name, "passed": bool(passed), "detail": detail}


def failure(base: dict, stage: str, error_type: str, message: str, **extra: Any) -> dict:
    """A failed result: `base` (whatever was known so far) plus the failure fields."""
    result = dict(base)
    for key in METRIC_KEYS:
        result.pop(key, None)
    result.update(schema=SCHEMA, combined_score=0.0, valid=False, stage=stage,
                  error=message.strip().splitlines()[0] if message.strip() else error_type,
                  error_type=error_type, **extra)
    if message.strip() and "\n" in message.strip():
        result.setdefault("error_detail", message.strip())
    return result


def sanitize_score(value: Any) -> float:
    """A finite, non-negative float; anything else becomes 0.0."""
    try:
        value = float(value)
    except (TypeError, ValueError):
        return 0.0
    return value if math.isfinite(value) and value > 0 else 0.0


def failed_checks(result: dict) -> list:
    return [c for c in result.get("checks", []) if not c.get("passed")]


MAX_DEPTH = 32  # a result nests a few levels; anything deeper is left out, never recursed into


def clean(value: Any, depth: int = 0) -> Any:
    """JSON-safe: non-finite floats become None (json would write NaN, which is not JSON), and
    containers nested deeper than MAX_DEPTH become a note (json.dumps and repr recurse once a level,
    so a declaration nested 700 deep crashed the command line with RecursionError)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (dict, list, tuple)) and depth >= MAX_DEPTH:
        return f"<left out: nested deeper than {MAX_DEPTH} levels>"
    if isinstance(value, dict):
        return {str(k): clean(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v, depth + 1) for v in value]
    return value


def descriptors(result: dict) -> dict:
    """Stable, machine-independent features of a result (failures included: None where the run
    ended before they were known), for a search's diversity axes; never timings."""
    spec = result.get("spec") or {}
    seq_len = spec.get("seq_len")
    top_k = result.get("layer_top_k")
    density = None
    if (isinstance(top_k, list) and top_k and isinstance(seq_len, int) and seq_len > 0
            and all(isinstance(k, int) and not isinstance(k, bool) for k in top_k)):
        density = sum(min(max(k, 0), seq_len) for k in top_k) / (len(top_k) * seq_len)
    flops = (result.get("params") or {}).get("flops_per_token")
    params = result.get("param_count")
    return {"attention_density": density,
            "forward_flops_per_token": flops if isinstance(flops, int) else None,
            "param_count": params if isinstance(params, int) else None}
