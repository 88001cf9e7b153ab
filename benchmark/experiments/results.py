"""A study's run files: where they live, which belong to a row's current definition, and which
are missing. One rule for the runner (what is left to run) and the report (what it counts).

A run belongs to a row when its recorded study version is one the row accepts
(studies.accepted_versions). A study's report never mixes evaluator versions: it uses the runs of
one spec version, the newest present, and lists the others as left out. The runner re-runs a file
made by another spec version than the current evaluator's.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from ..spec import SPEC
from .studies import CLAIM_SEEDS, Row, Study, accepted_versions


def run_path(folder: Path, row: str, seed: int) -> Path:
    return folder / "runs" / row / f"seed{seed}.json"


def seeds(n: int) -> list:
    return list(range(SPEC.seed, SPEC.seed + n))


def read(path: Path) -> Optional[dict]:
    try:
        run = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return run if isinstance(run, dict) else None


def belongs(run: dict, study: Study, row: Row) -> bool:
    return (run.get("study") or {}).get("version") in accepted_versions(study, row)


def current(run: Optional[dict], study: Study, row: Row) -> bool:
    """A finished run of the row's definition by the current evaluator: the runner keeps it."""
    return run is not None and belongs(run, study, row) and run.get("spec_version") == SPEC.version


def _version_key(version: str) -> tuple:
    return tuple(int(n) for n in re.findall(r"\d+", version or ""))


@dataclass
class Collection:
    runs: dict                      # row -> {seed: run}, the runs the report uses
    spec_version: Optional[str]     # the evaluator version of all of them (None: no runs)
    left_out: list = field(default_factory=list)  # (relative path, why) of run files not used

    def missing(self, study: Study, n_seeds: int = CLAIM_SEEDS) -> dict:
        """row -> the seeds of the first n_seeds it has no run of (in the version used)."""
        out = {r.name: [s for s in seeds(n_seeds) if s not in self.runs.get(r.name, {})]
               for r in study.rows}
        return {row: s for row, s in out.items() if s}


def collect(study: Study, folder: Path) -> Collection:
    found, left_out = {}, []
    for row in study.rows:
        for path in sorted((folder / "runs" / row.name).glob("seed*.json")):
            run, name = read(path), str(path.relative_to(folder))
            if run is None:
                left_out.append((name, "unreadable"))
            elif not belongs(run, study, row):
                left_out.append((name, f"study version {(run.get('study') or {}).get('version')}"))
            else:
                found.setdefault(row.name, {})[run.get("seed")] = (path, run)
    versions = {run.get("spec_version") for by_seed in found.values() for _, run in by_seed.values()}
    chosen = max(versions, key=_version_key) if versions else None
    runs = {}
    for row, by_seed in found.items():
        for seed, (path, run) in sorted(by_seed.items()):
            if run.get("spec_version") == chosen:
                runs.setdefault(row, {})[seed] = run
            else:
                left_out.append((str(path.relative_to(folder)), f"spec {run.get('spec_version')}"))
    return Collection(runs, chosen, left_out)
