"""The power of the hidden causality probes: which leaks they catch, and how often.

A next-token leak (position t's prediction reads token t + 1) shows in a hidden causal probe row
(probes.causal_rows) at one position only: the cut p, whose own prefix the row keeps and whose next
token it changes. A leak that fires at a fraction f of the validation positions, wherever it fires,
then passes k distinct tested positions with probability about (1 - f)^k ~ exp(-k f):
  - chosen by the prefix (tokens <= t; the hardest case): the probe's copy fires where the original
    does, and only the original's position is a draw: k draws;
  - chosen with the next token too (a hash of tokens t and t + 1): the copy's new next token is a
    second draw, about 2k.
Only the hidden rows count here: a leak that fires only in batches of the validation batch size is
never in the training worker's direct probes (probe_windows rows).

What a leak is worth: at the positions where it fires it gains at most their loss (a perfect leak
takes the true token's probability to 1), so a leak at positions it does not choose by their loss
gains f x L nats of mean loss (L: the run's mean validation loss) and lowers the perplexity by the
fraction 1 - exp(-f L). The density worth a fraction w of perplexity is f = -ln(1 - w) / L.

simulate() measures the power with the plan's own draws (probes.causal_rows) against synthetic
leaks that fire on a hash of the tokens; docs/probe-power.md gives its figures.
`python -m benchmark probe-power` prints them.
"""

from __future__ import annotations

import math
import sys
from typing import Optional

import numpy as np

from . import probes

CAUGHT = 0.99   # the detection probability a result's probe_power states densities at


def causal_rows(spec) -> int:
    """Hidden causal probe rows of a run: the audit's when spec.audit is set."""
    return spec.audit_causal_rows if spec.audit else spec.probe_causal_rows


