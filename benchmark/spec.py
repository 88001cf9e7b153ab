"""The benchmark's single source of truth.

Every constant that defines a PLASA-Bench score (architecture, budget, training recipe, data,
limits, integrity tolerances) is a field of :class:`Spec`. Everything else reads :data:`SPEC` or an
overridden copy of it; nothing else repeats these literals. Overriding a budget or data field makes
a run unofficial (``Spec.official``); the result always carries ``spec.version``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Optional

# Fields whose value defines the official task: changing any of them makes a result unofficial.
OFFICIAL_FIELDS = (
    "vocab_size", "hidden_size", "n_layers", "n_heads", "seq_len", "tokenizer",
    "steps", "batch_size", "seed", "dataset", "split", "val_tokens", "require_progressive",
    "experiment",
)


@dataclass(frozen=True)
class Spec:
    # Benchmark version, stamped into every result; bump it when anything below changes a score.
    version: str = "plasa-bench-2.0"

    # --- architecture (the candidate receives these through ModelConfig) ---
    # Vocabulary size of the tokenizer; logits must be (B, T, vocab_size).
    vocab_size: int = 49152
    # Model width; the token embedding must have exactly this width.
    hidden_size: int = 128
    # Number of decoder layers (each with its own top-k in a PLASA model).
    n_layers: int = 4
    # Attention heads per layer (head dim = hidden_size / n_heads = 32).
    n_heads: int = 4
    # Sequence length T of every training and validation window.
    seq_len: int = 128
    # Tokenizer: a hub id, or loaded from --tokenizer-dir / PLASA_TOKENIZER_DIR.
    tokenizer: str = "HuggingFaceTB/SmolLM-135M"

    # --- budget ---
    # Optimizer steps; one batch of `batch_size` windows per step, no gradient accumulation.
    steps: int = 1000
    # Windows per training batch.
    batch_size: int = 2

    # --- default recipe (a candidate may replace it via configure_optimizer / lr_lambda) ---
    # AdamW learning rate, constant over the run.
    lr: float = 3e-4
    # AdamW betas.
    betas: tuple = (0.9, 0.95)
    # AdamW decoupled weight decay, applied to parameters with >= 2 dims (not norms or biases).
    weight_decay: float = 0.1
    # Gradient clipping by global L2 norm, applied by the evaluator every step.
    grad_clip: float = 1.0
    # Seed for python, numpy and torch before build_model, and for the evaluator's batch sampler.
    seed: int = 42

    # --- data ---
    # Corpus name from benchmark.judge.data.CORPORA.
    dataset: str = "wikitext2"
    # Split that is scored: "validation" during search, "test" only for final reports.
    split: str = "validation"
    # Validation target tokens scored; None = every target of the split.
    val_tokens: Optional[int] = None
    # Windows per validation batch (large batches are cheap under no_grad).
    val_batch_size: int = 32
    # Rows of logits at a time in the judge's cross-entropy (benchmark/judge/xent.py: one fp32 buffer of
    # this many rows, small enough to stay in cache; 16 measured fastest of 8, 16 and 64).
    ce_chunk: int = 16
    # ... and on a GPU, where the judge scores an evaluation on CUDA (one 200 MB fp32 buffer).
    ce_chunk_cuda: int = 1024
    # Documents of a streamed corpus (cosmopedia) taken from the hub.
    stream_documents: int = 20000

    # --- numerics ---
    # "bf16" (autocast, fp32 master weights and fp32 cross-entropy) where the device supports it,
    # "fp32", or "auto": bf16 on a CUDA device that supports it, and on a CPU only where a measured
    # reference-shaped step is at least 10% faster in bf16 (benchmark/judge/tuning.py).
    precision: str = "auto"

    # --- limits (enforced by the parent process on the worker) ---
    # Hard wall-clock limit of one evaluation, seconds; the worker's process group is killed.
    time_limit_s: float = 1800.0
    # A worker that sends no heartbeat (a training step, a scored batch, any message) for
    # max(heartbeat_s, heartbeat_factor x its median step or batch time) is killed as a hang.
    heartbeat_s: float = 60.0
    heartbeat_factor: float = 20.0
    # While torch.compile builds code (silent for minutes on a slow or busy CPU), the worker sends
    # a "compiling" message this often, so a long compile is not taken for a hang.
    compile_beat_s: float = 10.0
    # Beats are not a licence: while the judge waits for one reply, compile beats keep the worker
    # alive at most compile_wait_s past its heartbeat limit, and in a whole evaluation they buy at
    # most compile_total_s past heartbeat limits in all; beyond either the worker is a hang, beats
    # or not. A worker that sends more beats than one per compile_beat_s over the wall-clock limit,
    # twice over (2 x time_limit_s / compile_beat_s), floods the channel: protocol_error.
    compile_wait_s: float = 600.0
    compile_total_s: float = 1200.0
    # Resident memory cap of the worker, MiB.
    memory_limit_mb: int = 12288
    # Bytes of each worker's stdout and stderr the judge forwards to its own stderr (with progress
    # on); the rest is read, counted and dropped, and the result's worker_output says how much.
    output_limit_bytes: int = 4 << 20

    # --- budget checks against the reference candidate (initial_program.py) ---
    # Reference parameter count in fp32 equivalents: the state dict's bytes / 4, the measure the
    # parameter budget applies to every dtype (benchmark/judge/budget.py). The reference's state is
    # all fp32 (its only buffers, the RoPE tables, are not persistent), so this is also its element
    # count (tests assert it equals initial_program.py's).
    reference_params: int = 14_307_968
    # Reference forward FLOPs per token at seq_len (FlopCounterMode, batch 1, eval mode).
    reference_flops_per_token: int = 16_283_136
    # Reference FLOPs of one whole training step (batch_size x seq_len tokens, train-mode forward,
    # backward and optimizer step; FlopCounterMode on one real step).
    reference_step_flops: int = 12_473_204_736
    # A candidate may have at most this multiple of the reference's parameters (in bytes) ...
    max_params_ratio: float = 1.10
    # ... and of its training step's FLOPs.
    max_flops_ratio: float = 1.5
    # A training step's CPU time (read by the judge from outside the worker) may be at most
    # max(counted step FLOPs, reference_step_flops) / (this x the machine's fp32 matmul FLOPs per
    # CPU-second on one thread): "far beyond what its counted FLOPs allow". Measured on the 2-core
    # EPYC (measure/cpu_floor.py; docs/judge.md "The CPU floor"): honest training steps run at
    # 0.30-0.49 of the rate with 2 spinning threads on a quiet machine (fp32 the lowest), 0.57-0.81
    # with passive threads on a loaded one, 0.50-0.76 on one thread; this floor leaves the worst of
    # them a margin of 2x, and admits about two hidden training passes a step on a quiet machine.
    min_cpu_efficiency: float = 0.15
    # ... except for a worker whose OpenMP threads spin (OpenMP's default wait policy, kept while
    # the machine was quiet as the evaluation started) over a window in which other processes
    # loaded the machine: spinning threads burn the CPU their descheduled partners need (the
    # reference's step measured 558-771 ms of CPU against 263 quiet), so such a window is allowed
    # this lower floor (the floor of Judge v2), and the verdict says why.
    spinning_cpu_efficiency: float = 0.04
    # Budget verdicts come early: one secret counted step lies in the first `early_count_fraction`
    # of the steps (later ones in each half of the rest), and a counted step over the FLOP budget
    # stops the run at once. After `early_cpu_steps` steps, a step costing over `early_cpu_margin`
    # times the CPU allowed above stops it too (the final cpu_budget verdict keeps margin 1).
    early_count_fraction: float = 0.01
    # A counted step runs under FlopCounterMode (eagerly, with its Python overhead: 1.2x a step's CPU
    # time here): the CPU windows allow it as this many steps.
    counted_step_allowance: float = 2.0
    early_cpu_steps: int = 20
    early_cpu_margin: float = 2.0
    # The training worker hands over its state dict at once after its last step; it may take at
    # most this long (wall seconds; an honest 57 MB state takes well under one).
    save_limit_s: float = 10.0
    # Every worker's CPU time is metered from its start to its last reply, window by window (README
    # "What is metered"): a window may use its fixed seconds below plus its work's counted FLOPs at
    # min_cpu_efficiency of the machine's matmul rate, training steps and forward passes alike
    # (forward FLOPs per token counted as at least the reference's, at most max_flops_ratio times
    # it). The reference's forwards run at 0.43 (4 rows) to 0.70 (32 rows) of the rate on the quiet
    # 2-core CPU here, and at about a quarter of that with 12 processes on its 2 cores (OpenMP
    # threads spin while descheduled): the floor leaves room for both, and for slower honest code.
    # A worker's start: Python, torch, the sandbox, the candidate's import and build, and in a
    # scoring worker the state's load (2.3-2.6 s of CPU measured here).
    startup_cpu_s: float = 10.0
    # Before training only, while the worker has been shown no text (the count, the trial and the
    # untrained probes run on random tokens): torch.compile's first builds of forward and backward
    # (15 s of CPU for the whole reference here). From the hand-over on every process runs compiled
    # code eagerly, so none is allowed there.
    compile_cpu_s: float = 600.0
    # From the last training step to the state written (0.03 s measured), the requests' handling
    # around the forwards after it, and the optimizer's set-up before step 0: no arithmetic.
    handover_cpu_s: float = 1.0

    # Reject a declared layer_top_k with one k in every layer (the progressive principle). Off only
    # for baselines and experiments (dense, uniform sparse), whose results are then unofficial.
    require_progressive: bool = True
    # A benchmark-owned experiment model (python -m benchmark experiment): the structural and
    # budget rules are not enforced (the probes are); results are unofficial.
    experiment: bool = False

    # --- behaviour probes (their randomness comes from the OS, never from the seed) ---
    # Windows of training text in each fp32 probe set of the training worker (before and after
    # training: causality in eval and train mode, batch independence).
    probe_windows: int = 8
    # Validation windows cut for the hidden causality probes (seq_len - 1: every cut position).
    # Each row tests one position for a next-token leak, so these rows set the probes' power: a
    # leak firing at a fraction f of positions passes with probability about exp(-rows x f)
    # (benchmark/judge/power.py, docs/probe-power.md): 127 rows catch f = 3.6% with 99%.
    probe_causal_rows: int = 127
    # A full-power probe audit (--audit; stage 3's extra seeds, the first seed of --seeds): the
    # hidden causality probes cut audit_causal_rows distinct positions instead. Not a score-
    # defining field: an audited result is as official as any, and caches apart.
    audit: bool = False
    # 2385 rows catch, with 99%, a leak worth 1% of the reference's perplexity (density
    # -ln(0.99) / ln(reference_val_ppl) = 0.19% of positions); 3000 leave a margin (miss 0.3%).
    audit_causal_rows: int = 3000
    # Validation windows repeated in the hidden probe batches (at least; batches are filled).
    probe_repeat_rows: int = 24
    # Secret vocabulary columns compared in the hidden probes (plus each position's true token).
    probe_vocab_columns: int = 256
    # Windows of training text replayed by the scoring worker against the trained model's outputs.
    replay_windows: int = 4
    # Canary rows per scoring process: repeats of validation windows the other process scores,
    # half in a last batch after all its validation batches and half at secret places among its
    # other batches, compared with the training worker's outputs on the same rows at hand-over (at
    # the run's precision and probe tolerances): a model that changes while it is scored (training
    # inside its forwards, both processes alike) shows there.
    canary_rows: int = 8
    # Largest allowed change of a compared log-probability (nats), fp32 (honest models ~1e-6) ...
    probe_tol_fp32: float = 1e-3
    # ... and bf16 (the reference measures exactly 0 within a batch shape; the margin absorbs
    # kernels whose bf16 rounding depends on a row's place in the batch).
    probe_tol_bf16: float = 0.1
    # Largest allowed mean gain of the true next token's log-probability near the cut (nats),
    # where a small leak shows; honest rounding noise has no sign.
    probe_gain_tol_fp32: float = 1e-4
    probe_gain_tol_bf16: float = 3e-3

    # --- integration ---
    # The reference's validation perplexity at the official budget (seed 42), for the readable
    # relative_score = reference_val_ppl / val_ppl that searches display (1.00 = the reference).
    reference_val_ppl: float = 183.11
    # Seed-to-seed standard deviation of the reference's validation perplexity, as a fraction
    # (5 seeds: 182.9 +- 1.85): the noise band of the search's third, multi-seed stage.
    seed_std_fraction: float = 0.010
    # Stage 3 re-runs a candidate with this many more seeds when its one-seed score is within
    # noise_band_sigmas standard deviations of the best score the search has seen.
    stage3_extra_seeds: int = 2
    noise_band_sigmas: float = 2.0
    # Steps of the smoke training in the cascade's stage 1.
    smoke_steps: int = 5
    # combined_score of a passing stage 1 (OpenEvolve cascade threshold); far below any 1/ppl.
    stage1_pass_score: float = 1e-6
    # The record rule (python -m benchmark record): a candidate beats a baseline when, over seeds
    # paired with the baseline's, its validation loss is lower at one-sided p < record_alpha
    # (paired t-test) and its mean perplexity gain is at least record_min_gain (a fraction).
    record_alpha: float = 0.01
    record_min_gain: float = 0.005

    @property
    def official(self) -> bool:
        """True when every score-defining field has its official value."""
        default = Spec()
        return all(getattr(self, name) == getattr(default, name) for name in OFFICIAL_FIELDS)

    @property
    def max_state_bytes(self) -> int:
        """The largest trained state a state file may hand over: twice the parameter budget in bytes
        (a file holds a tied tensor once, and a copy with equal contents, which counts once, twice).
        Its size is checked before the judge reads a byte of it, so a candidate cannot set the
        judge's memory."""
        return 2 * 4 * int(self.reference_params * self.max_params_ratio)

    def replace(self, **overrides: Any) -> "Spec":
        """A copy with `overrides`; unknown fields and wrong types are errors, None is ignored."""
        names = {f.name: f for f in dataclasses.fields(self)}
        clean = {}
        for key, value in overrides.items():
            if value is None:
                continue
            if key not in names:
                raise ValueError(f"unknown spec field {key!r}")
            current = getattr(self, key)
            if current is not None and not isinstance(value, type(current)):
                if isinstance(current, float) and isinstance(value, int):
                    value = float(value)
                else:
                    raise TypeError(f"spec field {key!r} expects {type(current).__name__}, "
                                    f"got {type(value).__name__}")
            clean[key] = value
        return dataclasses.replace(self, **clean)

    def model_config(self) -> "ModelConfig":
        return ModelConfig(vocab_size=self.vocab_size, hidden_size=self.hidden_size,
                           n_layers=self.n_layers, n_heads=self.n_heads, seq_len=self.seq_len,
                           max_seq_len=self.seq_len)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["betas"] = list(self.betas)
        d["official"] = self.official
        return d


@dataclass(frozen=True)
class ModelConfig:
    """The read-only view of the architecture handed to ``build_model(config)``; attribute or
    mapping access (``config.vocab_size``, ``config["vocab_size"]``, ``config.get(...)``)."""

    vocab_size: int
    hidden_size: int
    n_layers: int
    n_heads: int
    seq_len: int
    max_seq_len: int

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key, default)

    def to_dict(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


SPEC = Spec()
