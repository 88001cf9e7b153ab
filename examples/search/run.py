"""A search you can watch: the scripted LLM drives the real OpenEvolve and ShinkaEvolve for a few
iterations at a short, unofficial budget, then prints the path each search took.

    python examples/search/run.py                      # both frameworks, 3 iterations, 20 steps
    python examples/search/run.py --framework shinka --iterations 2 --steps 3 --val-tokens 4096

Each framework runs as its users run it (`openevolve-run` with configs/openevolve.yaml, whose
evaluator_args run the cascade with its noise stage, plus the budget, a search id and
attention_density as a MAP-Elites axis in the same evaluator_args; `shinka_run` on the shinka_task/ task
folder with shinka_task/shinka.yaml and `--stage 3`, the budget in PLASA_OVERRIDES and the search id in
PLASA_SEARCH_ID), with only the LLM endpoint, the sizes of the search and the budget changed (spec
fields in a PLASA_OVERRIDES you set reach both searches; the flags win over them). Both
use your results cache (PLASA_CACHE_DIR), so a program the other framework (or an earlier run)
evaluated is answered from it; each run has its own search id, so the noise stage compares with the
best of that run only. At a 20-step budget a higher learning rate wins: the example shows the machinery, it is not
an official result.
Prints the path and writes it as JSON to OUT/path.json; exits 1 when a search's best program does
not beat the reference or a cheating program was accepted.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(HERE))
from scripted_llm import EDITS, MARKER, ScriptedLLM  # noqa: E402

from benchmark.search.integration import env_overrides  # noqa: E402

CHEATS = {e.name for e in EDITS if e.cheat}


def edits_in(code: str) -> list:
    """The scripted edits a program carries, in script order."""
    return [e.name for e in EDITS if MARKER + e.name in code]


def _row(where: int, code: str, score, feedback: str, n_seeds, density) -> dict:
    return {"iteration": where, "edits": edits_in(code), "combined_score": float(score or 0.0),
            "n_seeds": int(n_seeds or 1), "attention_density": density,
            "feedback": " ".join(str(feedback or "").split())[:300]}


def run_openevolve(llm: ScriptedLLM, out: Path, iterations: int, env: dict, budget: dict, search_id: str) -> list:
    config = yaml.safe_load((REPO / "configs" / "openevolve.yaml").read_text())
    config["llm"].update(api_base=llm.base_url, api_key="scripted", timeout=60, retries=0)
    config.update(max_iterations=iterations, checkpoint_interval=1)
    config["database"].update(population_size=20, archive_size=10, num_islands=1,
                              feature_dimensions=["attention_density", "complexity"])
    config["evaluator"]["evaluator_args"].update(overrides=budget, search_id=search_id,
                                                 features=["attention_density"])
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(yaml.safe_dump(config))
    launcher = Path(sys.executable).with_name("openevolve-run")
    cmd = [str(launcher), str(REPO / "initial_program.py"), str(REPO / "evaluator.py"),
           "--config", str(out / "config.yaml"), "--iterations", str(iterations), "--output", str(out)]
    _run(cmd, out / "run.log", dict(env, OPENAI_API_KEY="scripted"))
    checkpoints = sorted(out.glob("checkpoints/checkpoint_*"), key=lambda p: int(p.name.split("_")[-1]))
    if not checkpoints:
        raise RuntimeError(f"openevolve-run wrote no checkpoint; see {out / 'run.log'}")
    rows = []
    for path in (checkpoints[-1] / "programs").glob("*.json"):
        program = json.loads(path.read_text())
        artifacts = json.loads(program.get("artifacts_json") or "{}")
        feedback = artifacts.get("failed_checks") or artifacts.get("error") or ""
        seeds = re.match(r"n_seeds (\d+)", artifacts.get("seeds", ""))  # the noise stage's summary
        metrics = program["metrics"]
        rows.append(_row(program.get("iteration_found", 0), program["code"], metrics.get("combined_score"),
                         feedback, seeds and seeds.group(1), metrics.get("attention_density")))
    return sorted(rows, key=lambda r: r["iteration"])


def run_shinka(llm: ScriptedLLM, out: Path, iterations: int, env: dict, budget: dict, search_id: str) -> list:
    env = dict(env, PLASA_OVERRIDES=json.dumps(budget), PLASA_SEARCH_ID=search_id)
    job_args = {"stage": 3}  # the budget and the search id come from the environment
    sets = {"evo.llm_models": json.dumps([f"local/scripted@{llm.base_url}"]),
            "evo.patch_types": '["diff"]', "evo.patch_type_probs": "[1.0]",
            "evo.llm_dynamic_selection": "null", "evo.embedding_model": "null",
            "evo.meta_rec_interval": "null", "job.extra_cmd_args": json.dumps(job_args)}
    launcher = Path(sys.executable).with_name("shinka_run")
    cmd = [str(launcher), "--task-dir", str(REPO / "shinka_task"), "--config-fname", "shinka.yaml",
           "--results_dir", str(out), "--num_generations", str(iterations + 1),
           "--max-proposal-jobs", "1", "--no-verbose"]
    for key, value in sets.items():
        cmd += ["--set", f"{key}={value}"]
    out.mkdir(parents=True, exist_ok=True)
    _run(cmd, out.parent / "shinka.log", dict(env, PLASA_HOME=str(REPO), OPENAI_API_KEY="scripted"))
    databases = list(out.rglob("*.sqlite"))
    if not databases:
        raise RuntimeError(f"shinka_run wrote no database; see {out.parent / 'shinka.log'}")
    with sqlite3.connect(databases[0]) as db:
        db.row_factory = sqlite3.Row
        programs = db.execute("SELECT * FROM programs").fetchall()
    rows = set()
    for p in programs:  # the initial program is stored once per island: one row
        public = json.loads(p["public_metrics"] or "{}")
        rows.add(json.dumps(_row(p["generation"], p["code"], p["combined_score"] if p["correct"] else 0.0,
                                 p["text_feedback"], public.get("n_seeds"), public.get("attention_density")),
                            sort_keys=True))
    return sorted(map(json.loads, rows), key=lambda r: r["iteration"])


def _run(cmd: list, log: Path, env: dict) -> None:
    with open(log, "w") as fh:
        proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=fh, stderr=subprocess.STDOUT)
    if proc.returncode != 0:
        tail = log.read_text()[-3000:]
        raise RuntimeError(f"{Path(cmd[0]).name} exited {proc.returncode}; end of {log}:\n{tail}")


def summarize(rows: list) -> dict:
    reference = max((r["combined_score"] for r in rows if not r["edits"]), default=0.0)
    best = max(rows, key=lambda r: r["combined_score"], default=None)
    cheats = [r for r in rows if CHEATS & set(r["edits"])]
    return {"programs": rows, "reference_score": reference, "best": best,
            "improved": bool(best and reference > 0 and best["combined_score"] > reference),
            "cheats_tried": len(cheats),
            "cheats_accepted": sum(r["combined_score"] > 0 for r in cheats)}


def report(name: str, summary: dict) -> str:
    lines = [f"== {name}: {len(summary['programs'])} programs",
             "iter  score      x ref  seeds  edits (newest last)"]
    ref = summary["reference_score"] or float("nan")
    for r in summary["programs"]:
        status = (f"{r['combined_score']:.6f}  {r['combined_score'] / ref:5.2f}  {r['n_seeds']:>5}"
                  if r["combined_score"] > 0 else f"{'REJECTED':<23}")
        lines.append(f"{r['iteration']:>4}  {status}  {' + '.join(r['edits']) or '(reference)'}")
        if r["combined_score"] <= 0 and r["feedback"]:
            lines.append(f"      feedback: {r['feedback'][:160]}")
    best = summary["best"]
    if best:
        lines.append(f"best: {' + '.join(best['edits']) or '(reference)'}, {best['combined_score'] / ref:.2f}x "
                     f"the reference's score; cheats tried {summary['cheats_tried']}, "
                     f"accepted {summary['cheats_accepted']}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--framework", choices=("openevolve", "shinka", "both"), default="both")
    p.add_argument("--iterations", type=int, default=3, help="LLM proposals per framework")
    p.add_argument("--steps", type=int, default=20, help="training steps per evaluation (unofficial)")
    p.add_argument("--val-tokens", type=int, default=8192, help="validation tokens per evaluation")
    p.add_argument("--extra-seeds", type=int, default=2, help="seeds the noise stage adds (spec default 2)")
    p.add_argument("--out", default="results/example-search", help="output folder (runs, path.json)")
    args = p.parse_args(argv)
    out = Path(args.out).resolve()
    try:
        budget = dict(env_overrides(), steps=args.steps, val_tokens=args.val_tokens,
                      stage3_extra_seeds=args.extra_seeds)
    except ValueError as exc:  # PLASA_OVERRIDES that is not a JSON object
        print(f"error: {exc}", file=sys.stderr)
        return 2
    env = {k: v for k, v in os.environ.items() if k not in ("PLASA_OVERRIDES", "PLASA_SEARCH_ID", "PLASA_FEATURES")}
    frameworks = ("openevolve", "shinka") if args.framework == "both" else (args.framework,)
    path = {}
    for name in frameworks:
        run = run_openevolve if name == "openevolve" else run_shinka
        with ScriptedLLM() as llm:  # each search gets the script from its start
            rows = run(llm, out / name, args.iterations, env, budget, f"example-{name}-{time.time_ns()}")
        path[name] = dict(summarize(rows), llm_served=llm.script.served)
        print(report(name, path[name]), flush=True)
    (out / "path.json").write_text(json.dumps(path, indent=1))
    ok = all(path[n]["improved"] and not path[n]["cheats_accepted"] for n in frameworks)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
