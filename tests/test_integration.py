"""The benchmark inside the search frameworks, called exactly as they call it: the real OpenEvolve
0.4.0 (its Evaluator, and openevolve-run against a stub LLM server on 127.0.0.1) and
ShinkaEvolve's command line."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.conftest import REPO

openevolve = pytest.importorskip("openevolve")
yaml = pytest.importorskip("yaml")

TINY_OVERRIDES = json.dumps({"steps": 3, "val_tokens": 4096, "stage3_extra_seeds": 1})
BROKEN = "def build_model(config):\n    return None\n"


@pytest.fixture
def tiny_env(monkeypatch):
    monkeypatch.setenv("PLASA_OVERRIDES", TINY_OVERRIDES)


def test_committed_openevolve_config_is_current_and_loads():
    from openevolve.config import Config

    from benchmark.spec import SPEC

    assert subprocess.run([sys.executable, "-m", "benchmark", "openevolve-config", "--check"],
                          cwd=REPO).returncode == 0
    config = Config.from_yaml(str(REPO / "configs" / "openevolve.yaml"))
    assert config.evaluator.timeout > SPEC.time_limit_s
    assert config.evaluator.max_retries == 0 and config.evaluator.cascade_evaluation
    # stage 2 runs after a passing stage 1; stage 3 (noise-aware) after any valid stage 2
    assert config.evaluator.cascade_thresholds == [SPEC.stage1_pass_score, SPEC.stage1_pass_score]
    assert config.prompt.suggest_simplification_after_chars is None
    assert config.max_code_length > len((REPO / "initial_program.py").read_text())
    assert config.prompt.system_message.strip() == (REPO / "initial_proposal.txt").read_text().strip()


def test_openevolve_evaluator_scores_reference_and_rejects_broken(tiny_env, tmp_path):
    from openevolve.config import EvaluatorConfig
    from openevolve.evaluator import Evaluator

    config = EvaluatorConfig(timeout=600, max_retries=0, cascade_evaluation=True,
                             cascade_thresholds=[1e-6], parallel_evaluations=1)
    cwd = os.getcwd()
    os.chdir(tmp_path)  # OpenEvolve runs from wherever the user launched it
    try:
        evaluator = Evaluator(config, str(REPO / "evaluator.py"))
        good = asyncio.run(evaluator.evaluate_program((REPO / "initial_program.py").read_text(), "good"))
        bad = asyncio.run(evaluator.evaluate_program(BROKEN, "bad"))
    finally:
        os.chdir(cwd)
    assert 1e-6 < good["combined_score"] < 1 and good["relative_score"] > 0 and good["val_acc"] > 0
    assert bad["combined_score"] == bad["relative_score"] == bad["val_acc"] == 0.0
    artifacts = evaluator.get_pending_artifacts("bad")
    assert artifacts and "build" in str(artifacts.get("failed_checks", artifacts))


def test_evaluate_returns_numeric_metrics_and_small_artifacts(tiny_env, tmp_path):
    sys.path.insert(0, str(REPO))
    import evaluator

    broken = tmp_path / "broken.py"
    broken.write_text("import os\n" + BROKEN)
    result = evaluator.evaluate(str(broken))
    metrics = result.metrics if hasattr(result, "metrics") else result
    artifacts = result.artifacts if hasattr(result, "artifacts") else result["artifacts"]
    assert metrics["combined_score"] == 0.0
    assert all(isinstance(v, float) for v in metrics.values())
    assert "line 1" in artifacts["failed_checks"]
    assert all(len(str(v).encode()) < 20_000 for v in artifacts.values())
    stage1 = evaluator.evaluate_stage1(str(REPO / "initial_program.py"))
    stage1 = stage1.metrics if hasattr(stage1, "metrics") else stage1
    assert 0 < stage1["combined_score"] <= 1e-6


class _StubLLM(BaseHTTPRequestHandler):
    """An OpenAI-compatible chat endpoint that always proposes the same small diff."""

    DIFF = ("I will slightly change the initialisation scale.\n\n<<<<<<< SEARCH\nINIT_STD = 0.02\n"
            "=======\nINIT_STD = 0.025\n>>>>>>> REPLACE\n")
    calls = 0

    def do_POST(self):  # noqa: N802
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        type(self).calls += 1
        body = json.dumps({
            "id": "stub", "object": "chat.completion", "created": 0, "model": "stub",
            "choices": [{"index": 0, "finish_reason": "stop",
                         "message": {"role": "assistant", "content": self.DIFF}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2}}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_openevolve_run_end_to_end_with_stub_llm(tmp_path):
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StubLLM)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        config = yaml.safe_load((REPO / "configs" / "openevolve.yaml").read_text())
        config["llm"].update(api_base=f"http://127.0.0.1:{server.server_port}/v1", api_key="stub",
                             timeout=30, retries=0)
        config.update(max_iterations=2, checkpoint_interval=1)
        config["database"].update(population_size=10, num_islands=1)
        cfg = tmp_path / "config.yaml"
        cfg.write_text(yaml.safe_dump(config))
        out = tmp_path / "out"
        env = dict(os.environ, PLASA_OVERRIDES=TINY_OVERRIDES, OPENAI_API_KEY="stub")
        launcher = Path(sys.executable).with_name("openevolve-run")
        proc = subprocess.run([str(launcher), str(REPO / "initial_program.py"), str(REPO / "evaluator.py"),
                               "--config", str(cfg), "--iterations", "2", "--output", str(out)],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
    finally:
        server.shutdown()
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert _StubLLM.calls >= 1
    programs = list(out.glob("checkpoints/checkpoint_*/programs/*.json"))
    assert programs, proc.stderr[-3000:]
    scored = [json.loads(p.read_text()) for p in programs]
    scores = [p["metrics"]["combined_score"] for p in scored]
    assert any(s > 1e-6 for s in scores), scores
    assert any("INIT_STD = 0.025" in p["code"] for p in scored), "the stub's diff never landed"


def test_shinka_task_folder(tmp_path):
    shim = REPO / "shinka" / "evaluate.py"
    assert (REPO / "shinka" / "initial.py").resolve() == (REPO / "initial_program.py").resolve()
    out = tmp_path / "results"
    proc = subprocess.run([sys.executable, str(shim), "--program_path", str(REPO / "shinka" / "initial.py"),
                           "--results_dir", str(out), "--steps", "3", "--val-tokens", "4096", "--quiet"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert json.loads((out / "correct.json").read_text()) == {"correct": True, "error": None}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["combined_score"] > 0 and metrics["public"]["val_ppl"] > 1
