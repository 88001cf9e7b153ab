"""The candidate contract is stated in full once (docs/contract.md) and summarised for the README, a
search's LLM (initial_proposal.txt) and `evaluator.py`'s docstring. Each statement is held to the
code: the entry points it names are the ones the worker looks up (benchmark/worker/candidate.py),
the config keys are ModelConfig's, and every number it gives (steps, batch, T, layers, the
reference's k schedule, the parameter and FLOP limits, ...) is benchmark/spec.py's. Fast: no
evaluation."""

from __future__ import annotations

import ast
import builtins
import dataclasses
import re
from functools import lru_cache

import pytest

from benchmark.judge.static_checks import ALLOWED_IMPORTS
from benchmark.spec import SPEC, ModelConfig
from benchmark.worker import candidate
from tests.conftest import REPO, load_reference

DOCS = {
    "contract": REPO / "docs" / "contract.md",
    "proposal": REPO / "initial_proposal.txt",
    "evaluator": REPO / "evaluator.py",
    "readme": REPO / "README.md",
    "judge": REPO / "docs" / "judge.md",
}
# The statements that give the whole programming interface (the README links to the contract).
INTERFACE = ("contract", "proposal", "evaluator")


@lru_cache(maxsize=None)
def text(name: str) -> str:
    path = DOCS[name]
    raw = ast.get_docstring(ast.parse(path.read_text())) if path.suffix == ".py" else path.read_text()
    return " ".join(raw.replace("`", "").split())  # one line: wording may wrap anywhere


@lru_cache(maxsize=None)
def reference_top_k() -> list:
    module = load_reference()
    return module.layer_top_k(module.SCHEDULE, SPEC.n_layers, SPEC.seq_len)


def entry_points() -> set:
    return {candidate.BUILD_MODEL, candidate.MODEL_CLASS, candidate.OPTIMIZER_HOOK, candidate.LR_HOOK}


def test_the_worker_looks_up_exactly_the_contract_names():
    """Every getattr the worker does on the candidate's module or model names one of candidate.py's
    contract constants (as the constant or its value), and each constant is looked up."""
    values = {name: getattr(candidate, name) for name in dir(candidate) if name.isupper()
              and isinstance(getattr(candidate, name), str)}
    looked_up = set()
    for path in sorted((REPO / "benchmark" / "worker").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "getattr"
                    and len(node.args) >= 2):
                continue
            owner = node.args[0]
            owner = owner.attr if isinstance(owner, ast.Attribute) else getattr(owner, "id", None)
            if owner not in ("module", "model"):
                continue
            name = node.args[1]
            looked_up.add(name.value if isinstance(name, ast.Constant) else values.get(getattr(name, "id", None)))
    assert looked_up == entry_points() | {candidate.TOP_K_ATTRIBUTE}


@pytest.mark.parametrize("doc", INTERFACE)
def test_the_entry_points_named_are_the_ones_looked_up(doc):
    """Functions named with a contract signature, and *Model classes, are exactly the entry points."""
    words = text(doc)
    named = {n for n in re.findall(r"\b([A-Za-z_]\w*)\((?:config|model, config|step)\)", words)
             if not hasattr(builtins, n)}
    named |= set(re.findall(r"\b([A-Z]\w*Model)\b", words))
    assert named == entry_points(), f"{DOCS[doc].name} names {sorted(named)}"
    assert f"{candidate.TOP_K_ATTRIBUTE}" in words


@pytest.mark.parametrize("doc", INTERFACE)
def test_the_model_class_keywords_and_config_keys(doc):
    words = text(doc)
    keywords = re.findall(rf"{candidate.MODEL_CLASS}\(((?:\w+=,? ?)+)\)", words)
    assert keywords and [re.findall(r"(\w+)=", k) for k in keywords] == [list(candidate.MODEL_CLASS_KEYWORDS)] * len(
        keywords), f"{DOCS[doc].name}: {candidate.MODEL_CLASS}(...) keywords {keywords}"
    fields = [f.name for f in dataclasses.fields(ModelConfig)]
    config_lists = [m.split(", ") for m in re.findall(r"\bvocab_size(?:, \w+)+", words)]
    assert config_lists == [fields], f"{DOCS[doc].name}: config keys {config_lists}, ModelConfig has {fields}"


