"""The findings' statistics and definitions: t quantiles, paired differences and Holm against
textbook values; the schedules document's 6-layer definitions; the warm-up rows' main-model steps;
the runner keeping only runs of a row's current definition by the current evaluator; and the
committed reports (docs/findings/*/summary.md, docs/findings.md "Findings") against numbers
recomputed from the committed run files, independently of the report's code (scipy's t
distribution, a naive Holm).
"""

from __future__ import annotations

import json
import math
import re

import pytest
import torch

from benchmark.analysis import stats
from benchmark.analysis.plotting import line_styles
from benchmark.experiments import models, report, runner, studies
from benchmark.spec import SPEC
from tests.conftest import REPO

FINDINGS = REPO / "docs" / "findings"


@pytest.mark.parametrize("df, t", [(1, 12.7062047), (2, 4.30265273), (4, 2.77644511), (10, 2.22813885),
                                   (30, 2.04227246)], ids=lambda v: str(v))
def test_t_quantile_matches_the_tables(df, t):
    assert stats.t_quantile(0.975, df) == pytest.approx(t, abs=1e-6)


def test_paired_difference_by_hand():
    # diffs 1, 2, 4: mean 7/3, sd sqrt(7/3), se sqrt(7/9); t = 2.6458 on 2 df
    d = stats.paired_difference([10, 12, 15], [9, 10, 11])
    half = 4.30265273 * math.sqrt(7 / 9)
    assert d["n"] == 3 and d["mean"] == pytest.approx(7 / 3)
    assert d["ci95"] == pytest.approx([7 / 3 - half, 7 / 3 + half], abs=1e-6)
    assert d["p"] == pytest.approx(0.11808289631180308, rel=1e-8)  # scipy.stats.ttest_rel
    assert stats.paired_difference([1.0], [2.0]) == {"n": 1, "mean": -1.0, "ci95": None, "p": None}
    assert stats.paired_difference([], []) is None
    with pytest.raises(ValueError):
        stats.paired_difference([1, 2], [1])


@pytest.mark.parametrize("raw, adjusted", [
    ([0.01, 0.04, 0.03, 0.005], [0.03, 0.06, 0.06, 0.02]),  # 4 x 0.005, 3 x 0.01, max(2 x 0.03, 0.04)
    ([0.04, 0.045], [0.08, 0.08]),                           # step-down stays monotone
    ([0.01, None], [0.02, None]),                            # a test without data still counts in m
    ([0.5, 0.9, 0.6], [1.0, 1.0, 1.0]),
], ids=["textbook", "monotone", "untested-counts", "capped"])
def test_holm(raw, adjusted):
    out = stats.holm(raw)
    assert [None if a is None else pytest.approx(a) for a in adjusted] == out


def test_line_styles_never_repeat_up_to_twenty_series():
    styles = line_styles(20)
    assert len({s["color"] for s in styles}) == 20
    assert len({(s["color"], s["linestyle"]) for s in line_styles(40)}) == 40


DOCUMENT_6_LAYERS = {  # the schedules document's k / T for layers 0-1, 2-3, 4-5
    "dense_baseline": (1, 1, 1), "uniform_sparse": (1 / 2, 1 / 2, 1 / 2),
    "dense_to_sparse": (1, 1 / 2, 3 / 4), "aggressive_middle": (1 / 2, 1 / 4, 1 / 2),
    "progressive_sparse": (1, 1 / 4, 1 / 2), "reverse_progressive": (1 / 4, 1 / 2, 1),
}


@pytest.mark.parametrize("schedule", studies.SCHEDULE_NAMES)
@pytest.mark.parametrize("T", studies.LENGTHS)
def test_thirds_is_the_documents_6_layer_definition_and_the_variant_differs_at_layer_4(schedule, T):
    early, middle, late = DOCUMENT_6_LAYERS[schedule]
    ks = models.thirds_top_k(schedule, 6, T)
    assert ks == [int(f * T) for f in (early, early, middle, middle, late, late)]
    variant = models.resampled_top_k(schedule, 6, T)
    assert [i for i in range(6) if ks[i] != variant[i]] == ([] if early == middle == late else [4])
    assert models.resampled_top_k(schedule, 4, T) == [int(f * T) for f in models.reference().SCHEDULES[schedule]]


