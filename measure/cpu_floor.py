"""How efficient honest candidates are, against the judge's CPU-time allowances: the highest
`min_cpu_efficiency` each would still pass at.

Every CPU window of a worker is allowed fixed_s + (its counted FLOPs) / (rate x min_cpu_efficiency)
(benchmark/judge/budget.py), so a window that used `used` seconds against `allowed` at the spec's
floor f passes at any floor below

    f x (allowed - fixed) / (used - fixed)        (no limit where used <= fixed)

This script evaluates candidates (default: the honest corpus, tests/honest/candidates, and the
reference) through the command-line evaluator, `--jobs` at a time (2 on 2 cores: a loaded machine,
as CI's `pytest -n 2` is), and prints for each the lowest such floor over its windows and over
its training steps (the per-step `cpu_budget` verdict), then the corpus's lowest.

    python measure/cpu_floor.py [--steps 30] [--jobs 2] [--precision auto|bf16|fp32] [--output floor.json]
                                [candidate.py ...]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
WINDOW = re.compile(r"used ([\d.]+) s of CPU; ([\d.]+) s allowed for ([\d.]+) s fixed")
STEP = re.compile(r"([\d.]+) ms of CPU per training step; ([\d.]+) ms allowed")
FLOOR = re.compile(r"at ([\d.e-]+) of this machine")


def floors(result: dict) -> dict:
    """{check name: the highest floor it passes at} of one result's CPU checks."""
    out = {}
    for check in result.get("checks", []):
        name, detail = check["name"], check.get("detail", "")
        if not name.startswith(("cpu_budget", "scoring_budget")) or not FLOOR.search(detail):
            continue
        floor = float(FLOOR.search(detail).group(1))
        if (m := WINDOW.search(detail)):
            used, allowed, fixed = map(float, m.groups())
            out[name] = floor * (allowed - fixed) / (used - fixed) if used > fixed else None
        elif (m := STEP.search(detail)):
            used, allowed = map(float, m.groups())
            out[name] = floor * allowed / used
    return out


def evaluate(path: Path, steps: int, val_tokens: int, precision: str = "auto") -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, str(REPO / "evaluator.py"), str(path), "--steps", str(steps),
                           "--val-tokens", str(val_tokens), "--precision", precision, "--no-cache", "--quiet"],
                          capture_output=True, text=True, cwd=REPO, env=os.environ)
    try:
        result = json.loads(proc.stdout)
    except json.JSONDecodeError:
        return {"candidate": path.stem, "error": proc.stderr[-500:]}
    found = floors(result)
    bounded = {k: v for k, v in found.items() if v is not None}
    return {"candidate": path.stem, "valid": result.get("valid"), "error_type": result.get("error_type"),
            "wait_policy": result.get("environment", {}).get("omp_wait_policy"),
            "precision": result.get("precision"), "cpu_ms_per_step": result.get("timings", {}).get("cpu_ms_per_step"),
            "floors": found, "lowest": min(bounded.values(), default=None),
            "lowest_at": min(bounded, key=bounded.get) if bounded else None,
            "wall_s": round(time.perf_counter() - t0, 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("candidates", nargs="*", type=Path)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--val-tokens", type=int, default=4096)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--precision", default="auto", choices=("auto", "bf16", "fp32"))
    parser.add_argument("--output", type=Path)
    args = parser.parse_args()
    paths = args.candidates or [REPO / "initial_program.py"] + sorted((REPO / "tests/honest/candidates").glob("*.py"))
    rows = []
    with ThreadPoolExecutor(args.jobs) as pool:
        for row in pool.map(lambda p: evaluate(p, args.steps, args.val_tokens, args.precision), paths):
            rows.append(row)
            print(f"{row['candidate']:45s} lowest floor {row.get('lowest') or 0:7.3f} at {row.get('lowest_at')} "
                  f"({row.get('cpu_ms_per_step') or 0:.0f} ms CPU/step, wait {row.get('wait_policy')}, "
                  f"{row.get('precision')}, valid {row.get('valid')})", flush=True)
    ranked = sorted((r for r in rows if r.get("lowest")), key=lambda r: r["lowest"])
    summary = {"steps": args.steps, "jobs": args.jobs, "precision": args.precision, "rows": rows,
               "lowest": ranked[0]["lowest"] if ranked else None,
               "worst": [(r["candidate"], round(r["lowest"], 3), r["lowest_at"]) for r in ranked[:8]]}
    print(json.dumps(summary["worst"], indent=1))
    if args.output:
        args.output.write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
