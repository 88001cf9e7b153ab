"""The judge's entry point: :func:`evaluate_file`. Never imports the candidate.

The candidate file is read, hashed and statically checked (a courtesy: clear mistakes get a line
number before anything runs), then evaluated by :class:`benchmark.judge.evaluation.Evaluation`
in a private run folder, with the candidate running only in sandboxed worker processes. Results of
candidate failures and successes are cached by candidate hash, spec, data sources and a hash of
the evaluator's own sources; failures of the machine or of the evaluator are never cached.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import tempfile
import time
import traceback
from functools import lru_cache
from pathlib import Path
from typing import Optional

from .launch import CANCEL, REPO_ROOT  # noqa: F401  (CANCEL is part of this module's interface)
from .options import Options
from .static_checks import check_source
from ..fsutil import atomic_write, cache_dir, remove_tree
from ..result import base_result, check, clean, descriptors, failure
from ..spec import Spec

log = logging.getLogger(__name__)

# Failures that say nothing lasting about the candidate: never served from the results cache.
TRANSIENT_ERRORS = frozenset({"timeout", "memory_limit", "worker_died", "data_error", "evaluator_error",
                              "cancelled", "hang", "bad_device", "usage_error"})


@lru_cache(maxsize=1)
def evaluator_hash() -> str:
    """sha256 of the benchmark package's own sources: a result is only reused by the same code."""
    digest = hashlib.sha256()
    root = REPO_ROOT / "benchmark"
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def result_cache_path(sha: str, spec: Spec, mode: str, device: str, precision: Optional[str],
                      data_dir: Optional[str], tokenizer_dir: Optional[str]) -> Path:
    """Results cache entry keyed by candidate sha256, the whole spec, mode, the kind of device
    (:func:`~benchmark.judge.placement.device_kind`: a result from GPU 3 serves GPU 1 of the same
    model), requested precision, where the data and tokenizer come from, and the evaluator's own
    sources."""
    from .placement import device_kind

    sources = [str(Path(d).expanduser().resolve()) if d else None for d in (
        data_dir or os.environ.get("PLASA_DATA_DIR"), tokenizer_dir or os.environ.get("PLASA_TOKENIZER_DIR"))]
    key = json.dumps({"sha256": sha, "spec": spec.to_dict(), "mode": mode, "device": device_kind(device),
                      "precision": precision or "auto", "sources": sources,
                      "evaluator": evaluator_hash()}, sort_keys=True)
    return cache_dir() / "results" / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".json")


def _cached(path: Path) -> Optional[dict]:
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError, RecursionError):
        return None
    return dict(result, cached=True) if isinstance(result, dict) else None


SHM = "/dev/shm"


def run_bytes(spec: Spec) -> int:
    """What one evaluation's run folder holds at its peak: one worker's logits file, two state
    files (the judge's copy for the scoring worker, and the worker's), 256 MiB for the rest."""
    rows = max(spec.val_batch_size, spec.probe_windows, spec.replay_windows, spec.batch_size)
    return rows * spec.seq_len * spec.vocab_size * 4 + 2 * spec.max_state_bytes + (256 << 20)


def _shm_state(path: str) -> tuple:
    """(free bytes, mounted noexec) of the file system at `path`."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize, bool(st.f_flag & os.ST_NOEXEC)


def run_root(needed: int) -> tuple:
    """(folder for run folders or None for the temp dir, why). Logits pass through them, so they
    live in memory (/dev/shm) where it can hold a run: Docker's and Kubernetes' default /dev/shm
    is 64 MiB, where a 0.8 GB logits file would kill the worker with SIGBUS; and it is mounted
    noexec there, where torch.compile cannot load the code it builds in the worker's folder."""
    fallback = f"run folder in {tempfile.gettempdir()}"
    if not (os.path.isdir(SHM) and os.access(SHM, os.W_OK)):
        return None, f"{fallback}: no writable {SHM}"
    try:
        free, noexec = _shm_state(SHM)
    except OSError as exc:
        return None, f"{fallback}: {SHM} unreadable ({exc})"
    if free < needed:
        return None, (f"{fallback}: {SHM} has {free / 2**20:.0f} MiB free and a run needs "
                      f"{needed / 2**20:.0f} MiB (a container's default; docker run --shm-size=2g)")
    if noexec:
        return None, f"{fallback}: {SHM} is mounted noexec (torch.compile could not load its code)"
    return SHM, f"run folder in {SHM} (memory)"


OWNER_FILE = "owner.pid"


def _sweep_stale_runs(root: str) -> None:
    """Removes run folders whose evaluator process is gone (killed with SIGKILL, which no
    `finally` survives): in /dev/shm they hold memory until the machine restarts."""
    for folder in Path(root).glob("plasa-run-*"):
        try:
            pid = int((folder / OWNER_FILE).read_text())
        except (OSError, ValueError):
            continue  # not ours to judge, or just being created
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            remove_tree(folder)
        except OSError:
            pass


