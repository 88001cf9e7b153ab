"""examples/search: the scripted LLM's edits are real edits of the reference, and the example drives
the real openevolve-run and shinka_run end to end (cascade with the noise stage, a PLASA feature
axis), keeps an honest improvement and rejects the cheat with feedback."""

import ast
import json
import os
import subprocess
import sys

import pytest
import yaml

from benchmark.judge.static_checks import check_source

from tests.conftest import REPO, TINY_OVERRIDES  # noqa: E402
sys.path.insert(0, str(REPO / "examples" / "search"))
from scripted_llm import EDITS, MARKER, Script, current_program  # noqa: E402

REFERENCE = (REPO / "initial_program.py").read_text()


def _apply(code: str, name: str) -> str:
    edit = next(e for e in EDITS if e.name == name)
    assert edit.applies_to(code), f"{name} does not apply"
    return code.replace(edit.search, edit.replace, 1)


@pytest.mark.parametrize("chain", [[e.name] for e in EDITS if e.search in REFERENCE]
                         + [["higher_learning_rate", "even_higher_learning_rate"]],
                         ids=lambda chain: "+".join(chain))
def test_scripted_edits_are_valid_programs(chain):
    code = REFERENCE
    for name in chain:
        code = _apply(code, name)
    ast.parse(code)
    assert check_source(code) == [], "a scripted edit breaks a static rule"
    assert all(MARKER + name in code for name in chain)
    assert not any(e.applies_to(code) for e in EDITS if e.name == chain[-1]), "an edit applies twice"


def test_script_reads_the_program_from_either_frameworks_prompt():
    edited = _apply(REFERENCE, "higher_learning_rate")
    openevolve = (f"# Current Program Information\n- Fitness: 0.1\n## Last Execution Output\n```\nstderr\n```\n"
                  f"# Program Evolution History\n```python\n{REFERENCE}```\n# Current Program\n```python\n"
                  f"{edited}```\n# Task\n")
    shinka = f"# Current program\n\nHere is the current program:\n\n```python\n{edited}```\n\n# Instructions\n"
    for prompt in (openevolve, shinka):
        assert current_program([{"role": "user", "content": prompt}]) == edited
    script = Script()
    served = [script.next_reply([{"role": "user", "content": openevolve}]) for _ in range(3)]
    assert [s.split("\n")[1] for s in served] == ["skip_redundant_causal_intersection",
                                                  "even_higher_learning_rate", "denser_middle_layers"]


@pytest.mark.evaluation
@pytest.mark.slow
def test_example_search_end_to_end(tmp_path):
    """Both frameworks, two LLM proposals each (the learning-rate edit, then the cheat), the tiny
    budget, one extra seed in the noise stage."""
    # the noise stage audits the new best's extra seed; at 127 rows (the normal count) that costs
    # what a normal run does (the audit's power: test_probe_audit.py, test_probe_power.py), and
    # the hidden probes are the other tiny runs' (conftest.TINY_OVERRIDES)
    probe_rows = {k: TINY_OVERRIDES[k] for k in ("val_batch_size", "probe_causal_rows", "probe_repeat_rows",
                                                 "probe_windows")}
    env = dict(os.environ, PLASA_OVERRIDES=json.dumps(dict(probe_rows, audit_causal_rows=127)))
    proc = subprocess.run([sys.executable, str(REPO / "examples" / "search" / "run.py"), "--iterations", "2",
                           "--steps", "3", "--val-tokens", "4096", "--extra-seeds", "1", "--out", str(tmp_path)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1500)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    path = json.loads((tmp_path / "path.json").read_text())
    for name in ("openevolve", "shinka"):
        summary = path[name]
        assert summary["improved"] and summary["best"]["edits"] == ["higher_learning_rate"], summary
        assert summary["cheats_tried"] >= 1 and summary["cheats_accepted"] == 0
        cheat = next(r for r in summary["programs"] if "skip_redundant_causal_intersection" in r["edits"])
        assert "future leak" in cheat["feedback"], cheat
        # the noise stage re-ran the new best on a second seed; the feature axis is in every result
        assert summary["best"]["n_seeds"] == 2, summary["best"]
        assert all(r["attention_density"] == 0.5 for r in summary["programs"]), summary["programs"]
    assert "== openevolve" in proc.stdout and "REJECTED" in proc.stdout
    oe_config = (tmp_path / "openevolve" / "config.yaml").read_text()
    evaluator_args = yaml.safe_load(oe_config)["evaluator"]["evaluator_args"]  # the cascade, the budget,
    assert evaluator_args["cascade"] is True and evaluator_args["overrides"]["steps"] == 3  # the axis:
    assert evaluator_args["features"] == ["attention_density"]  # all through OpenEvolve's evaluator_args


def test_a_malformed_plasa_overrides_is_a_message_and_exit_2(monkeypatch, capsys):
    sys.path.insert(0, str(REPO / "examples" / "search"))
    import run

    monkeypatch.setenv("PLASA_OVERRIDES", "{steps: 3")
    assert run.main(["--out", "unused"]) == 2
    assert "PLASA_OVERRIDES is not JSON" in capsys.readouterr().err
