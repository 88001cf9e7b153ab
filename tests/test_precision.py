"""The precision an evaluation runs in: bf16 only where the machine supports it and, on a CPU under
"auto", only where a measured step is faster in it."""

from __future__ import annotations

import pytest

from benchmark.judge import precision


@pytest.fixture
def cache(monkeypatch, tmp_path):
    monkeypatch.setenv("PLASA_CACHE_DIR", str(tmp_path))
    return tmp_path


def fake_measure(fp32_s: float, bf16_s: float, calls: list):
    def measure(p):
        calls.append(p)
        return fp32_s if p == "fp32" else bf16_s
    return measure


def test_fp32_is_fp32_and_bf16_needs_support(monkeypatch, cache):
    monkeypatch.setattr(precision, "bf16_supported", lambda device: False)
    assert precision.resolve_precision("cpu", "fp32")[0] == "fp32"
    assert precision.resolve_precision("cpu", "bf16") == ("fp32", {"requested": "bf16", "bf16_supported": False})
    assert precision.resolve_precision("cpu", "auto")[0] == "fp32"
    monkeypatch.setattr(precision, "bf16_supported", lambda device: True)
    assert precision.resolve_precision("cpu", "bf16")[0] == "bf16"      # asked for, and supported


@pytest.mark.parametrize("fp32_s, bf16_s, chose", [(0.20, 0.10, "bf16"), (0.20, 0.194, "fp32"),
                                                   (0.20, 0.60, "fp32")])
def test_auto_on_a_cpu_takes_bf16_only_where_it_measures_faster(monkeypatch, cache, fp32_s, bf16_s, chose):
    calls, measured_choice = [], precision.measured_choice
    monkeypatch.setattr(precision, "bf16_supported", lambda device: True)
    monkeypatch.setattr(precision, "measured_choice",
                        lambda: measured_choice(fake_measure(fp32_s, bf16_s, calls)))
    used, why = precision.resolve_precision("cpu", None)   # None: the spec's default, "auto"
    assert used == chose and why["chose"] == chose and why["requested"] == "auto"
    assert why["speedup"] == pytest.approx(fp32_s / bf16_s, abs=1e-3)
    assert sorted(calls) == ["bf16", "fp32"]


def test_the_measurement_is_kept_per_machine(cache):
    calls = []
    first = precision.measured_choice(fake_measure(0.2, 0.1, calls))
    again = precision.measured_choice(fake_measure(0.2, 0.5, calls))   # answered from the cache
    assert first == again and first["chose"] == "bf16" and calls == ["fp32", "bf16"]
    assert len(list((cache / "precision").glob("*.json"))) == 1


def test_cuda_auto_is_bf16_where_supported(monkeypatch, cache):
    monkeypatch.setattr(precision, "bf16_supported", lambda device: True)
    monkeypatch.setattr(precision, "measured_choice", lambda: pytest.fail("CUDA is not measured"))
    assert precision.resolve_precision("cuda", "auto")[0] == "bf16"


def test_an_unknown_precision_is_refused():
    with pytest.raises(ValueError, match="expected one of auto, bf16, fp32"):
        precision.resolve_precision("cpu", "fp16")


@pytest.mark.parametrize("p", ["fp32", "bf16"])
def test_the_reference_shaped_step_runs(p):
    """The real measurement, at a small size: forward, backward and an optimizer step."""
    seconds = precision.reference_step_s(p, tokens=2 * 16, seq_len=16, hidden=64, vocab=500, layers=1,
                                         steps=1)
    assert 0 < seconds < 30