def evaluate_file(candidate: str, options: Optional[Options] = None, **changes) -> dict:
    """Evaluates one candidate file; always returns a result dict (schema: benchmark.result),
    with its `descriptors`. `options` (:class:`~benchmark.judge.options.Options`, default: the
    official evaluation) with `changes`, its fields as keywords: overrides, mode, device,
    precision, data_dir, tokenizer_dir, time_limit_s, memory_limit_mb, progress, echo, use_cache,
    trusted, threads, sandbox.

    `trusted` skips the static checks, for the benchmark's own experiment models only (they import
    the benchmark); they still run in sandboxed workers, with every probe. `threads` caps the
    workers' torch threads, for several evaluations side by side.
    """
    try:
        options = Options.of(options, **changes)
    except ValueError as exc:  # a keyword that is no option stays a TypeError: the caller's bug
        return failure(base_result(Spec(), changes.get("mode", "full"), None, candidate, []), "cli",
                       "usage_error", str(exc))
    if options.device == "cuda":  # several evaluations on a multi-GPU machine: one GPU each
        from .placement import gpu_slot

        with gpu_slot() as device:
            result = _evaluate_file(candidate, options.replace(device=device))
    else:
        result = _evaluate_file(candidate, options)
    result["descriptors"] = descriptors(result)
    return result


def _evaluate_file(candidate: str, options: Options) -> dict:
    started = time.monotonic()
    mode, trusted = options.mode, options.trusted
    try:
        spec = options.spec
    except (TypeError, ValueError) as exc:
        return failure(base_result(Spec(), mode, None, candidate, []), "cli", "usage_error", str(exc))
    try:
        source_bytes = Path(candidate).read_bytes()
    except OSError as exc:
        return failure(base_result(spec, mode, None, candidate, []), "load", "file_not_found",
                       f"cannot read candidate {candidate}: {exc.strerror or exc}")
    sha = hashlib.sha256(source_bytes).hexdigest()
    base = base_result(spec, mode, sha, candidate, [])
    base["evaluator"] = evaluator_hash()
    try:
        source = source_bytes.decode("utf-8")
    except UnicodeDecodeError:
        return failure(base, "static", "encoding_error", "the candidate is not UTF-8 text; save it as UTF-8")
    violations = [] if trusted else check_source(source)
    base["checks"].append(check("static", not violations,
                                "; ".join(map(str, violations[:20])) or
                                ("skipped: a benchmark-owned experiment model" if trusted
                                 else "imports and calls allowed")))
    if violations:
        return failure(base, "static", "static_check",
                       f"{len(violations)} construct(s) the rules forbid: " + "; ".join(map(str, violations[:5])))

    # Keyed by the source without trailing whitespace at its end, which cannot change what Python
    # runs: ShinkaEvolve drops the last newline of every program it writes, and a search that
    # re-sends a program that way is answered from the cache.
    cache_path = result_cache_path(hashlib.sha256(source_bytes.rstrip() + b"\n").hexdigest(), spec, mode,
                                   options.device, options.precision, options.data_dir, options.tokenizer_dir)
    if options.use_cache:
        cached = _cached(cache_path)
        if cached is not None:
            cached["candidate"] = dict(cached.get("candidate", {}), path=candidate, sha256=sha)
            return cached

    limit = float(options.time_limit_s or spec.time_limit_s)
    root, where = run_root(run_bytes(spec))
    if root is None and os.path.isdir(SHM):
        log.warning("%s", where)
    for folder in {root or tempfile.gettempdir(), tempfile.gettempdir()}:
        _sweep_stale_runs(folder)
    run_dir = Path(tempfile.mkdtemp(prefix="plasa-run-", dir=root))
    try:
        (run_dir / OWNER_FILE).write_text(str(os.getpid()))
        private = run_dir / "candidate.py"
        private.write_bytes(source_bytes)
        from .evaluation import Evaluation  # torch is imported here, for the judge's arithmetic

        evaluation = Evaluation(candidate=str(private), display_path=candidate, sha256=sha, options=options,
                                run_dir=run_dir, deadline=started + limit, checks=base["checks"])
        try:
            result = evaluation.run()
        except Exception as exc:  # the evaluator's own bug: a structured failure, never cached
            log.exception("evaluation of %s failed", candidate)
            result = failure(evaluation.result, evaluation.stage, "evaluator_error",
                             f"the evaluator failed ({type(exc).__name__}: {exc}); this is not the "
                             "candidate's fault", traceback=traceback.format_exc()[-3000:])
        result = evaluation.complete(result, evaluator=base["evaluator"], run_folder=where, started=started)
        try:  # what the command line prints: a result it could not print is never cached
            json.dumps(clean(result), allow_nan=False)
        except (TypeError, ValueError, RecursionError) as exc:
            log.exception("the result of %s is not JSON", candidate)
            return failure(base, evaluation.stage, "evaluator_error", f"the evaluator built a result it cannot "
                           f"write as JSON ({type(exc).__name__}: {str(exc)[:300]}); this is not the candidate's fault")
        if options.use_cache and result.get("error_type") not in TRANSIENT_ERRORS:
            try:
                atomic_write(cache_path, json.dumps(result, allow_nan=False).encode())
            except (OSError, ValueError, RecursionError) as exc:
                log.warning("could not write the results cache: %s", exc)
        return result
    finally:
        remove_tree(run_dir)