def test_schedules_study_uses_the_document_definition_and_the_variant_is_labelled():
    assert {r.layer_map for r in studies.get("schedules").rows} == {"thirds"}
    variant = studies.get("schedules-variant")
    assert {r.layer_map for r in variant.rows} == {"resample"} and "variant" in variant.question
    assert studies.get("schedules").version != variant.version


MAIN_STEPS = {"FFFF": (1000, 0), "DDDD": (1000, 0), "DDDD+warmup": (800, 200),
              "DDDD+warmup-on-top": (1000, 200), "DDDD-short": (800, 0)}


def test_warmup_rows_get_their_main_model_steps(tmp_path):
    study = studies.get("warmup")
    tasks = runner.plan(study, tmp_path / "warmup", list(study.rows), seeds=1, budget=1000)
    got = {}
    for task in tasks:
        source = (tmp_path / "warmup" / "candidates" / f"{task['row']}.py").read_text()
        warmup = int(re.search(r"warmup_steps=(\d+)", source).group(1))
        got[task["row"]] = (task["overrides"]["steps"] - warmup, warmup)
    assert got == MAIN_STEPS


def test_a_warmup_model_updates_the_main_model_only_after_its_warmup():
    config = SPEC.replace(vocab_size=256).model_config()
    build, configure = models.experiment_candidate("DDDD", warmup_steps=2)
    torch.manual_seed(0)
    model = build(config)
    opt = configure(model, config)
    ids = torch.randint(0, 256, (1, SPEC.seq_len + 1))
    main = [p for n, p in model.named_parameters() if ".indexer." not in n]
    moved = 0
    for _ in range(5):
        before = [p.detach().clone() for p in main]
        logits, aux = model(ids[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 256), ids[:, 1:].reshape(-1)) + aux
        opt.zero_grad()
        loss.backward()
        opt.step()
        moved += any(not torch.equal(p, b) for p, b in zip(main, before))
    assert moved == 5 - 2


def _run(version: str, spec_version: str = SPEC.version) -> str:
    return json.dumps({"valid": True, "seed": 42, "val_ppl": 1.0, "spec_version": spec_version,
                       "study": {"version": version}})


@pytest.mark.parametrize("row, version, spec_version, kept", [
    ("FFFF", "warmup-1", SPEC.version, True),          # unchanged row: its warmup-1 runs stay
    ("DDDD+warmup-on-top", "warmup-1", SPEC.version, False),
    ("FFFF", "warmup-2", "plasa-bench-1.0", False),    # an older evaluator: run again
])
def test_the_runner_keeps_only_current_runs_of_a_rows_definition(tmp_path, row, version, spec_version, kept):
    study = studies.get("warmup")
    path = tmp_path / "warmup" / "runs" / row / "seed42.json"
    path.parent.mkdir(parents=True)
    path.write_text(_run(version, spec_version))
    planned = {t["row"] for t in runner.plan(study, tmp_path / "warmup", list(study.rows), seeds=1, budget=10)}
    assert (row not in planned) == kept


# --- the committed reports against the committed runs -------------------------------------------

def _committed_runs(study) -> dict:
    """row -> {seed: run} read straight from the JSON files: the study version the row accepts,
    one spec version (the newest) for the whole study."""
    found = {}
    for row in study.rows:
        for path in sorted((FINDINGS / study.name / "runs" / row.name).glob("seed*.json")):
            run = json.loads(path.read_text())
            if run["study"]["version"] in studies.accepted_versions(study, row):
                found.setdefault(row.name, {})[run["seed"]] = run
    versions = {r["spec_version"] for by_seed in found.values() for r in by_seed.values()}
    newest = max(versions, key=lambda v: [int(n) for n in re.findall(r"\d+", v)]) if versions else None
    return {row: {s: r for s, r in by_seed.items() if r["spec_version"] == newest and r["valid"]}
            for row, by_seed in found.items()}


