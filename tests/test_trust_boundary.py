"""The trust boundary: the judge never runs candidate code; workers are sandboxed and thin."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from benchmark.protocol import Message, Op, ProtocolError, WorkerRequest
from benchmark.result import Result, undeclared_keys
from benchmark.worker import sandbox
from tests.conftest import REPO, evaluate_tiny

pytestmark = pytest.mark.smoke  # the boundary, whole, in the smoke tier

PACKAGE = REPO / "benchmark"
JUDGE_SIDE = ["judge", "search", "analysis", "cli.py", "spec.py", "result.py",
              "protocol.py", "fsutil.py", "statefile.py"]


def _imports(path: Path) -> set:
    """Absolute names of the benchmark modules `path` imports (relative imports resolved)."""
    tree = ast.parse(path.read_text())
    package = ".".join(path.relative_to(REPO).with_suffix("").parts[:-1])
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            module = (base + "." + node.module if node.module else base) if node.level else node.module
            found.add(module)
            found.update(f"{module}.{a.name}" for a in node.names)
    return found


def _files(parts: list) -> list:
    out = []
    for part in parts:
        path = PACKAGE / part
        out.extend(sorted(path.rglob("*.py")) if path.is_dir() else [path])
    return out


@pytest.mark.parametrize("path", _files(JUDGE_SIDE), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_judge_side_never_imports_worker_code(path):
    bad = sorted(m for m in _imports(path) if m.startswith("benchmark.worker") or m.startswith("benchmark.experiments"))
    assert not bad, f"{path.name} imports {bad}: code that runs beside candidates"


@pytest.mark.parametrize("path", _files(["worker"]), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_worker_side_never_imports_the_judge(path):
    assert not any(m.startswith("benchmark.judge") for m in _imports(path))


def test_parent_process_never_imports_the_candidate(tmp_path):
    code = ("import sys; sys.path.insert(0, %r); import evaluator; "
            "r = evaluator.evaluate(%r); m = getattr(r, 'metrics', r); "
            "print('candidate' in sys.modules, any(getattr(x, '__file__', None) == %r "
            "for x in list(sys.modules.values())), m['combined_score'])"
            % (str(REPO), str(tmp_path / "c.py"), str(tmp_path / "c.py")))
    (tmp_path / "c.py").write_text("import torch\nraise ValueError('boom')\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert out.stdout.split()[-3:] == ["False", "False", "0.0"], out.stderr[-2000:]


def test_a_static_failure_imports_no_torch(tmp_path):
    (tmp_path / "c.py").write_text("import os\n")
    code = ("import sys; sys.path.insert(0, %r); from benchmark.judge.runner import evaluate_file; "
            "r = evaluate_file(%r, progress=False, use_cache=False); print(r['error_type'], 'torch' in sys.modules)"
            % (str(REPO), str(tmp_path / "c.py")))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.split() == ["static_check", "False"], out.stderr[-2000:]


def test_messages_are_typed_and_strict(tmp_path):
    request = WorkerRequest(role="train", candidate="c.py", workdir=str(tmp_path), overrides={"steps": 3},
                            device="cpu", precision="fp32", max_rows=32, read_paths=("/usr",))
    assert WorkerRequest.from_json(request.to_json()) == request
    with pytest.raises(ProtocolError):
        WorkerRequest.from_json(json.dumps(dict(json.loads(request.to_json()), verdict="pass")))
    with pytest.raises(ProtocolError):
        Op.from_json(json.dumps({"op": "score"}))
    with pytest.raises(ProtocolError):
        Message.from_json('{"type": "out", "combined_score": 1.0}')
    assert Message.from_json(Message("out", id=3, shape=[1, 2, 3], dtype="float32").to_json()).shape == [1, 2, 3]


@pytest.mark.evaluation
def test_every_result_key_is_declared(tmp_path, reference_tiny):
    ok = reference_tiny
    (tmp_path / "bad.py").write_text("import torch\n\ndef build_model(config):\n    return torch.nn.Linear(1, 1)\n")
    bad = evaluate_tiny(tmp_path / "bad.py")
    assert ok["valid"] and not bad["valid"]
    for result in (ok, bad):
        assert undeclared_keys(result) == [], undeclared_keys(result)
    assert "combined_score" in Result.__annotations__


@pytest.mark.evaluation
@pytest.mark.skipif(sandbox.abi_version() < 1, reason="the kernel has no Landlock")
def test_sandbox_keeps_data_and_other_folders_out_of_reach(tmp_path):
    """A candidate that finds `open` through torch's own modules still cannot read the data or
    write outside its folder."""
    import os
    import tempfile

    data = os.environ["PLASA_DATA_DIR"]
    probe = tmp_path / "c.py"
    probe.write_text(
        "import torch\n"
        "_errors = []\n"
        f"for _path in ({data!r}, {str(tmp_path)!r}, {tempfile.gettempdir()!r}, {os.path.expanduser('~')!r}):\n"
        "    try:\n"
        "        torch.os.listdir(_path)\n"
        "        _errors.append('read ' + _path)\n"
        "    except PermissionError:\n"
        "        pass\n"
        "try:\n"
        f"    torch.os.open({str(tmp_path / 'escape')!r}, torch.os.O_CREAT | torch.os.O_WRONLY)\n"
        "    _errors.append('wrote outside its folder')\n"
        "except PermissionError:\n"
        "    pass\n"
        "raise RuntimeError('sandbox: ' + (', '.join(_errors) or 'closed'))\n")
    result = evaluate_tiny(probe)
    assert result["sandbox"].startswith("landlock")
    assert result["error_type"] == "import_error" and "sandbox: closed" in result["error"], result["error"]


def test_an_exception_is_blamed_on_whoever_raised_it(tmp_path):
    from benchmark.worker.candidate import raised_in_candidate

    path = tmp_path / "cand.py"
    path.write_text("def boom():\n    raise ValueError('x')\n")
    namespace = {}
    exec(compile(path.read_text(), str(path), "exec"), namespace)
    try:
        namespace["boom"]()
    except ValueError as exc:
        assert raised_in_candidate(exc, str(path))
    try:
        {}["missing"]
    except KeyError as exc:
        assert not raised_in_candidate(exc, str(path))


def test_spec_precision_override_reaches_the_run(monkeypatch, tmp_path):
    """PLASA_OVERRIDES='{"precision": "fp32"}' is what the workers run with, not just a label."""
    from benchmark.judge import evaluation
    from benchmark.judge.options import Options

    seen = []
    monkeypatch.setattr(evaluation, "resolve", lambda device, p, threads: seen.append(p) or (p, threads, {}))
    run = evaluation.Evaluation(
        candidate="c.py", display_path="c.py", sha256="0",
        options=Options(overrides={"precision": "fp32"}, memory_limit_mb=1, progress=False),
        run_dir=tmp_path, deadline=0, checks=[])
    run.setup()
    assert seen == ["fp32"] and run.precision == "fp32" and run.result["precision"] == "fp32"


def test_the_wheel_holds_every_subpackage(tmp_path):
    """A non-editable install gets the judge, the worker and the experiments too."""
    import zipfile

    out = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                          "-w", str(tmp_path), str(REPO)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    (wheel,) = tmp_path.glob("plasa_bench-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for module in ("judge/runner.py", "worker/serve.py", "search/integration.py", "analysis/stats.py",
                   "experiments/gdn.py", "protocol.py"):
        assert f"benchmark/{module}" in names, module
