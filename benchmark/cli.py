"""Command line of ``evaluator.py``. Standard library only (the candidate runs in a worker).

    python evaluator.py CANDIDATE [--dataset NAME] [--data-dir DIR] [--tokenizer-dir DIR]
        [--seed N] [--steps N] [--device cpu|cuda] [--precision auto|bf16|fp32] [--split validation|test]
        [--val-tokens N] [--allow-uniform-top-k] [--time-limit S] [--memory-limit MB] [--heartbeat S]
        [--stage 1|2|3]
        [--seeds N] [--audit] [--no-cache] [--output FILE] [--quiet]
    python evaluator.py --program_path P --results_dir D [--k v ...]     (ShinkaEvolve)

Prints one JSON result on stdout (logs and progress on stderr). Exit code 0 when a score was
produced, 1 when the candidate failed, 2 for a bad command line.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional

from .judge.data import CORPUS_NAMES, SPLITS
from .result import SCHEMA, clean, failure
from .analysis.multiseed import evaluate_seeds
from .judge.options import Options
from .judge.runner import evaluate_file
from .spec import SPEC


class _UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # a bad flag gets a JSON failure, not a bare usage dump
        raise _UsageError(message)


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="evaluator.py", description="Train a PLASA-Bench candidate on the fixed budget "
                                                  "and print its score as JSON.")
    p.add_argument("candidate", nargs="?", help="candidate .py file (build_model(config) or PLASAModel)")
    p.add_argument("--program_path", help="candidate path (ShinkaEvolve's flag)")
    p.add_argument("--results_dir", help="write metrics.json and correct.json here (ShinkaEvolve)")
    p.add_argument("--dataset", choices=CORPUS_NAMES, help=f"corpus (default {SPEC.dataset})")
    p.add_argument("--data-dir", help="local data folder (default $PLASA_DATA_DIR)")
    p.add_argument("--tokenizer-dir", help="local tokenizer folder (default $PLASA_TOKENIZER_DIR)")
    p.add_argument("--seed", type=int, help=f"seed (default {SPEC.seed}; other seeds are unofficial)")
    p.add_argument("--steps", type=_positive_int, help=f"optimizer steps (default {SPEC.steps}; unofficial)")
    p.add_argument("--split", choices=SPLITS[1:], help="scored split (default validation; test is for "
                                                       "final reports only)")
    p.add_argument("--val-tokens", type=_positive_int, help="score only the first N target tokens (unofficial)")
    p.add_argument("--allow-uniform-top-k", action="store_true",
                   help="accept one k in every layer (dense or uniform baselines; unofficial)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"),
                   help="default auto: bf16 where the device supports it and, on a CPU, where it measures faster")
    p.add_argument("--time-limit", type=float, help=f"hard wall-clock limit, s (default {SPEC.time_limit_s:g})")
    p.add_argument("--memory-limit", type=_positive_int, help=f"memory cap, MiB (default {SPEC.memory_limit_mb})")
    p.add_argument("--heartbeat", type=float, help=f"kill a worker silent this long as a hang, s (default "
                                                   f"{SPEC.heartbeat_s:g}, or {SPEC.heartbeat_factor:g}x its median step)")
    p.add_argument("--stage", choices=("1", "2", "3"),
                   help="1: checks and a smoke run only (cascade); 2: full; 3: full, plus "
                        f"{SPEC.stage3_extra_seeds} more seeds averaged when the score is within seed "
                        "noise of the best this cache has seen (noise-aware selection)")
    p.add_argument("--seeds", type=_positive_int, default=1,
                   help="train N seeds (seed, seed+1, ...): per-seed scores, mean, std, 95%% CI; "
                        "the first seed's probes run at the audit's power")
    p.add_argument("--audit", action="store_true",
                   help=f"full-power probe audit: {SPEC.audit_causal_rows} hidden causality rows instead of "
                        f"{SPEC.probe_causal_rows}, catching with 99%% a leak worth 1%% of perplexity "
                        "(docs/probe-power.md); stage 3 audits its extra seeds anyway")
    p.add_argument("--no-cache", action="store_true", help="ignore and do not write the results cache")
    p.add_argument("--output", help="also write the JSON result to this file")
    p.add_argument("--quiet", action="store_true", help="no progress bars or worker logs on stderr")
    return p


def overrides_from(args: argparse.Namespace) -> dict:
    """PLASA_OVERRIDES (as for the search integration), then the flags."""
    flags = {"dataset": args.dataset, "seed": args.seed, "steps": args.steps, "split": args.split,
             "val_tokens": args.val_tokens, "heartbeat_s": args.heartbeat,
             "require_progressive": False if args.allow_uniform_top_k else None,
             "audit": True if args.audit else None}
    return dict(getattr(args, "env_overrides", {}), **{k: v for k, v in flags.items() if v is not None})


def options_from(args: argparse.Namespace) -> Options:
    return Options(overrides=overrides_from(args), data_dir=args.data_dir, tokenizer_dir=args.tokenizer_dir,
                   device=args.device, precision=args.precision,
                   mode="stage1" if args.stage == "1" else "full", time_limit_s=args.time_limit,
                   memory_limit_mb=args.memory_limit, progress=not args.quiet, use_cache=not args.no_cache)


def run_args(args: argparse.Namespace, candidate: str) -> dict:
    options = options_from(args)
    if args.stage == "3":
        from .search.noise import evaluate_noise_aware

        return evaluate_noise_aware(candidate, options)
    if args.seeds > 1:
        return evaluate_seeds(candidate, args.seeds, options)
    return evaluate_file(candidate, options)


def write_shinka(result: dict, results_dir: str) -> None:
    """ShinkaEvolve's files: metrics.json (combined_score, public, private, text_feedback) and
    correct.json ({correct, error})."""
    from .search.feedback import text_feedback
    from .search.integration import relative_score

    out = Path(results_dir)
    out.mkdir(parents=True, exist_ok=True)
    public = {"relative_score": round(relative_score(result, SPEC), 4)}
    public.update({k: result.get(k) for k in ("val_ppl", "val_loss", "val_acc", "n_seeds", "combined_score_std",
                                              "train_loss", "step_ms_median") if k in result})
    public.update(result.get("descriptors") or {})
    metrics = {"combined_score": result.get("combined_score", 0.0), "public": public,
               "private": {"checks": result.get("checks", []), "timings": result.get("timings", {})},
               "text_feedback": text_feedback(result)}
    (out / "metrics.json").write_text(json.dumps(clean(metrics), indent=1))
    correct = {"correct": bool(result.get("valid")), "error": result.get("error")}
    (out / "correct.json").write_text(json.dumps(correct, indent=1))


def emit(result: dict, output: Optional[str]) -> None:
    text = json.dumps(clean(result), indent=1, allow_nan=False)
    if output:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(text + "\n")
    sys.stdout.write(text + "\n")
    sys.stdout.flush()
    if result.get("valid"):
        print(f"score {result['combined_score']:.6f} (val_ppl {result.get('val_ppl', float('nan')):.3f})"
              if "val_ppl" in result else f"passed ({result.get('mode')})", file=sys.stderr)
    else:
        print(f"FAILED [{result.get('stage')}/{result.get('error_type')}]: {result.get('error')}",
              file=sys.stderr)


def main(argv: Optional[list] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    try:
        args, unknown = parser.parse_known_args(argv)
        if unknown and not _shinka_mode(argv):
            raise _UsageError(f"unrecognized arguments: {' '.join(unknown)}")
        candidate = args.program_path or args.candidate
        if not candidate:
            raise _UsageError("give a candidate file: python evaluator.py CANDIDATE (or --program_path P)")
        from .search.integration import env_overrides

        args.env_overrides = env_overrides()
    except (_UsageError, argparse.ArgumentTypeError, ValueError) as exc:
        result = failure({"schema": SCHEMA, "spec_version": SPEC.version}, "cli", "usage_error",
                         f"bad command line: {exc}. Run `python evaluator.py --help` for usage.")
        emit(result, None)
        return 2
    result = run_args(args, candidate)
    emit(result, args.output)
    if args.results_dir:
        write_shinka(result, args.results_dir)
        return 0  # ShinkaEvolve reads correct.json; a failed candidate is not a failed command
    return 0 if result.get("valid") else 1


def _shinka_mode(argv: list) -> bool:
    return any(a == "--results_dir" or a.startswith("--results_dir=") for a in argv)