NUMBER = r"\d+(?:\.\d+)?(?:e-?\d+)?"
# (doc, what, pattern, expected): every match of the pattern (in the doc's text on one line) must
# give the expected numbers, in order; at least one must match.
FACTS = [
    ("proposal", "steps, batch, T", r"exactly \d+ AdamW steps of batch \d+ x \d+ tokens",
     lambda: [SPEC.steps, SPEC.batch_size, SPEC.seq_len]),
    ("proposal", "seed", r"tokens, seed \d+", lambda: [SPEC.seed]),
    ("proposal", "vocab", r"vocab \d+", lambda: [SPEC.vocab_size]),
    ("proposal", "architecture", r"\d+-layer decoder \(hidden \d+, \d+ heads of dim \d+, sequence \d+\)",
     lambda: [SPEC.n_layers, SPEC.hidden_size, SPEC.n_heads, SPEC.hidden_size // SPEC.n_heads, SPEC.seq_len]),
    ("proposal", "fixed sizes", r"Sizes \(\d+ layers, hidden \d+, \d+ heads, T \d+, vocab \d+, embedding width \d+\)",
     lambda: [SPEC.n_layers, SPEC.hidden_size, SPEC.n_heads, SPEC.seq_len, SPEC.vocab_size, SPEC.hidden_size]),
    ("proposal", "k schedule", r"progressive schedule \[[\d, ]+\]", lambda: reference_top_k()),
    ("proposal", "the reference's row", r"\[[\d, ]+\] \(the reference\)", lambda: reference_top_k()),
    ("proposal", "recipe", rf"AdamW lr {NUMBER}, betas \({NUMBER}, {NUMBER}\), weight decay {NUMBER}",
     lambda: [SPEC.lr, *SPEC.betas, SPEC.weight_decay]),
    ("contract", "recipe", rf"AdamW lr {NUMBER}, betas \({NUMBER}, {NUMBER}\), weight decay {NUMBER}",
     lambda: [SPEC.lr, *SPEC.betas, SPEC.weight_decay]),
    ("readme", "recipe", rf"AdamW lr {NUMBER}, betas \({NUMBER}, {NUMBER}\), weight decay {NUMBER}",
     lambda: [SPEC.lr, *SPEC.betas, SPEC.weight_decay]),
    ("proposal", "parameter limit", r"More than \d+\.\d+x the reference's parameters and buffers \([\d,]+;",
     lambda: [SPEC.max_params_ratio, SPEC.reference_params]),
    ("proposal", "FLOP limit", r"more than \d+\.\d+x the FLOPs of the reference's whole training step \([\d,]+:",
     lambda: [SPEC.max_flops_ratio, SPEC.reference_step_flops]),
    ("proposal", "embedding width", r"an embedding wider than \d+", lambda: [SPEC.hidden_size]),
    ("proposal", "hang", r"no progress for \d+ s", lambda: [int(SPEC.heartbeat_s)]),
    ("proposal", "limits", r"exceeding \d+ minutes or \d+ GiB",
     lambda: [int(SPEC.time_limit_s // 60), SPEC.memory_limit_mb // 1024]),
    ("proposal", "reference score", r"\(the reference\): val_ppl \d+\.\d+", lambda: [SPEC.reference_val_ppl]),
    ("proposal", "reference combined_score", r"The reference scores combined_score 0\.\d+",
     lambda: [round(1 / SPEC.reference_val_ppl, 5)]),
    ("evaluator", "k schedule", r"the reference's: [\d, ]+\)", lambda: reference_top_k()),
    ("evaluator", "budget", r"\d+ steps of batch \d+ x \d+ tokens, \d+ layers of hidden \d+",
     lambda: [SPEC.steps, SPEC.batch_size, SPEC.seq_len, SPEC.n_layers, SPEC.hidden_size]),
    ("evaluator", "limits", r"at most \d+\.\d+x the reference's parameters and \d+\.\d+x the FLOPs",
     lambda: [SPEC.max_params_ratio, SPEC.max_flops_ratio]),
    ("contract", "architecture", r"\| architecture \| \d+ layers, hidden \d+, \d+ heads, T = \d+, SmolLM-135M tokenizer, "
     r"vocab \d+ \|", lambda: [SPEC.n_layers, SPEC.hidden_size, SPEC.n_heads, SPEC.seq_len, SPEC.vocab_size]),
    ("contract", "budget", r"\| budget \| \d+ optimizer steps, batch \d+ \(\d+ tokens per step\) \|",
     lambda: [SPEC.steps, SPEC.batch_size, SPEC.batch_size * SPEC.seq_len]),
    ("contract", "k schedule", r"k = [\d, ]+ at T = \d+", lambda: [*reference_top_k(), SPEC.seq_len]),
    ("contract", "seed", r"\| seed, data \| \d+;", lambda: [SPEC.seed]),
    ("contract", "parameter limit", r"<= \d+\.\d+ x the reference's [\d,]+ \(bytes",
     lambda: [SPEC.max_params_ratio, SPEC.reference_params]),
    ("contract", "FLOP limit", r"<= \d+\.\d+ x the reference's [\d,]+ \|",
     lambda: [SPEC.max_flops_ratio, SPEC.reference_step_flops]),
    ("contract", "limits", r"\d+ s wall clock, \d+ MiB resident memory, a heartbeat at least every max\(\d+ s, \d+ x",
     lambda: [int(SPEC.time_limit_s), SPEC.memory_limit_mb, int(SPEC.heartbeat_s), int(SPEC.heartbeat_factor)]),
    ("readme", "k schedule", r"progressive schedule at T = \d+: k = [\d, ]+\)", lambda: [SPEC.seq_len, *reference_top_k()]),
    ("readme", "architecture", r"\| architecture \| \d+ layers, hidden \d+, \d+ heads, T = \d+, SmolLM-135M tokenizer, "
     r"vocab \d+ \|", lambda: [SPEC.n_layers, SPEC.hidden_size, SPEC.n_heads, SPEC.seq_len, SPEC.vocab_size]),
    ("readme", "budget", r"\| budget \| \d+ optimizer steps, batch \d+ \(\d+ tokens per step\), seed \d+",
     lambda: [SPEC.steps, SPEC.batch_size, SPEC.batch_size * SPEC.seq_len, SPEC.seed]),
    ("readme", "size and compute", r"<= \d+\.\d+x the reference's parameters, <= \d+\.\d+x its training step's FLOPs",
     lambda: [SPEC.max_params_ratio, SPEC.max_flops_ratio]),
    ("readme", "reference val_ppl", r"the reference's is \d+\.\d+", lambda: [SPEC.reference_val_ppl]),
]


@pytest.mark.parametrize("doc, what, pattern, expected", FACTS, ids=[f"{d}-{w}" for d, w, *_ in FACTS])
def test_the_numbers_stated_are_the_spec(doc, what, pattern, expected):
    found = re.findall(pattern, text(doc))
    assert found, f"{DOCS[doc].name} no longer states the {what} as /{pattern}/: restate it, or update this test"
    for match in found:
        numbers = [float(x) for x in re.findall(NUMBER, match.replace(",", "").replace("SmolLM-135M", ""))]
        assert numbers == expected(), f"{DOCS[doc].name} states the {what} as {match!r}; the spec says {expected()}"


@pytest.mark.parametrize("doc", ["proposal", "judge"])
def test_the_allowed_imports_are_the_static_checks(doc):
    words = text(doc)
    listed = re.search(r"[Ii]mports (?:other than|only) ((?:\w+, )+\w+)", words)
    assert listed, f"{DOCS[doc].name} no longer lists the allowed imports"
    assert set(listed.group(1).split(", ")) == ALLOWED_IMPORTS - {"__future__"}
