"""measure/speed.py's stage table, and docs/speed.md's quote of it, on the committed run."""

from __future__ import annotations

import importlib.util
import json
import re

import pytest

from tests.conftest import REPO

RUN = REPO / "measure" / "results" / "speed-2026-12-03d-amd-epyc-2core.json"


@pytest.fixture(scope="module")
def speed():
    spec = importlib.util.spec_from_file_location("speed_benchmark", REPO / "measure" / "speed.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_stages_add_up_to_the_projected_evaluation(speed):
    report = json.loads(RUN.read_text())
    shares = speed.stage_shares(report)
    assert sum(s for s, _ in shares.values()) == pytest.approx(report["official_estimate_s"])
    assert sum(f for _, f in shares.values()) == pytest.approx(1.0)
    assert shares["judge scoring"][0] == report["judge_judge_scoring_s"]
    assert all(s >= 0 for s, _ in shares.values())


def test_docs_quote_the_committed_run(speed):
    shares = speed.stage_shares(json.loads(RUN.read_text()))
    readme = (REPO / "docs" / "speed.md").read_text()
    table = readme[readme.index("**Where an official evaluation's time goes**"):]
    rows = {m.group(1): (float(m.group(2)), float(m.group(3)))
            for m in re.finditer(r"^\| ([^|]+?) \| ([\d.]+) \| ([\d.]+)% \|$", table, re.M)}
    quoted = {"training, 1000 steps": "train", "validation: the judge's cross-entropy of the handed-over logits":
              "judge scoring", "validation: the candidate's forward and the hand-over": "validation forward + hand-over",
              "start-up (processes, imports, worker start)": "start-up"}
    for row, stage in quoted.items():
        seconds, share = shares[stage]
        assert rows[row] == (round(seconds, 1), round(100 * share, 1)), row