def _naive_holm(ps: list) -> list:
    m, order, out, running = len(ps), sorted(range(len(ps)), key=lambda i: ps[i]), [0.0] * len(ps), 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (m - rank) * ps[i]))
        out[i] = running
    return out


def _p(p: float) -> str:
    return f"{p:.2f}" if p >= 0.095 else f"{p:.2g}"


def _expected_lines(study) -> list:
    scipy_stats = pytest.importorskip("scipy.stats")
    runs = _committed_runs(study)
    ppl = {row: {s: r["val_ppl"] for s, r in by_seed.items()} for row, by_seed in runs.items()}
    lines, tested = [], []
    for row, ref in studies.family(study):
        seeds = sorted(set(ppl.get(row, {})) & set(ppl.get(ref, {})))
        if len(seeds) < 2:
            continue
        a, b = [ppl[row][s] for s in seeds], [ppl[ref][s] for s in seeds]
        diffs = [x - y for x, y in zip(a, b)]
        mean = sum(diffs) / len(diffs)
        sd = math.sqrt(sum((d - mean) ** 2 for d in diffs) / (len(diffs) - 1))
        half = scipy_stats.t.ppf(0.975, len(diffs) - 1) * sd / math.sqrt(len(diffs))
        p = float(scipy_stats.ttest_rel(a, b).pvalue)
        tested.append((row, ref, len(seeds), mean, half, 100 * mean / (sum(b) / len(b)), p))
    untested = len(studies.family(study)) - len(tested)
    holm = _naive_holm([t[-1] for t in tested] + [1.0] * untested)
    for (row, ref, n, mean, half, rel, p), h in zip(tested, holm):
        lines.append(f"| {row} - {ref} | {n} | {mean:+.2f} [{mean - half:+.2f}, {mean + half:+.2f}] | "
                     f"{rel:+.1f}% | {_p(p)} | {_p(h)} |")
    for row, by_seed in ppl.items():
        values = list(by_seed.values())
        if len(values) < 2:
            continue
        mean = sum(values) / len(values)
        sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))
        lines.append(f"| {mean:.2f} +- {sd:.2f} |")
    return lines


@pytest.mark.parametrize("name", sorted(studies.STUDIES))
def test_committed_summary_is_the_report_of_the_committed_runs(name):
    """summary.md is exactly what the report command prints from the committed run files."""
    text, _, _ = report.render(studies.get(name), FINDINGS / name)
    assert (FINDINGS / name / "summary.md").read_text() == text, (
        f"stale: run `{report.commands(studies.get(name), FINDINGS / name)['report']}`")


@pytest.mark.parametrize("name", sorted(studies.STUDIES))
def test_committed_summary_prints_the_numbers_recomputed_from_the_runs(name):
    summary = (FINDINGS / name / "summary.md").read_text()
    for line in _expected_lines(studies.get(name)):
        assert line in summary, line


def test_docs_findings_quote_only_numbers_the_reports_print():
    """Every effect (difference [CI]) and mean +- std in docs/findings.md "Findings" is printed by a
    committed summary, and a Holm p quoted after an effect is the one the same summary line gives it."""
    doc = (REPO / "docs" / "findings.md").read_text()
    findings = " ".join(doc.split("\n## Findings\n")[1].split("\n## ")[0].split())
    lines = [line for s in studies.STUDIES for line in (FINDINGS / s / "summary.md").read_text().splitlines()]
    effect = r"[+-]\d+\.\d\d \[[+-]\d+\.\d\d, [+-]\d+\.\d\d\]"
    quoted = re.findall(effect, findings) + re.findall(r"\d+\.\d\d \+- \d+\.\d\d", findings)
    assert len(quoted) > 10, "the Findings section quotes no effects"
    assert [q for q in quoted if not any(q in line for line in lines)] == []
    pairs = re.findall(rf"({effect})(?:(?!{effect}).)*?Holm p = ([\d.e-]*\d)", findings)
    assert len(pairs) > 10
    unmatched = [(e, p) for e, p in pairs
                 if not any(e in line and (f"Holm p = {p}" in line or f"| {p} |" in line) for line in lines)]
    assert unmatched == []
