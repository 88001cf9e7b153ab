"""`python -m benchmark experiment STUDY [--seeds N] [--steps N] [--workers N] [--out DIR]
[--rows A,B] [--executor local|ray] [--address ADDR] [--report-only]`

Every run is an ordinary evaluation (benchmark.judge.runner.evaluate_file: sandboxed workers, the
evaluator's training loop, every probe) of a generated candidate file, and writes one result JSON
(the evaluator's schema) to OUT/STUDY/runs/ROW/seedS.json. A result of the row's current
definition by the current evaluator is kept (results.current), so an interrupted study resumes
where it stopped; one of an older study or spec version is run again and replaced. Runs go to a
local pool of `workers` evaluations (each with cores / workers torch threads) or to a Ray cluster.
The report (summary.md, PNGs) is rewritten at the end; --report-only rewrites it and runs nothing.
PLASA_OVERRIDES (JSON of spec fields) reaches every run where it leaves the score alone (probe
sizes, limits: extra_overrides); the fields that define a run come from the study and the flags.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Optional

from ..fsutil import atomic_write
from ..judge.runner import CANCEL, REPO_ROOT, evaluate_file
from ..spec import OFFICIAL_FIELDS, SPEC
from . import report, results, studies
from .models import candidate_source

log = logging.getLogger(__name__)


def write_candidate(out: Path, study: studies.Study, row: studies.Row, budget: int) -> Path:
    path = out / "candidates" / f"{row.name}.py"
    _, warmup = studies.row_steps(row, budget)
    atomic_write(path, candidate_source(study.name, row.name, row.pattern, row.schedule, warmup,
                                        row.layer_map).encode())
    return path


def plan(study: studies.Study, folder: Path, rows: list, seeds: int, budget: int,
         val_tokens: Optional[int] = None, extra: Optional[dict] = None) -> list:
    """The runs still to do, as tasks (without the executor's fields): every seed of every row
    whose file is not a current result. Writes the rows' candidate files. `extra`: spec fields for
    every run (see :func:`extra_overrides`), under the row's own and the run's."""
    tasks = []
    for row in rows:
        candidate = write_candidate(folder, study, row, budget)
        steps, _ = studies.row_steps(row, budget)
        for seed in results.seeds(seeds):
            path = results.run_path(folder, row.name, seed)
            if results.current(results.read(path), study, row):
                continue
            overrides = dict(extra or {}, **row.overrides, experiment=True, seed=seed, steps=steps)
            if val_tokens:
                overrides["val_tokens"] = val_tokens
            tasks.append({"row": row.name, "seed": seed, "path": str(path), "candidate": str(candidate),
                          "overrides": overrides})
    return tasks


def extra_overrides() -> dict:
    """The spec fields of PLASA_OVERRIDES (as for the search integration) that leave a run's score
    alone: probe sizes, limits. The fields that define the runs (spec.OFFICIAL_FIELDS: budget,
    model, data) come from the study and the flags only, so every run of a study stays comparable;
    one given here is a ValueError naming the flag to use."""
    from ..search.integration import env_overrides

    extra = env_overrides()
    defining = sorted(set(extra) & set(OFFICIAL_FIELDS))
    if defining:
        raise ValueError(f"PLASA_OVERRIDES sets {', '.join(defining)}, which define a study's runs: "
                         "use the flags (--steps, --val-tokens, --seeds) or a study row instead")
    SPEC.replace(**extra)  # unknown fields and wrong types fail here, before any run
    return extra


def time_limit(overrides: dict, workers: int) -> float:
    """The spec's wall-clock limit scaled by a run's work relative to the official run: steps x
    tokens per step x sequence length (attention cost per token grows with it), and by the
    workers sharing the machine. A T = 1024, batch 1 run gets 32x the official limit."""
    spec = SPEC.replace(**overrides)
    work = (spec.steps / SPEC.steps) * (spec.batch_size * spec.seq_len / (SPEC.batch_size * SPEC.seq_len)) \
        * (spec.seq_len / SPEC.seq_len)
    return SPEC.time_limit_s * max(1.0, work) * max(1, workers)


def evaluate_task(task: dict) -> dict:
    """One run; a plain function of plain data so Ray can ship it to another machine."""
    return evaluate_file(task["candidate"], overrides=task["overrides"], progress=False, use_cache=False,
                         trusted=True, threads=task["threads"], device=task.get("device", "cpu"),
                         time_limit_s=task.get("time_limit_s"))


def _local(tasks: list, workers: int):
    pool = ThreadPoolExecutor(max_workers=workers)
    futures = {pool.submit(evaluate_task, t): t for t in tasks}
    try:
        for future in as_completed(futures):
            yield futures[future], future.result()
    finally:  # interrupted: kill the evaluations in flight, drop the queued ones
        CANCEL.set()
        pool.shutdown(wait=True, cancel_futures=True)
        CANCEL.clear()


def _ray(tasks: list, address: Optional[str]):
    import ray

    if not ray.is_initialized():
        env = {k: v for k, v in os.environ.items() if k.startswith("PLASA_")}
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), os.environ.get("PYTHONPATH")]))
        ray.init(address=address, include_dashboard=False, log_to_driver=False,
                 runtime_env={"env_vars": env})
    remote = ray.remote(evaluate_task)
    pending = {remote.remote(t): t for t in tasks}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        task = pending.pop(ready[0])
        yield task, ray.get(ready[0])


def run_study(name: str, *, seeds: int = studies.CLAIM_SEEDS, steps: Optional[int] = None,
              workers: int = 1, out: str = "experiments", rows: Optional[list] = None,
              executor: str = "local", address: Optional[str] = None, val_tokens: Optional[int] = None,
              device: str = "cpu", progress: bool = True, report_only: bool = False) -> Path:
    from tqdm import tqdm

    study = studies.get(name)
    folder = Path(out) / study.name
    if report_only:
        return report.write(study, folder)
    chosen = [r for r in study.rows if rows is None or r.name in rows]
    if rows is not None and len(chosen) != len(rows):
        raise ValueError(f"unknown rows {sorted(set(rows) - {r.name for r in study.rows})} in study {name}")
    threads = max(1, (os.cpu_count() or 1) // max(1, workers))
    tasks = plan(study, folder, chosen, seeds, steps or SPEC.steps, val_tokens, extra_overrides())
    for task in tasks:
        task.update(threads=threads, device=device,
                    time_limit_s=time_limit(task["overrides"], workers if executor == "local" else 1))
    total = len(chosen) * seeds
    bar = tqdm(total=total, initial=total - len(tasks), desc=f"study {name}", unit="run",
               file=sys.stderr, disable=not progress)
    source = _ray(tasks, address) if executor == "ray" else _local(tasks, workers)
    for task, result in source:
        if result.get("error_type") == "cancelled":
            continue
        result["study"] = {"name": study.name, "version": study.version, "row": task["row"]}
        atomic_write(Path(task["path"]), json.dumps(result, indent=1).encode())
        bar.update(1)
        if not result.get("valid"):
            log.warning("%s seed %s failed: %s", task["row"], task["seed"], result.get("error"))
    bar.close()
    # the report covers every row of the study, not only this invocation's rows
    return report.write(study, folder)


def main(argv: list) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmark experiment", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("study", choices=sorted(studies.STUDIES))
    p.add_argument("--seeds", type=int, default=studies.CLAIM_SEEDS,
                   help=f"seeds per row, from {SPEC.seed} (default {studies.CLAIM_SEEDS}: what a claim needs)")
    p.add_argument("--steps", type=int, help=f"optimizer steps per run (default {SPEC.steps})")
    p.add_argument("--val-tokens", type=int, help="score only the first N validation tokens")
    p.add_argument("--workers", type=int, default=1, help="evaluations side by side (local executor)")
    p.add_argument("--out", default="experiments")
    p.add_argument("--rows", help="comma-separated row names (default: every row)")
    p.add_argument("--executor", choices=("local", "ray"), default="local")
    p.add_argument("--address", help="Ray cluster address (default: start a local Ray)")
    p.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    p.add_argument("--report-only", action="store_true",
                   help="rewrite summary.md and the figures from the run files; run nothing")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    rows = args.rows.split(",") if args.rows else None
    try:  # what run_study would refuse, refused before anything runs
        extra_overrides()
        unknown = sorted(set(rows or ()) - {r.name for r in studies.get(args.study).rows})
        if unknown:
            raise ValueError(f"unknown rows {unknown} in study {args.study}")
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        summary = run_study(args.study, seeds=args.seeds, steps=args.steps, workers=args.workers,
                            out=args.out, rows=rows,
                            executor=args.executor, address=args.address, val_tokens=args.val_tokens,
                            device=args.device, report_only=args.report_only)
    except KeyboardInterrupt:
        print("interrupted: finished runs are kept; run the same command again to resume",
              file=sys.stderr)
        return 130
    print(summary.read_text())
    return 0
