"""The parameter budget counts bytes (fp32 equivalents, bytes / 4) whatever the dtype: packing
values into another dtype's elements cannot change what a state is counted as."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from benchmark.judge.budget import param_check, parameter_counts, structure_checks
from benchmark.spec import SPEC

VOCAB, HIDDEN = SPEC.vocab_size, SPEC.hidden_size


def _packings(values: torch.Tensor) -> dict:
    """The same bytes as a native tensor and packed into every wider or narrower container."""
    return {"native": values, "int32": values.view(torch.int32), "float32": values.view(torch.float32),
            "float64": values.view(torch.float64), "int64": values.view(torch.int64),
            "uint8": values.view(torch.uint8), "int16": values.view(torch.int16)}


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32], ids=str)
def test_every_packing_of_the_same_values_counts_the_same(dtype):
    torch.manual_seed(0)
    values = torch.randn(64, 256).to(dtype)
    counts = {name: parameter_counts({"w": t}, VOCAB) for name, t in _packings(values).items()}
    expected = values.numel() * values.element_size() // 4
    assert {name: c["total"] for name, c in counts.items()} == dict.fromkeys(counts, expected)
    assert all(c["bytes"] == values.numel() * values.element_size() for c in counts.values())


def test_odd_bytes_round_up_and_ties_still_count_once():
    torch.manual_seed(0)
    weight = torch.randn(VOCAB, 8)
    state = {"embed": weight, "head": weight.clone(), "flags": torch.ones(3, dtype=torch.bool)}
    counts = parameter_counts(state, VOCAB)
    assert counts["total"] == weight.numel() + 1 and counts["embedding"] == weight.numel()
    assert counts["bytes"] == weight.numel() * 4 + 3


def test_a_packed_model_over_the_budget_is_over_it_in_any_packing():
    """1.21x the limit of fp32 values, handed over as float64 pairs or int32: still over."""
    limit = int(SPEC.reference_params * SPEC.max_params_ratio)
    values = torch.randn(int(1.21 * limit) // 2 * 2)
    for name, packed in _packings(values).items():
        verdict = param_check(parameter_counts({"w": packed}, VOCAB), SPEC)
        assert not verdict["passed"], name
        assert "bytes" in verdict["detail"] and "smaller dtype" in verdict["detail"]


def test_an_embedding_twice_as_wide_packed_in_float64_is_too_wide():
    """A (vocab, 2 x hidden) fp32 embedding viewed as (vocab, hidden) float64 has hidden_size
    elements per token but twice the bytes."""
    wide = torch.randn(VOCAB, 2 * HIDDEN).view(torch.float64)
    assert wide.shape == (VOCAB, HIDDEN)
    checks = structure_checks({"embed.weight": wide}, [128, 32, 32, 64], SPEC)
    width = next(c for c in checks if c["name"] == "embedding_width")
    assert not width["passed"] and "bytes" in width["detail"], width
    narrow = structure_checks({"embed.weight": torch.randn(VOCAB, 2 * HIDDEN).to(torch.bfloat16)},
                              [128, 32, 32, 64], SPEC)
    assert next(c for c in narrow if c["name"] == "embedding_width")["passed"]


def test_the_red_team_model_packing_bf16_pairs_in_int32_is_counted_by_its_bytes(tmp_path):
    """The fourth red-team pass's model: 1.19x the reference's parameters, stored in bf16 and handed
    over two per int32 element, was counted as 0.6x by elements where the same tensors stored
    natively as bf16 counted 1.19x. By bytes both count the same (0.6x: bf16 holds half the bytes
    of fp32), so packing buys nothing over the dtype it packs."""
    from tests.adversarial.cheats import write

    path = write("packed_bf16_params", tmp_path)
    spec = importlib.util.spec_from_file_location("packed_bf16_params", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    torch.manual_seed(SPEC.seed)
    model = module.build_model(SPEC.model_config())
    packed, native = model.state_dict(), torch.nn.Module.state_dict(model)
    assert {t.dtype for t in packed.values()} == {torch.int32, torch.float32}
    assert sum(t.numel() for t in native.values()) > 1.15 * SPEC.reference_params
    assert parameter_counts(packed, VOCAB) == parameter_counts(native, VOCAB)
    assert parameter_counts(packed, VOCAB)["total"] * 4 == sum(t.nbytes for t in native.values())
