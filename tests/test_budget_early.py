"""Budget verdicts come as soon as they are known: a trial step and the untrained state before
training, a secret counted step in the first percent of training, and the run stops there."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from benchmark.judge import probes
from benchmark.spec import SPEC, Spec
from tests.adversarial.cheats import write
from tests.conftest import evaluate_tiny


@pytest.fixture
def key_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("PLASA_CACHE_DIR", str(tmp_path))
    return tmp_path


def test_one_counted_step_lies_in_the_first_percent_and_the_others_after_it(key_dir):
    rng = np.random.default_rng(0)
    steps = probes.counted_steps(1000, 42, rng, SPEC.early_count_fraction)
    assert len(steps) == 3 and steps == sorted(set(steps))
    assert 1 <= steps[0] <= 10 and 10 < steps[1] <= 505 < steps[2] < 1000
    assert probes.counted_steps(1000, 42, rng, SPEC.early_count_fraction) == steps  # repeatable
    assert probes.counted_steps(1, 42, rng, 0.01) == [0] and probes.counted_steps(2, 42, rng, 0.01) == [1]
    assert probes.counted_steps(3, 42, rng, 0.01) == [1, 2]


def test_the_early_step_varies_with_the_installation_key(key_dir):
    """Secret: drawn from the key, so over installations it falls anywhere in the first percent."""
    seen = set()
    for i in range(40):
        (key_dir / "judge.key").write_bytes(bytes([i]) * 32)
        seen.add(probes.counted_steps(1000, 42, np.random.default_rng(0), 0.01)[0])
    assert len(seen) >= 5 and seen <= set(range(1, 11))


def _tiny_worker(reference):
    """A stand-in for a training worker (the attributes trial_step reads) on a tiny model."""
    from types import SimpleNamespace

    from benchmark.worker.train import Runtime

    spec = Spec().replace(vocab_size=256, hidden_size=64, n_layers=4, n_heads=2, seq_len=16)
    torch.manual_seed(0)
    config = spec.model_config()
    return SimpleNamespace(model=reference.build_model(config), module=reference, spec=spec,
                           config=config, rt=Runtime(torch.device("cpu"), "fp32"), own_generators=lambda: [])


def _train(worker, windows):
    from benchmark.worker.train import make_optimizer, train

    torch.manual_seed(1)
    optimizer, scheduler = make_optimizer(worker.model, worker.module, worker.spec, worker.config)
    train(worker.model, optimizer, scheduler, len(windows), lambda i: (windows[i], False), worker.spec,
          worker.rt, lambda *a: None)
    return {k: v.clone() for k, v in worker.model.state_dict().items()}


def test_the_trial_step_counts_a_whole_step_and_leaves_training_exactly_as_without_it(reference):
    from benchmark.worker.serve import Worker

    windows = torch.randint(0, 256, (3, 2, 17), generator=torch.Generator().manual_seed(3))
    plain = _train(_tiny_worker(reference), windows)
    tried = _tiny_worker(reference)
    before = {k: v.clone() for k, v in tried.model.state_dict().items()}
    rng = torch.get_rng_state()
    flops = Worker.trial_step(tried, windows[0].tolist())
    assert flops > 0 and torch.equal(torch.get_rng_state(), rng)
    assert all(torch.equal(before[k], v) for k, v in tried.model.state_dict().items())
    assert all(p.grad is None for p in tried.model.parameters())
    after = _train(tried, windows)
    assert all(torch.equal(plain[k], after[k]) for k in plain), "the trial step changed training"


OVERSIZED_STEP = ("        for block in self.blocks:\n            x, block_aux = block(x, cos, sin)",
                  "        for block in self.blocks:\n            for _ in range(4):\n"
                  "                x, block_aux = block(x, cos, sin)")


@pytest.mark.evaluation
def test_an_over_budget_step_is_rejected_within_60_s_at_the_official_budget(tmp_path):
    """Four passes through every block: 2.4x the reference's step. It used to train all its
    steps before flops_budget rejected it (534 s for 30 steps of a similar model)."""
    from tests.adversarial.cheats import REFERENCE

    text = REFERENCE.read_text()
    assert OVERSIZED_STEP[0] in text
    path = tmp_path / "oversized.py"
    path.write_text(text.replace(*OVERSIZED_STEP))
    result = evaluate_tiny(path, {"steps": SPEC.steps})  # the official 1000 steps
    assert not result["valid"] and result["error_type"] == "flops_budget", result.get("error")
    assert result["timings"]["wall_s"] < 60, result["timings"]
    assert "before training" in result["error"]


@pytest.mark.evaluation
def test_extra_work_that_starts_after_an_optimizers_first_step_is_caught_before_training(tmp_path):
    """Its optimizer skips its extra passes on its first call: the trial's second step counts."""
    result = evaluate_tiny(write("extra_passes_after_step0", tmp_path), {"steps": SPEC.steps})
    assert not result["valid"] and result["error_type"] == "flops_budget", result.get("error")
    assert "before training" in result["error"]


TRIAL_AWARE = """

class TrialAwareAdamW(torch.optim.AdamW):
    \"\"\"Honest on the first optimizer it is asked for (the trial's), three extra passes per step
    on every later one (the training loop's).\"\"\"

    made = 0

    def __init__(self, model):
        super().__init__(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1)
        TrialAwareAdamW.made += 1
        self.model, self.extra = model, 3 if TrialAwareAdamW.made > 1 else 0

    def step(self, closure=None):
        super().step()
        for _ in range(self.extra):
            ids = self.model.last_ids
            logits, aux = self.model(ids[:, :-1])
            self.zero_grad()
            (F.cross_entropy(logits.float().flatten(0, 1), ids[:, 1:].flatten()) + aux).backward()
            super().step()


def configure_optimizer(model, config):
    return TrialAwareAdamW(model)
"""


@pytest.mark.evaluation
def test_extra_work_the_trial_never_sees_stops_the_run_in_its_first_percent(tmp_path):
    """A candidate that recognises the trial's optimizer: the secret early counted step catches it
    within the first 1% of the official 1000 steps, and the run stops there. The CPU meter, which
    may catch three extra passes first on a fast machine (CI's did), is made blind
    (min_cpu_efficiency 0.001) so the counted step alone decides."""
    from tests.adversarial.cheats import REFERENCE

    text = REFERENCE.read_text()
    marker = "        T = input_ids.size(1)\n"
    assert marker in text
    text = text.replace(marker, "        if self.training and torch.is_grad_enabled():\n"
                                "            self.last_ids = input_ids\n" + marker) + TRIAL_AWARE
    path = tmp_path / "trial_aware.py"
    path.write_text(text)
    result = evaluate_tiny(path, {"steps": SPEC.steps, "min_cpu_efficiency": 0.001})
    assert not result["valid"] and result["error_type"] == "flops_budget", result.get("error")
    assert "before training" not in result["error"]
    assert result["steps_completed"] <= SPEC.early_count_fraction * SPEC.steps, result["steps_completed"]
    assert result["params"]["trial_step_flops"] <= SPEC.reference_step_flops * 1.01


@pytest.mark.evaluation
def test_a_model_over_the_parameter_budget_is_rejected_before_training(tmp_path):
    result = evaluate_tiny(write("more_parameters", tmp_path), {"steps": SPEC.steps})
    assert not result["valid"] and result["error_type"] == "param_budget", result.get("error")
    assert "before training" in result["error"] and "steps_completed" not in result
