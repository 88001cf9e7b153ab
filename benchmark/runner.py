"""The parent side of an evaluation: static checks, isolation, limits. Standard library only.

The candidate never runs in this process (which does not import torch). It is copied into a
private run directory, hashed, statically checked, and evaluated by ``python -m benchmark.worker``
in a new session, with a hard wall-clock limit and a resident-memory cap enforced on the whole
process group, and PR_SET_PDEATHSIG so the worker dies with its parent. The result arrives on a
dedicated pipe, tagged with a nonce the candidate cannot see.
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import logging
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Optional

from .fsutil import atomic_write, cache_dir
from .result import base_result, check, failure
from .spec import Spec
from .static_checks import check_source

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parent.parent
LOG_TAIL_CHARS = 6000
POLL_S = 0.1
# Failures that say nothing lasting about the candidate: never served from the results cache.
TRANSIENT_ERRORS = frozenset({"timeout", "memory_limit", "worker_died", "data_error", "evaluator_error",
                              "cancelled"})
# Set to stop every evaluation in flight in this process (their workers are killed), e.g. when a
# study is interrupted with Ctrl-C while evaluations run in threads.
CANCEL = threading.Event()


def result_cache_path(sha: str, spec: Spec, mode: str, device: str, precision: Optional[str],
                      data_dir: Optional[str], tokenizer_dir: Optional[str]) -> Path:
    """Results cache entry keyed by candidate sha256, the whole spec (version, dataset, seed,
    budget ...), mode, device, requested precision and where the data and tokenizer come from."""
    sources = [str(Path(d).expanduser().resolve()) if d else None for d in (
        data_dir or os.environ.get("PLASA_DATA_DIR"), tokenizer_dir or os.environ.get("PLASA_TOKENIZER_DIR"))]
    key = json.dumps({"sha256": sha, "spec": spec.to_dict(), "mode": mode, "device": device,
                      "precision": precision or "auto", "sources": sources}, sort_keys=True)
    return cache_dir() / "results" / (hashlib.sha256(key.encode()).hexdigest()[:32] + ".json")


def _cached(path: Path) -> Optional[dict]:
    try:
        result = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return dict(result, cached=True) if isinstance(result, dict) else None


def _set_pdeathsig() -> None:  # runs in the child between fork and exec
    try:
        ctypes.CDLL("libc.so.6").prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def session_rss_mb(sid: int) -> float:
    """Resident memory of every process in session `sid`, MiB (Linux /proc)."""
    total_pages = 0
    page = os.sysconf("SC_PAGE_SIZE")
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as fh:
                stat = fh.read()
            fields = stat[stat.rindex(")") + 2:].split()
            if int(fields[3]) == sid:  # field 6 of stat: session id
                with open(f"/proc/{entry.name}/statm") as fh:
                    total_pages += int(fh.read().split()[1])
        except (OSError, ValueError, IndexError):
            continue
    return total_pages * page / 2**20


class _Reader(threading.Thread):
    """Drains a pipe: raw chunks echoed and kept as a bounded tail (logs, progress bars), or
    JSON lines collected (the result channel)."""

    def __init__(self, stream, echo=None, lines: bool = False) -> None:
        super().__init__(daemon=True)
        self.stream, self.echo, self.want_lines = stream, echo, lines
        self.tail = ""
        self.lines: list = []

    def run(self) -> None:
        if self.want_lines:
            for raw in iter(self.stream.readline, b""):
                self.lines.append(raw.decode("utf-8", errors="replace"))
            return
        for raw in iter(lambda: self.stream.read1(65536), b""):
            text = raw.decode("utf-8", errors="replace")
            if self.echo is not None:
                try:
                    self.echo.write(text)
                    self.echo.flush()
                except (OSError, ValueError):
                    pass
            self.tail = (self.tail + text)[-LOG_TAIL_CHARS:]


def evaluate_file(candidate: str, *, overrides: Optional[dict] = None, data_dir: Optional[str] = None,
                  tokenizer_dir: Optional[str] = None, device: str = "cpu",
                  precision: Optional[str] = None, mode: str = "full",
                  time_limit_s: Optional[float] = None, memory_limit_mb: Optional[int] = None,
                  progress: bool = True, echo=sys.stderr, use_cache: bool = True,
                  trusted: bool = False, threads: Optional[int] = None) -> dict:
    """Evaluates one candidate file in an isolated worker; always returns a result dict.

    With `use_cache`, an identical candidate (same sha256) under the same spec, mode, device and
    precision is answered from PLASA_CACHE_DIR/results (OpenEvolve re-sends unchanged programs).
    `trusted` skips the static checks, for the benchmark's own experiment models only (they import
    the benchmark); they still run isolated, with every probe. `threads` caps the worker's torch
    threads (OMP_NUM_THREADS), for several evaluations side by side.
    """
    spec = Spec().replace(**(overrides or {}))
    started = time.monotonic()
    try:
        source_bytes = Path(candidate).read_bytes()
    except OSError as exc:
        return failure(base_result(spec, mode, None, candidate, []), "load", "file_not_found",
                       f"cannot read candidate {candidate}: {exc.strerror or exc}")
    sha = hashlib.sha256(source_bytes).hexdigest()
    base = base_result(spec, mode, sha, candidate, [])
    try:
        source = source_bytes.decode("utf-8")
    except UnicodeDecodeError:
        return failure(base, "static", "encoding_error", "the candidate is not UTF-8 text")
    violations = [] if trusted else check_source(source)
    base["checks"].append(check("static", not violations,
                                "; ".join(map(str, violations[:20])) or
                                ("skipped: a benchmark-owned experiment model" if trusted
                                 else "imports and calls allowed")))
    if violations:
        return failure(base, "static", "static_check",
                       f"{len(violations)} forbidden construct(s): " + "; ".join(map(str, violations[:5])))

    cache_path = result_cache_path(sha, spec, mode, device, precision, data_dir, tokenizer_dir)
    if use_cache:
        cached = _cached(cache_path)
        if cached is not None:
            cached["candidate"] = dict(cached.get("candidate", {}), path=candidate)
            return cached

    limit = float(time_limit_s or spec.time_limit_s)
    mem_cap = int(memory_limit_mb or spec.memory_limit_mb)
    run_dir = Path(tempfile.mkdtemp(prefix="plasa-run-"))
    try:
        private = run_dir / "candidate.py"
        private.write_bytes(source_bytes)
        private.chmod(0o400)
        nonce = secrets.token_hex(16)
        request = {"nonce": nonce, "candidate": str(private), "display_path": candidate, "sha256": sha,
                   "overrides": overrides or {}, "data_dir": data_dir, "tokenizer_dir": tokenizer_dir,
                   "device": device, "precision": precision, "mode": mode, "progress": progress,
                   "checks": base["checks"]}
        read_fd, write_fd = os.pipe()
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(
            [str(REPO_ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]),
            PYTHONDONTWRITEBYTECODE="1")
        if threads:
            env["OMP_NUM_THREADS"] = str(threads)
        proc = subprocess.Popen(
            [sys.executable, "-m", "benchmark.worker", str(write_fd)], cwd=run_dir, env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            pass_fds=(write_fd,), start_new_session=True, preexec_fn=_set_pdeathsig)
        os.close(write_fd)
        logs = _Reader(proc.stdout, echo=echo if progress else None)
        channel = _Reader(os.fdopen(read_fd, "rb"), lines=True)
        logs.start()
        channel.start()
        try:
            proc.stdin.write(json.dumps(request).encode())
            proc.stdin.close()
        except BrokenPipeError:
            pass
        killed, peak_mb = None, 0.0
        while proc.poll() is None:
            elapsed = time.monotonic() - started
            rss = session_rss_mb(proc.pid)
            peak_mb = max(peak_mb, rss)
            if CANCEL.is_set():
                killed = ("cancelled", "the evaluation was cancelled")
            elif elapsed > limit:
                killed = ("timeout", f"the evaluation exceeded its {limit:.0f} s wall-clock limit "
                                     "(an infinite loop, or a model far slower than the reference)")
            elif rss > mem_cap:
                killed = ("memory_limit", f"the worker used {rss:.0f} MiB, over the {mem_cap} MiB "
                                          "memory limit")
            if killed:
                break
            time.sleep(POLL_S)
        _kill_group(proc)
        logs.join(timeout=5)
        channel.join(timeout=5)
        messages = [m for m in (_parse(line) for line in channel.lines) if m and m.get("nonce") == nonce]
        results = [m["result"] for m in messages if m.get("type") == "result"]
        progress_msgs = [m for m in messages if m.get("type") == "progress"]
        last = progress_msgs[-1] if progress_msgs else {}
        if results and not killed:
            result = results[-1]
        else:
            partial = dict(base, loss_curve=last.get("loss_curve", []))
            if last.get("step") is not None:
                partial["steps_completed"] = last["step"]
            stage = last.get("stage", "load")
            if killed:
                result = failure(partial, stage, killed[0], killed[1], log_tail=logs.tail)
            else:
                result = failure(partial, stage, "worker_died",
                                 f"the worker exited with code {proc.returncode} during {stage} without a "
                                 "result (sys.exit, os._exit, a crash or a kill)", log_tail=logs.tail)
        result.setdefault("timings", {})["wall_s"] = time.monotonic() - started
        result["peak_rss_mb"] = round(peak_mb, 1)
        if use_cache and result.get("error_type") not in TRANSIENT_ERRORS:
            try:
                atomic_write(cache_path, json.dumps(result, allow_nan=False).encode())
            except (OSError, ValueError) as exc:
                log.warning("could not write the results cache: %s", exc)
        return result
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def _parse(line: str) -> Optional[dict]:
    try:
        value = json.loads(line)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        pass
