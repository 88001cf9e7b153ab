"""Behaviour probes: the judge's secret inputs and its comparisons of the outputs.

Every probe compares the log-probabilities (log-softmax, so a constant added to a position's
logits hides nothing) of two forward passes that must agree for an honest model:
  causality          a window vs the same window with every token after a cut point p replaced by
                     another window's tokens (positions <= p must not move);
  batch independence a window in one batch vs the same window in another batch, another row,
                     another moment of the run (no mixing across the batch, no state);
  replay             the training worker's logits right after training vs the fresh scoring
                     worker's on the same windows (nothing kept outside the state dict).
Two statistics per comparison: the largest change of any compared log-probability (tolerance
`tol`), and the mean gain of the true next token's log-probability on the unperturbed side near
the cut, where a leak shows even when small (it must stay under `gain_tol` or within 4 standard
errors of zero, since honest rounding noise has no sign).

The randomness (windows, cut points, donors, columns, where probe batches sit among the
validation batches) comes from the OS, never from the public seed; the result records it only
after the run. Failure messages give sizes, never positions or columns.
"""

from __future__ import annotations

import math
import secrets
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np
import torch

from ..result import check

GAIN_BAND = 8   # positions up to the cut whose next-token gain is averaged
GAIN_Z = 4.0    # standard errors a mean gain must exceed to count as a leak


def judge_key() -> Optional[bytes]:
    """A secret of this installation (PLASA_CACHE_DIR/judge.key, created once, mode 0600; no worker
    can read the cache folder), or None where it cannot be kept."""
    import os

    from ..fsutil import cache_dir

    path = cache_dir() / "judge.key"
    try:
        if not path.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:  # a parallel evaluation is writing it
                pass
            else:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(secrets.token_bytes(32))
        for _ in range(50):
            key = path.read_bytes()
            if len(key) == 32:
                return key
            time.sleep(0.02)
        return None
    except OSError:
        return None


def counted_steps(n_steps: int, seed: int, rng: np.random.Generator, early_fraction: float) -> list:
    """The training steps whose FLOPs are counted, ascending: one early, among steps
    1 .. max(1, early_fraction x n_steps), so a step over the budget stops the run within its first
    percent; and one in each half of the steps after that. None is step 0, all are secret, yet the
    same for every candidate at one seed and budget on this installation (so two runs of one
    candidate are metered alike; a counted step trains as an uncounted one, so the score does not
    depend on which: benchmark/worker/train.py ExactFlopCounter). From the OS randomness where no
    key can be kept."""
    if n_steps < 2:
        return [0]
    early = max(1, min(n_steps - 1, int(early_fraction * n_steps)))
    middle = early + (n_steps - early) // 2
    spans = [(1, early + 1), (early + 1, middle + 1), (middle + 1, n_steps)]  # [lo, hi) each
    key = judge_key()
    if key is None:
        draws = [int(rng.integers(0, 2**62)) for _ in spans]
    else:
        import hashlib
        import hmac

        digest = hmac.new(key, f"counted-steps:{seed}:{n_steps}".encode(), hashlib.sha256).digest()
        draws = [int.from_bytes(digest[8 * i:8 * i + 8], "big") for i in range(len(spans))]
    return sorted({lo + draw % (hi - lo) for (lo, hi), draw in zip(spans, draws) if hi > lo})


def new_rng() -> tuple:
    """(generator, hex seed): fresh OS randomness for one evaluation's probes."""
    seed = secrets.randbits(128)
    return np.random.default_rng(seed), f"{seed:032x}"


def suffix_swap(x: np.ndarray, donors: np.ndarray, cuts: np.ndarray) -> np.ndarray:
    """Row i keeps tokens [0, cuts[i]] of x[i] and takes the rest from donors[i]."""
    out = x.copy()
    for i, p in enumerate(cuts):
        out[i, p + 1:] = donors[i, p + 1:]
    return out


