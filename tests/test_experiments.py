"""Experiment suite: Gated DeltaNet chunked == recurrent, every pattern is causal, a tiny study runs,
resumes after an interruption, reports (paired differences, Holm p, failures, missing runs, the
figures), runs a schedules row with its own length, depth, batch and the document's k per layer,
and runs on a local Ray."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

from benchmark.analysis import stats
from benchmark.experiments import analysis, gdn, models, studies
from benchmark.spec import SPEC
from tests.conftest import REPO, TINY_PROBES

SHAPES = [(2, 2, 37, 8, 6, 16), (1, 3, 64, 16, 16, 64), (2, 1, 100, 4, 8, 32), (1, 2, 5, 8, 8, 64)]


@pytest.mark.parametrize("B, H, T, Dk, Dv, chunk", SHAPES, ids=lambda v: str(v))
def test_gdn_chunked_equals_recurrent(B, H, T, Dk, Dv, chunk):
    gen = torch.Generator().manual_seed(T)
    q = torch.randn(B, H, T, Dk, generator=gen, dtype=torch.float64, requires_grad=True)
    k = torch.nn.functional.normalize(torch.randn(B, H, T, Dk, generator=gen, dtype=torch.float64), dim=-1)
    k.requires_grad_()
    v = torch.randn(B, H, T, Dv, generator=gen, dtype=torch.float64, requires_grad=True)
    g = (-2 * torch.rand(B, H, T, generator=gen, dtype=torch.float64)).requires_grad_()
    beta = torch.rand(B, H, T, generator=gen, dtype=torch.float64).requires_grad_()
    o_rec, s_rec = gdn.recurrent_gated_delta_rule(q, k, v, g, beta)
    o_chk, s_chk = gdn.chunk_gated_delta_rule(q, k, v, g, beta, chunk=chunk)
    torch.testing.assert_close(o_chk, o_rec)
    torch.testing.assert_close(s_chk, s_rec)
    inputs = (q, k, v, g, beta)
    grads_rec = torch.autograd.grad(o_rec.square().sum() + s_rec.sum(), inputs)
    grads_chk = torch.autograd.grad(o_chk.square().sum() + s_chk.sum(), inputs)
    for name, a, b in zip("q k v g beta".split(), grads_chk, grads_rec):
        torch.testing.assert_close(a, b, msg=f"gradient of {name}")


def test_gdn_with_initial_state_continues_the_sequence():
    gen = torch.Generator().manual_seed(0)
    q, k = (torch.randn(1, 2, 40, 8, generator=gen, dtype=torch.float64) for _ in range(2))
    k = torch.nn.functional.normalize(k, dim=-1)
    v = torch.randn(1, 2, 40, 8, generator=gen, dtype=torch.float64)
    g, beta = -torch.rand(1, 2, 40, generator=gen, dtype=torch.float64), torch.rand(1, 2, 40, generator=gen, dtype=torch.float64)
    whole, _ = gdn.chunk_gated_delta_rule(q, k, v, g, beta, chunk=16)
    _, state = gdn.chunk_gated_delta_rule(q[:, :, :25], k[:, :, :25], v[:, :, :25], g[:, :, :25], beta[:, :, :25], chunk=16)
    rest, _ = gdn.chunk_gated_delta_rule(q[:, :, 25:], k[:, :, 25:], v[:, :, 25:], g[:, :, 25:], beta[:, :, 25:],
                                         chunk=16, initial_state=state)
    torch.testing.assert_close(rest, whole[:, :, 25:])


@pytest.mark.parametrize("pattern", studies.PATTERNS)
def test_every_pattern_builds_and_is_causal(pattern):
    config = SPEC.replace(vocab_size=256).model_config()
    torch.manual_seed(0)
    model = models.build_pattern_model(config, pattern)
    assert [type(b.attn).__name__ for b in model.blocks] == [
        "GatedDeltaNet" if c == "L" else "SparseAttention" for c in pattern]
    ids = torch.randint(0, 256, (2, SPEC.seq_len))
    for mode in (True, False):
        model.train(mode)
        base = model(ids)[0]
        for j in (1, 40, 100):
            changed = ids.clone()
            changed[:, j:] = (changed[:, j:] + 7) % 256
            assert (model(changed)[0][:, :j] - base[:, :j]).abs().max() <= 1e-5, (pattern, j, mode)


def test_layer_letters_share_one_attention_with_different_k():
    config = SPEC.model_config()
    for pattern, ks in (("FFFF", [128] * 4), ("PPPP", [128, 32, 32, 64]), ("DDDD", [64] * 4)):
        assert models.build_pattern_model(config, pattern).layer_top_k == ks


def test_warmup_model_trains_only_the_indexer_then_goes_sparse():
    config = SPEC.replace(vocab_size=256).model_config()
    build, configure = models.experiment_candidate("DDDD", warmup_steps=2)
    model = build(config)
    opt = configure(model, config)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    ids = torch.randint(0, 256, (2, SPEC.seq_len + 1))
    for step in range(3):
        logits, aux = model(ids[:, :-1])
        if step < 2:
            assert aux.item() > 0 and all(b.attn.top_k == SPEC.seq_len for b in model.inner.blocks)
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 256), ids[:, 1:].reshape(-1)) + aux
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step == 0:
            moved = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
            assert moved and all(".indexer." in n for n in moved), sorted(moved)
    model(ids[:, :-1])
    assert [b.attn.top_k for b in model.inner.blocks] == [SPEC.seq_len // 2] * 4


def _experiment(*args, timeout=600):
    # SIGINT back to its default: a shell's background job inherits it ignored, and Python then
    # never raises KeyboardInterrupt, so the interruption below would not interrupt
    # the probes of the other tiny runs (conftest.TINY_PROBES), through PLASA_OVERRIDES
    env = dict(os.environ, PLASA_OVERRIDES=json.dumps(TINY_PROBES))
    return subprocess.Popen([sys.executable, "-m", "benchmark", "experiment", *args], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


TINY_STUDY = ["patterns", "--rows", "PPPP,LFFL", "--seeds", "2", "--steps", "3", "--val-tokens", "2048"]


@pytest.mark.evaluation
@pytest.mark.slow
def test_tiny_study_resumes_and_reports(tmp_path):
    out = tmp_path / "exp"
    proc = _experiment(*TINY_STUDY, "--out", str(out))
    runs = out / "patterns" / "runs"
    deadline = time.monotonic() + 300
    while not list(runs.glob("*/seed*.json")) and time.monotonic() < deadline:
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)  # interrupted after its first run
    proc.wait(timeout=60)
    first = {p: p.stat().st_mtime_ns for p in runs.glob("*/seed*.json")}
    assert 1 <= len(first) < 4
    proc = _experiment(*TINY_STUDY, "--out", str(out))
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-3000:]
    results = sorted(runs.glob("*/seed*.json"))
    assert len(results) == 4
    assert all(p.stat().st_mtime_ns == t for p, t in first.items()), "a finished run was recomputed"
    for path in results:
        result = json.loads(path.read_text())
        assert result["valid"] and result["official"] is False and result["study"]["name"] == "patterns"
        assert any(c["name"] == "probe:causality_eval" and c["passed"] for c in result["checks"])
    summary = (out / "patterns" / "summary.md").read_text()
    assert "| PPPP |" in summary.replace("| 1 | ", "| ").replace("| 2 | ", "| ") and "LFFL" in summary
    for png in ("loss_curves.png", "effects.png"):
        assert (out / "patterns" / png).read_bytes()[:4] == b"\x89PNG"


@pytest.mark.evaluation
def test_ray_local_runs_the_tiny_study(tmp_path):
    pytest.importorskip("ray")
    out = tmp_path / "exp"
    proc = _experiment("patterns", "--rows", "PPPP", "--seeds", "2", "--steps", "2", "--val-tokens", "2048",
                       "--executor", "ray", "--out", str(out))
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-3000:]
    assert len(list((out / "patterns" / "runs" / "PPPP").glob("seed*.json"))) == 2
    assert "PPPP" in (out / "patterns" / "summary.md").read_text()


@pytest.mark.evaluation
def test_tiny_schedules_run_uses_the_rows_length_depth_and_batch(tmp_path):
    """A schedules row reaches the evaluator with its own T, 6 layers, T-dependent batch and k."""
    out = tmp_path / "exp"
    proc = _experiment("schedules", "--rows", "progressive_sparse@64,dense_baseline@64", "--seeds", "1",
                       "--steps", "2", "--val-tokens", "1024", "--out", str(out))
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-3000:]
    result = json.loads((out / "schedules" / "runs" / "progressive_sparse@64" / "seed42.json").read_text())
    assert result["valid"], result.get("error")
    spec = result["spec"]
    assert (spec["seq_len"], spec["n_layers"], spec["batch_size"]) == (64, 6, studies.TOKENS_PER_STEP // 64)
    assert result["layer_top_k"] == [64, 64, 16, 16, 32, 32]  # the document's layers 0-1, 2-3, 4-5
    assert result["study"]["version"] == studies.get("schedules").version
    assert (out / "schedules" / "effects.png").read_bytes()[:4] == b"\x89PNG"


def _fake_run(ppl: float, seed: int, valid: bool = True, version: str = "schedules-2") -> dict:
    run = {"valid": valid, "seed": seed, "steps": 10, "precision": "bf16", "device": "cpu",
           "spec_version": SPEC.version, "study": {"name": "schedules", "version": version},
           "environment": {"threads": 1}, "layer_top_k": [64, 64, 16, 16, 32, 32],
           "timings": {"step_ms_median": 50.0}, "loss_curve": [[5, 7.0], [10, 6.0]]}
    if valid:
        run.update(val_ppl=ppl, combined_score=1 / ppl)
    else:
        run["error"] = "future leak: in window 0 ..."
    return run


def _write_runs(folder, runs: dict) -> None:
    for row, by_seed in runs.items():
        for seed, run in by_seed.items():
            path = folder / "runs" / row / f"seed{seed}.json"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(run))


def test_report_shows_paired_differences_holm_failures_and_missing_runs(tmp_path):
    from benchmark.experiments import report

    study = studies.get("schedules")
    folder = tmp_path / "schedules"
    ppl = {"uniform_sparse@64": [200, 202, 204], "uniform_sparse@256": [150, 151, 152],
           "progressive_sparse@64": [190, 191, 193], "progressive_sparse@256": [160, 161, 162]}
    runs = {row: {42 + i: _fake_run(v, 42 + i) for i, v in enumerate(values)} for row, values in ppl.items()}
    runs["reverse_progressive@64"] = {42: _fake_run(0, 42, valid=False)}
    runs["dense_baseline@64"] = {42: _fake_run(1.0, 42, version="schedules-1")}  # the variant's: not mixed in
    _write_runs(folder, runs)
    summary = report.write(study, folder).read_text()
    at_64 = summary.split("## Comparisons")[1].split("### T = 256")[0]
    # progressive - uniform at 64: diffs -10, -11, -11 by seed; Holm over the study's whole family
    diff = stats.paired_difference([190, 191, 193], [200, 202, 204])
    holm = stats.holm([diff["p"], stats.paired_difference([160, 161, 162], [150, 151, 152])["p"]]
                      + [None] * (len(studies.family(study)) - 2))[0]
    lo, hi = diff["ci95"]
    assert (f"| progressive_sparse@64 - uniform_sparse@64 | 3 | {diff['mean']:+.2f} [{lo:+.2f}, {hi:+.2f}] | "
            f"{100 * diff['mean'] / 202:+.1f}% | {analysis.fmt_p(diff['p'])} | {analysis.fmt_p(holm)} | "
            f"lower than uniform_sparse@64; {analysis.BELOW} |") in at_64
    assert "| reverse_progressive@64 - uniform_sparse@64 | 0 | - | - | - | - | untested: 0 paired seeds |" in at_64
    rows_64 = summary.split("## Rows")[1].split("### T = 256")[0]
    assert "| progressive_sparse@64 | 64, 64, 16, 16, 32, 32 | 10 | 3 / 3 (" in rows_64
    assert f"| reverse_progressive@64 | - | 10 | 0 / 1 ({analysis.BELOW}) | FAILED: future leak" in rows_64
    assert "| dense_baseline@64 | - | - | 0 / 0 | no runs |" in rows_64
    # the document's expectation beside the row it is about, and where it comes from
    progressive = next(line for line in rows_64.splitlines() if "| progressive_sparse@64 |" in line)
    assert progressive.endswith(f"| {study.claims['progressive_sparse@64']} |")
    assert study.claims_source in summary
    assert "Left out (never mixed in): 1 run files of study version schedules-1." in summary
    assert ("seeds 45, 46 of uniform_sparse@64, uniform_sparse@256, progressive_sparse@64, progressive_sparse@256; "
            "seeds 43, 44, 45, 46 of reverse_progressive@64.") in summary
    assert f"`python -m benchmark experiment schedules --seeds {studies.CLAIM_SEEDS} --out " in summary
    assert "`python -m benchmark experiment schedules --report-only --out " in summary
    for png in ("loss_curves.png", "effects.png"):
        assert (folder / png).read_bytes()[:4] == b"\x89PNG"


def test_time_limit_grows_with_a_runs_work_and_the_workers_sharing_the_machine():
    from benchmark.experiments.runner import time_limit

    rows = {r.name: r for r in studies.get("schedules").rows}
    assert time_limit(dict(rows["uniform_sparse@64"].overrides), 1) == SPEC.time_limit_s
    assert time_limit(dict(rows["uniform_sparse@1024"].overrides), 1) == 32 * SPEC.time_limit_s
    assert time_limit(dict(rows["uniform_sparse@1024"].overrides), 2) == 64 * SPEC.time_limit_s
    assert time_limit({"steps": 10}, 1) == SPEC.time_limit_s  # never below the evaluator's own limit


def test_plasa_overrides_reach_every_run_only_where_they_leave_the_score_alone(tmp_path, monkeypatch):
    """Probe sizes from PLASA_OVERRIDES reach every planned run, under the row's own fields; a
    field that defines the runs (the budget, the model, the data) is refused with the flag to use."""
    from benchmark.experiments import runner

    monkeypatch.setenv("PLASA_OVERRIDES", json.dumps({"probe_causal_rows": 31, "val_batch_size": 3}))
    extra = runner.extra_overrides()
    study = studies.get("schedules")
    row = next(r for r in study.rows if r.name == "progressive_sparse@64")
    tasks = runner.plan(study, tmp_path, [row], 1, 2, extra=extra)
    assert tasks and all(t["overrides"]["probe_causal_rows"] == 31 for t in tasks)
    assert all(t["overrides"]["val_batch_size"] == row.overrides["val_batch_size"] for t in tasks)  # the row wins
    for defining in ({"steps": 5}, {"hidden_size": 64}):
        monkeypatch.setenv("PLASA_OVERRIDES", json.dumps(defining))
        with pytest.raises(ValueError, match="use the flags"):
            runner.extra_overrides()
    monkeypatch.setenv("PLASA_OVERRIDES", json.dumps({"probe_rows": 3}))
    with pytest.raises(ValueError, match="unknown spec field"):
        runner.extra_overrides()


def test_a_refused_override_or_row_exits_2_before_any_run(monkeypatch, capsys):
    """`benchmark experiment` refuses a defining PLASA_OVERRIDES field or an unknown row with exit 2
    and a message, before anything runs; an error once runs have started is not called a usage
    error."""
    from benchmark.experiments import runner

    started = []
    monkeypatch.setattr(runner, "run_study", lambda *a, **k: started.append(a))
    monkeypatch.setenv("PLASA_OVERRIDES", json.dumps({"steps": 5}))
    assert runner.main(["patterns", "--rows", "PPPP"]) == 2
    assert "use the flags" in capsys.readouterr().err
    monkeypatch.delenv("PLASA_OVERRIDES")
    assert runner.main(["patterns", "--rows", "PPPP,NOPE"]) == 2
    assert "unknown rows ['NOPE']" in capsys.readouterr().err
    assert started == []

    def fails_while_running(*args, **kwargs):
        raise ValueError("a bug in a run")

    monkeypatch.setattr(runner, "run_study", fails_while_running)
    with pytest.raises(ValueError, match="a bug in a run"):
        runner.main(["patterns", "--rows", "PPPP"])
