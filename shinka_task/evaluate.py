"""ShinkaEvolve task entry point: `python evaluate.py --program_path P --results_dir D [--k v ...]`.

This folder is a ShinkaEvolve task directory: evaluate.py, initial.py (a link to
../initial_program.py) and shinka.yaml (generated: `python -m benchmark shinka-config`). Run from
the repository root:

    shinka_run --task-dir shinka --config-fname shinka.yaml --results_dir results/plasa --num_generations 50

shinka_run copies this file into its results folder before running it, so the project is found
through $PLASA_HOME (the PLASA-Bench checkout), this file's own folder when it runs in place, or
an installed `benchmark` package (pip install -e .). Writes D/metrics.json and D/correct.json and
exits 0 even when the candidate fails, or when the project cannot be found (correct.json says so).
"""

import json
import os
import sys


def _project() -> str:
    """The PLASA-Bench checkout to import from, or "" to use an installed package."""
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for root in (os.environ.get("PLASA_HOME", ""), here):
        if root and os.path.isfile(os.path.join(root, "benchmark", "judge", "runner.py")):
            return root
    return ""


def _fail(message: str) -> int:
    argv = sys.argv[1:]
    results = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--results_dir"), None)
    results = results or next((a.split("=", 1)[1] for a in argv if a.startswith("--results_dir=")), ".")
    os.makedirs(results, exist_ok=True)
    with open(os.path.join(results, "correct.json"), "w") as fh:
        json.dump({"correct": False, "error": message}, fh)
    with open(os.path.join(results, "metrics.json"), "w") as fh:
        json.dump({"combined_score": 0.0, "public": {}, "private": {}, "text_feedback": message}, fh)
    print(message, file=sys.stderr)
    return 0


def main() -> int:
    root = _project()
    if root:
        sys.path.insert(0, root)
    try:
        from benchmark.cli import main as run
        from benchmark.judge import runner  # noqa: F401  (PLASA-Bench's own package, not another "benchmark")
    except ImportError as exc:
        return _fail(f"PLASA-Bench not found ({exc}): set PLASA_HOME to the PLASA-Bench checkout, or "
                     "pip install -e it, before running shinka_run")
    return run()


if __name__ == "__main__":
    sys.exit(main())