def stratified_cuts(n: int, seq_len: int, rng: np.random.Generator) -> np.ndarray:
    """n cut points spread over [0, T - 2]: every position once when n = T - 1."""
    cuts = ((np.arange(n) + rng.random(n)) * (seq_len - 1) / n).astype(np.int64)
    return rng.permutation(np.minimum(cuts, seq_len - 2))


def prefix_mask(cuts: np.ndarray, seq_len: int) -> torch.Tensor:
    return torch.as_tensor(np.arange(seq_len)[None, :] <= cuts[:, None])  # (n, T)


def band_mask(cuts: np.ndarray, seq_len: int) -> torch.Tensor:
    t = np.arange(seq_len)[None, :]
    return torch.as_tensor((t <= cuts[:, None]) & (t > cuts[:, None] - GAIN_BAND))


def largest_changes(ref: torch.Tensor, alt: torch.Tensor) -> torch.Tensor:
    """(n, T): the largest |ref - alt| over the last dimension of two (n, T, C) tensors, one row at
    a time through one reused buffer (a fresh (n, T, C) difference costs its page faults: 244
    against 52 ms for 8 windows of 49,152 columns on the 2-core EPYC, one thread)."""
    out = torch.empty(ref.shape[:-1], dtype=torch.promote_types(ref.dtype, alt.dtype))
    if ref.numel() == 0:
        return out
    buf = torch.empty(ref.shape[1:], dtype=out.dtype)
    for i in range(ref.shape[0]):
        torch.amax(torch.sub(ref[i], alt[i], out=buf).abs_(), -1, out=out[i])
    return out


def all_finite(values: torch.Tensor) -> bool:
    """No NaN or infinity in `values`: its minimum and maximum (NaN propagates into both) are
    finite. One read and no allocation: torch.isfinite(x).all() took 285 ms on 8 windows of fp32
    logits (its boolean copy's page faults), this 9 ms (the 2-core EPYC, one thread)."""
    if values.numel() == 0:
        return True
    low, high = torch.aminmax(values)
    return bool(torch.isfinite(low)) and bool(torch.isfinite(high))


def row_stats(ref: torch.Tensor, alt: torch.Tensor, mask: torch.Tensor,
              gain_mask: Optional[torch.Tensor] = None, targets: Optional[torch.Tensor] = None) -> tuple:
    """Per row of ref/alt (n, T, C) log-probabilities: the largest change over `mask` (n, T) (-inf
    where a row has no such position), and with gain_mask, for the cut itself and for the band up
    to it, each row's mean gain of the true next token and whether it has any: (worst (n,),
    [(mean (n,), has (n,))] or []). `targets` (n, T) index each position's true next token in the
    last dimension (the last column when None)."""
    diff = largest_changes(ref, alt)  # (n, T)
    worst = diff.masked_fill(~mask, -math.inf).amax(1)  # (n,)
    gains_by_mask = []
    if gain_mask is not None:
        if targets is None:
            targets = torch.full(gain_mask.shape, ref.shape[-1] - 1, dtype=torch.long)
        index = targets.unsqueeze(-1)
        gains = (ref.gather(-1, index) - alt.gather(-1, index)).squeeze(-1)  # (n, T)
        # at the cut itself (a next-token leak shows there) and over the band up to it
        last = gain_mask & ~torch.roll(gain_mask, -1, dims=1)
        last[:, -1] = gain_mask[:, -1]
        for mask_ in (last, gain_mask):
            gains_by_mask.append(((gains * mask_).sum(1) / mask_.sum(1).clamp_min(1), mask_.any(1)))
    return worst, gains_by_mask