def scoring_processes(spec, n_windows: int) -> int:
    """Scoring processes of a run: two, or in an audit as many as keep each one's sequence of
    batches no longer than a normal run's, so that a model cannot tell an audit by counting its
    batches and stop leaking past a normal run's count (probes.hidden_plan gives each at least
    one full validation batch, so small validation sets keep fewer)."""
    def batches(causal: int) -> int:
        return -(-n_windows // spec.val_batch_size) + -(-(causal + spec.probe_repeat_rows) // spec.val_batch_size)

    return max(2, -(-2 * batches(causal_rows(spec)) // batches(spec.probe_causal_rows)))


def leak_density(worth: float, loss: float) -> float:
    """The fraction of positions at which a perfect leak lowers the perplexity by `worth` (a
    fraction), at mean validation loss `loss` (nats)."""
    return -math.log1p(-worth) / loss


def density_caught(positions: int, probability: float = CAUGHT) -> float:
    """The leak density that `positions` tested positions catch with `probability` (prefix-keyed
    leak: one draw per position)."""
    return 1.0 - (1.0 - probability) ** (1.0 / positions) if positions else 1.0


def summary(positions: int, val_loss: Optional[float]) -> dict:
    """A result's probe_power: positions tested, the leak density caught with probability 0.99,
    and (when the loss is known) the fraction of this run's perplexity such a leak is worth."""
    f = density_caught(positions)
    out = {"positions_tested": int(positions), "leak_density_caught_99": round(f, 6)}
    if isinstance(val_loss, (int, float)) and math.isfinite(val_loss) and val_loss > 0:
        out["leak_worth_caught_99"] = round(-math.expm1(-f * val_loss), 6)
    return out


# ----------------------------------------------------------------------------- simulation
_M1, _M2, _M3 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def _mix(z: np.ndarray) -> np.ndarray:
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * _M2
        z = (z ^ (z >> np.uint64(27))) * _M3
        return z ^ (z >> np.uint64(31))


def prefix_hashes(val_x: np.ndarray, salt: int) -> np.ndarray:
    """(n, T) uint64: a rolling hash of each window's tokens 0..t (what a model can compute at t),
    seeded by the leak's salt."""
    h = np.full(len(val_x), salt, dtype=np.uint64)
    out = np.empty(val_x.shape, dtype=np.uint64)
    with np.errstate(over="ignore"):
        for t in range(val_x.shape[1]):
            h = _mix(h ^ ((val_x[:, t].astype(np.uint64) + np.uint64(1)) * _M1))
            out[:, t] = h
    return out


def leak_draws(hashes: np.ndarray, windows: np.ndarray, cuts: np.ndarray, nexts: np.ndarray,
               keyed: str) -> np.ndarray:
    """The synthetic leak's uniform in [0, 1) at position `cuts` of `windows` when the next token
    is `nexts` (`hashes`: prefix_hashes); the leak fires where it is under its threshold. keyed
    "prefix": a hash of the tokens up to t alone (the next token plays no part, so a probe copy,
    which keeps the prefix, fires where its original does); "next": of those and token t + 1."""
    h = hashes[windows, cuts]
    if keyed == "next":
        with np.errstate(over="ignore"):
            h = _mix(h ^ ((nexts.astype(np.uint64) + np.uint64(1)) * _M2))
    elif keyed != "prefix":
        raise ValueError(f"keyed must be 'prefix' or 'next', not {keyed!r}")
    return (h >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def simulate(val_x: np.ndarray, n_causal: int, densities, *, leaks: int = 50, plans: int = 40,
             keyed: str = "prefix", rng: Optional[np.random.Generator] = None) -> dict:
    """Detection probability of each leak density over `leaks` x `plans` draws. Each leak (a fresh
    salt) fires at exactly the given fraction of the validation positions that can leak (t <= T - 2:
    the last position's next token is outside its window): those with the lowest hash uniforms.
    Each plan draws the hidden causal rows as a run does (probes.causal_rows); the leak is caught
    when it fires at a row's cut in the original window or in the probe copy (whose next token is
    the donor's) and the two next tokens differ. Returns {density: detection probability}."""
    rng = rng or np.random.default_rng()
    densities = [float(f) for f in densities]
    n, seq_len = val_x.shape
    m = seq_len - 1
    all_w = np.repeat(np.arange(n), m)
    all_t = np.tile(np.arange(m), n)
    order = np.arange(n)
    caught = np.zeros(len(densities))
    for _ in range(leaks):
        hashes = prefix_hashes(val_x, int(rng.integers(1, 2**62)))
        everywhere = np.sort(leak_draws(hashes, all_w, all_t, val_x[all_w, all_t + 1], keyed))
        # the lowest round(f x N) uniforms fire (a hash of the whole prefix: windows share one only
        # where they begin alike, so hardly more fire)
        thresholds = np.array([everywhere[int(round(f * len(everywhere))) - 1] if f * len(everywhere) >= 0.5
                               else -1.0 for f in densities])
        for _ in range(plans):
            windows, cuts, donors = probes.causal_rows(val_x, order, n_causal, rng)
            own, new = val_x[windows, cuts + 1], val_x[donors, cuts + 1]
            u = np.minimum(leak_draws(hashes, windows, cuts, own, keyed),
                           leak_draws(hashes, windows, cuts, new, keyed))
            u = u[own != new]
            lowest = float(u.min()) if len(u) else math.inf
            caught += lowest <= thresholds
    return dict(zip(densities, (caught / (leaks * plans)).tolist()))


DENSITIES = (0.0005, 0.001, 0.0015, 0.002, 0.003, 0.005, 0.01, 0.02, 0.05)


def main(argv: list) -> int:
    """`python -m benchmark probe-power [--leaks N] [--plans N] [--val-tokens N]`: detection
    probability by leak density, normal and audit rows, prefix- and next-keyed leaks, on the
    validation windows (the official ones by default)."""
    import argparse

    from .data import eval_windows, load_tokens
    from ..spec import SPEC

    parser = argparse.ArgumentParser(prog="python -m benchmark probe-power")
    parser.add_argument("--leaks", type=int, default=50, help="leaks (hash salts) per density")
    parser.add_argument("--plans", type=int, default=40, help="probe plans drawn per leak")
    parser.add_argument("--val-tokens", type=int, default=None, help="validation targets (default all)")
    args = parser.parse_args(argv)
    val_x, _ = eval_windows(load_tokens(SPEC.dataset, SPEC.split, SPEC.tokenizer), SPEC.seq_len, args.val_tokens)
    loss = math.log(SPEC.reference_val_ppl)
    print(f"{len(val_x)} validation windows of {SPEC.seq_len}; {args.leaks} leaks x {args.plans} plans a "
          f"figure; worth at L = ln({SPEC.reference_val_ppl:g}) = {loss:.3f} nats (1% of perplexity: "
          f"density {leak_density(0.01, loss):.5f})")
    columns = [(name, rows, keyed) for name, rows in (("normal", SPEC.probe_causal_rows),
                                                      ("audit", SPEC.audit_causal_rows))
               for keyed in ("prefix", "next")]
    figures = [simulate(val_x, rows, DENSITIES, leaks=args.leaks, plans=args.plans, keyed=keyed,
                        rng=np.random.default_rng(i)) for i, (_, rows, keyed) in enumerate(columns)]
    print("| density | worth | " + " | ".join(f"{n} ({r} rows), {k}-keyed" for n, r, k in columns) + " |")
    print("|---" * (2 + len(columns)) + "|")
    for f in DENSITIES:
        print(f"| {f:.2%} | {-math.expm1(-f * loss):.2%} | " + " | ".join(f"{fig[f]:.3f}" for fig in figures) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