def verdict(name: str, n: int, worst: torch.Tensor, gains_by_mask: list, tol: float, gain_tol: float,
            what: str) -> dict:
    """The check from row_stats over n rows: every change within `tol`, and no mean gain over
    `gain_tol` and GAIN_Z standard errors."""
    top = float(worst.max()) if len(worst) else -math.inf
    top = 0.0 if top == -math.inf else (top if math.isfinite(top) else math.inf)
    detail = f"{n} windows: largest log-probability change {top:.2e} nats (tolerance {tol:g})"
    passed = top <= tol
    if gains_by_mask and bool(gains_by_mask[-1][1].any()):
        worst_mean, leak = 0.0, False
        for per_row, has in gains_by_mask:
            rows = per_row[has].double()
            mean = float(rows.mean())
            se = float(rows.std() / math.sqrt(len(rows))) if len(rows) > 1 else 0.0
            leak = leak or (mean > gain_tol and mean > GAIN_Z * se)
            worst_mean = max(worst_mean, mean)
        detail += f"; mean gain of the true next token {worst_mean:.2e} nats (tolerance {gain_tol:g})"
        passed = passed and not leak
    if passed:
        return check(name, True, detail)
    return check(name, False, f"{what} ({detail})")


def compare(name: str, ref: torch.Tensor, alt: torch.Tensor, mask: torch.Tensor, tol: float,
            gain_tol: float, what: str, gain_mask: Optional[torch.Tensor] = None,
            targets: Optional[torch.Tensor] = None) -> dict:
    """ref/alt: (n, T, C) log-probabilities; mask (n, T): positions that must agree. With
    gain_mask, `targets` (n, T) index each position's true next token in the last dimension (the
    last column when None)."""
    return verdict(name, ref.shape[0], *row_stats(ref, alt, mask, gain_mask, targets), tol, gain_tol, what)


COMPARE_ROWS = 256  # rows stacked at a time by compare_pairs


def compare_pairs(name: str, pairs: list, mask: torch.Tensor, tol: float, gain_tol: float, what: str,
                  gain_mask: Optional[torch.Tensor] = None) -> dict:
    """compare() over a list of (ref, alt) rows, each (T, C), COMPARE_ROWS at a time: an audit's
    thousands of probe rows are never stacked whole (two 0.4 GB copies and their difference)."""
    worst, gains = [], []
    for lo in range(0, len(pairs), COMPARE_ROWS):
        part, hi = pairs[lo:lo + COMPARE_ROWS], lo + COMPARE_ROWS
        w, g = row_stats(torch.stack([a for a, _ in part]), torch.stack([b for _, b in part]), mask[lo:hi],
                         None if gain_mask is None else gain_mask[lo:hi])
        worst.append(w)
        gains.append(g)
    joined = [tuple(torch.cat([g[k][j] for g in gains]) for j in (0, 1)) for k in range(len(gains[0]))]
    return verdict(name, len(pairs), torch.cat(worst), joined, tol, gain_tol, what)


LEAK = ("future leak: the log-probabilities at positions before a cut point changed when only the "
        "tokens after it changed. A prediction at position t may only use tokens 0..t: check that "
        "every attention, top-k selection, convolution and mixing step masks future positions, in "
        "train and eval mode")
MIXING = ("a window's log-probabilities changed when it was evaluated in another batch, another row "
          "or at another moment of the run. They may depend only on the window's own tokens: no "
          "mixing across the batch, no cache or state kept between forward calls")
REPLAY = ("the freshly built model, loaded with the trained state dict, gives other outputs than "
          "the trained model did. Everything the model uses must be a parameter or a registered "
          "buffer (in state_dict()): no Python attributes, lists or closures that change while "
          "training, and build_model must build the same model every time")


@dataclass
class DirectPlan:
    """fp32 probes on training text, run in the training worker before and after training."""

    x: np.ndarray            # (n, T) windows
    targets: np.ndarray      # (n, T) their next tokens
    swapped: np.ndarray      # (n, T) suffix-swapped copies
    cuts: np.ndarray
    perm: np.ndarray         # a row permutation for batch independence
    dropout_seed: int


def direct_plan(tokens: np.ndarray, n: int, seq_len: int, rng: np.random.Generator) -> DirectPlan:
    starts = rng.integers(0, len(tokens) - seq_len - 1, size=2 * n)
    rows = tokens[starts[:, None] + np.arange(seq_len + 1)].astype(np.int64)
    x, targets, donors = rows[:n, :-1], rows[:n, 1:], rows[n:, :-1]
    cuts = stratified_cuts(n, seq_len, rng)
    perm = rng.permutation(n)
    while n > 1 and (perm == np.arange(n)).any():
        perm = rng.permutation(n)
    return DirectPlan(x, targets, suffix_swap(x, donors, cuts), cuts, perm, int(rng.integers(1, 2**31)))


def full_log_probs(logits: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(logits.float(), dim=-1)


@dataclass
class HiddenPlan:
    """The scoring workers' sequences of batches: validation batches in a random order with probe
    batches of the same shape among them, made of real validation text.

    Validation is split between two fresh scoring processes (``runs[0]``, ``runs[1]``), each
    scoring about half of the validation batches, and every probe row is scored in the process
    that does not score the window it copies. A model that keeps state across the batches of one
    process (a table of the continuations it has seen) then meets each probe copy without the
    original's history, and the comparison shows what that history bought.

    Probe rows: `n_causal` validation windows cut at distinct positions (causal_rows), their suffix
    taken from other validation windows; and repeats of validation windows. Each is compared with
    the same window's log-probabilities in its own validation batch.
    """

    runs: list = field(default_factory=list)      # per process: [(kind, window ids or probe row ids)]
    probe_rows: np.ndarray = None                  # (P, T) input ids of the probe rows
    row_window: np.ndarray = None                  # (P,) the validation window each row copies
    row_cut: np.ndarray = None                     # (P,) cut point, or -1 for a repeat
    columns: torch.Tensor = None                   # (C,) secret vocabulary columns
    positions_tested: int = 0                      # causal rows whose token after the cut changed:
                                                   # each tests its cut for a next-token leak

    @property
    def wanted(self) -> set:
        return {int(w) for w in self.row_window}

    @property
    def batches(self) -> list:
        return [batch for run in self.runs for batch in run]


def hidden_plan(val_x: np.ndarray, batch_size: int, n_causal: int, n_repeat: int, n_columns: int,
                vocab: int, seed: int, rng: np.random.Generator, n_runs: int = 2) -> HiddenPlan:
    """The validation batches hold windows in a fixed order drawn from the public seed (so an
    honest model's score repeats bit for bit); which process scores which batch, which batch runs
    when, and everything about the probe batches, is drawn from the secret `rng`. Probes copy any
    validation window, and the last, partial validation batch is filled up to the batch size with
    probe rows, so every scored batch has the same size and no window escapes the probes. With a
    single validation batch (tiny test configs) there is one process, and probe copies share it.
    `n_runs` processes (at most one per full validation batch) share the batches: an audit's many
    probe rows take more processes, each as long as a normal run's (power.scoring_processes).

    Each entry of a run is (kind, window ids, probe row ids): "real" batches score their windows
    (and the partial one also holds probe rows), "probe" batches hold probe rows only."""
    n, seq_len = val_x.shape
    order = np.random.default_rng([seed, 0xBA7C4]).permutation(n)
    real = [order[i:i + batch_size] for i in range(0, n, batch_size)]
    rows = batch_size if n >= batch_size else n
    n_full = sum(len(b) == rows for b in real)
    n_runs = max(1, min(n_runs, n_full))
    owner = np.concatenate([rng.permutation(np.arange(n_full) % n_runs),   # batch -> process
                            rng.integers(0, n_runs, size=len(real) - n_full)])
    window_run = np.zeros(n, dtype=np.int64)
    for b, windows in zip(owner, real):
        window_run[windows] = b
    originals, cuts, donors = causal_rows(val_x, order, n_causal, rng)
    repeats = rng.choice(order, size=n_repeat, replace=n < n_repeat)
    row_window = np.concatenate([originals, repeats]).astype(np.int64)
    row_cut = np.concatenate([cuts, -np.ones(len(repeats), dtype=np.int64)])
    row_x = np.concatenate([suffix_swap(val_x[originals], val_x[donors], cuts), val_x[repeats]])
    # each probe row goes to another process than its window's; the partial batch's empty slots,
    # then whole probe batches, are filled with more repeats of windows other processes score
    target = (window_run[row_window] + 1 + rng.integers(0, max(1, n_runs - 1), size=len(row_window))) % n_runs
    partial = len(real[-1]) < rows
    for r in range(n_runs):
        pool = order[window_run[order] != r] if n_runs > 1 else order
        have = int((target == r).sum())
        want = rows - len(real[-1]) if partial and owner[-1] == r else 0
        missing = max(0, want - have) + (-(max(0, have - want)) % rows)
        extra = rng.choice(pool, size=missing, replace=len(pool) < missing)
        row_window = np.concatenate([row_window, extra])
        row_cut = np.concatenate([row_cut, -np.ones(missing, dtype=np.int64)])
        row_x = np.concatenate([row_x, val_x[extra]])
        target = np.concatenate([target, np.full(missing, r)])
    shuffle = rng.permutation(len(row_window))
    row_x, row_window, row_cut, target = row_x[shuffle], row_window[shuffle], row_cut[shuffle], target[shuffle]
    none = np.zeros(0, dtype=np.int64)

    def arrange() -> list:
        runs = []
        for r in range(n_runs):
            ids = np.flatnonzero(target == r)
            batches = []
            for i in rng.permutation(len(real)):
                if owner[i] != r:
                    continue
                fill = rows - len(real[i])
                batches.append(("real", real[i], ids[:fill]))
                ids = ids[fill:]
            for i in range(0, len(ids), rows):
                batches.insert(int(rng.integers(0, len(batches) + 1)), ("probe", none, ids[i:i + rows]))
            runs.append(batches)
        return runs

    # a probe copy should not sit at the same place in its process's sequence as its original in
    # the other's: a model whose output depends on how many batches it has seen would agree there
    runs = min((arrange() for _ in range(ARRANGE_TRIES)), key=lambda runs: _aligned(runs, row_window))
    columns = torch.as_tensor(np.sort(rng.choice(vocab, size=min(n_columns, vocab), replace=False)))
    tested = int((val_x[donors, cuts + 1] != val_x[originals, cuts + 1]).sum())
    return HiddenPlan(runs, row_x, row_window, row_cut, columns, tested)


ARRANGE_TRIES = 32
DONOR_TRIES = 8


def causal_rows(val_x: np.ndarray, order: np.ndarray, n_causal: int, rng: np.random.Generator) -> tuple:
    """(windows, cuts, donors), each (k,): the hidden causality rows. k = n_causal distinct (window,
    cut) positions, at most every position of every window. A next-token leak shows in a row only
    at its cut (the one position whose own prefix is kept and whose next token changes), so each
    row tests one position and power grows with k (benchmark/judge/power.py). The cuts are
    stratified over [0, T - 2] (every position once when k = T - 1), the windows spread evenly
    (each window once before any twice), and each donor is another window whose token after the
    cut differs from the original's where one is found in DONOR_TRIES draws (an equal token would
    test nothing there)."""
    n, seq_len = val_x.shape
    m = seq_len - 1
    k = min(n_causal, n * m)
    if k < 1:
        none = np.zeros(0, dtype=np.int64)
        return none, none, none
    cuts = stratified_cuts(k, seq_len, rng)
    windows = np.concatenate([rng.permutation(order) for _ in range(-(-k // n))])[:k].astype(np.int64)
    key = windows * m + cuts
    _, first = np.unique(key, return_index=True)
    if len(first) < k:  # a window drawn twice at one cut takes a cut it has not got yet
        used = set(key[first].tolist())
        for i in np.setdiff1d(np.arange(k), first):
            w = int(windows[i])
            free = [c for c in range(m) if w * m + c not in used]
            cuts[i] = free[int(rng.integers(len(free)))]
            used.add(w * m + int(cuts[i]))
    if n == 1:
        return windows, cuts, windows.copy()
    place = np.empty(n, dtype=np.int64)
    place[order] = np.arange(n)
    donors = np.empty(k, dtype=np.int64)
    todo = np.arange(k)
    for _ in range(DONOR_TRIES):
        j = rng.integers(0, n - 1, size=len(todo))
        donors[todo] = order[j + (j >= place[windows[todo]])]  # any window but the original
        todo = todo[val_x[donors[todo], cuts[todo] + 1] == val_x[windows[todo], cuts[todo] + 1]]
        if not len(todo):
            break
    return windows, cuts, donors


def _aligned(runs: list, row_window: np.ndarray) -> int:
    """Probe rows scored at the same position of their process's sequence as their original."""
    where = {int(w): pos for batches in runs for pos, (_, windows, _) in enumerate(batches) for w in windows}
    return sum(where.get(int(row_window[i])) == pos
               for batches in runs for pos, (_, _, ids) in enumerate(batches) for i in ids)


class HiddenRecorder:
    """Keeps the compared log-probabilities of the wanted windows and of every probe row."""

    def __init__(self, plan: HiddenPlan, val_y: np.ndarray) -> None:
        self.plan = plan
        self.wanted = plan.wanted
        self.val_y = torch.as_tensor(val_y)
        self.real: dict = {}
        self.probe: dict = {}
        self.order: dict = {}   # window or probe row -> position in the run

    def record_real(self, step: int, windows: np.ndarray, logp: torch.Tensor) -> None:
        """`logp` (n, T, C + 1): each window's log-probabilities on the secret columns and, last,
        on its true next token."""
        for row, w in enumerate(windows):
            if int(w) in self.wanted:
                self.real[int(w)] = logp[row].float()
                self.order[("real", int(w))] = step

    def record_probe(self, step: int, probe_ids: np.ndarray, logp: torch.Tensor) -> None:
        """As record_real, for probe rows (the true next token of the window each copies)."""
        for row, i in enumerate(probe_ids):
            self.probe[int(i)] = logp[row].float()
            self.order[("probe", int(i))] = step

    def checks(self, tol: float, gain_tol: float) -> list:
        plan, T = self.plan, self.val_y.shape[1]
        if len(self.probe) != len(plan.row_window) or not self.wanted <= set(self.real):
            return [check("probe:hidden", False, "not every probe batch was evaluated")]
        causal = np.flatnonzero(plan.row_cut >= 0)
        repeat = np.flatnonzero(plan.row_cut < 0)
        out = []
        if len(causal):
            pairs = [(self.real[int(plan.row_window[i])], self.probe[int(i)]) for i in causal]
            cuts = plan.row_cut[causal]
            out.append(compare_pairs("probe:causality_eval", pairs, prefix_mask(cuts, T), tol, gain_tol,
                                     LEAK, band_mask(cuts, T)))
        if len(repeat):
            # signed by time: a model that profits from what it saw earlier gains on the later copy
            later_first = [self.order[("probe", int(i))] > self.order[("real", int(plan.row_window[i]))]
                           for i in repeat]
            pairs = [(self.probe[int(i)], self.real[int(plan.row_window[i])]) if late else
                     (self.real[int(plan.row_window[i])], self.probe[int(i)])
                     for i, late in zip(repeat, later_first)]
            everywhere = torch.ones(len(repeat), T, dtype=torch.bool)
            out.append(compare_pairs("probe:batch_independence", pairs, everywhere, tol, gain_tol,
                                     MIXING, everywhere))
        return out
