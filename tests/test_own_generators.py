"""The model's own torch.Generator objects are found wherever an LLM keeps them, without running any
of the candidate's code, and forked around a probe forward: both forwards of a train-mode probe draw
the same dropout masks, and the generators end as they were."""

from __future__ import annotations

import types

import pytest
import torch

from benchmark.worker import rngs

# A candidate module in the styles LLMs write: a generator per dropout layer (created lazily), one
# shared in a list and a dict, one at module level, one in a default argument, one in a closure,
# one a class attribute, one in a partial's keywords.
SOURCE = '''
import functools
import torch
import torch.nn as nn

GLOBAL_GEN = torch.Generator()

def make_noise(scale):
    gen = torch.Generator()
    def noise(x):
        return x + scale * torch.randn(x.shape, generator=gen)
    return noise

def jitter(x, gen=torch.Generator()):
    return x + torch.rand(x.shape, generator=gen)

class Dropout(nn.Module):
    shared = torch.Generator()

    def __init__(self, p):
        super().__init__()
        self.p, self.gen = p, None

    def forward(self, x):
        if self.gen is None:
            self.gen = torch.Generator(device=x.device)
        return x * torch.empty_like(x).bernoulli_(1 - self.p, generator=self.gen) / (1 - self.p)

class Slotted:
    __slots__ = ("gen",)

    def __init__(self):
        self.gen = torch.Generator()

class Model(nn.Module):
    def __init__(self):
        super().__init__()
        self.drops = nn.ModuleList([Dropout(0.5), Dropout(0.5)])
        self.extra = [torch.Generator()]
        self.table = {"gen": torch.Generator()}
        self.slotted = Slotted()
        self.noise = make_noise(0.1)
        self.perm = functools.partial(torch.randperm, generator=torch.Generator())

    def forward(self, x):
        for drop in self.drops:
            x = drop(x)
        x = self.noise(x) + torch.rand(x.shape, generator=self.extra[0])
        return x + torch.rand(x.shape, generator=self.table["gen"]) + jitter(x) + torch.rand(
            x.shape, generator=GLOBAL_GEN) + torch.rand(x.shape, generator=Dropout.shared)
'''


def candidate(source: str = SOURCE) -> types.ModuleType:
    module = types.ModuleType("candidate")
    exec(compile(source, "candidate.py", "exec"), module.__dict__)  # noqa: S102 - the test's own code
    return module


def test_every_generator_an_llm_keeps_is_found():
    module = candidate()
    model = module.Model()
    model(torch.ones(3))  # the dropout layers create theirs in the first forward
    found = {id(g) for g in rngs.find((model, module), "candidate")}
    expected = [d.gen for d in model.drops] + [model.extra[0], model.table["gen"], model.slotted.gen,
                                              module.GLOBAL_GEN, module.Dropout.shared,
                                              module.jitter.__defaults__[0], model.perm.keywords["generator"],
                                              model.noise.__closure__[0].cell_contents]
    assert len(expected) == 10 and {id(g) for g in expected} <= found
    assert id(torch.default_generator) not in found, "entered torch's own namespace"


def test_a_probe_forward_repeats_its_masks_and_leaves_the_generators_as_they_were():
    module = candidate()
    model = module.Model()
    x = torch.ones(4, 8)
    model(x)
    generators = rngs.find((model, module), "candidate")
    before = [g.get_state().clone() for g in generators]
    with torch.random.fork_rng(), rngs.forked(generators):
        first = model(x)
    with torch.random.fork_rng(), rngs.forked(generators):
        second = model(x)
    assert torch.equal(first, second)
    assert all(torch.equal(g.get_state(), s) for g, s in zip(generators, before))
    # training goes on from where it was: its next forward is the probe's, the one after it is not
    assert torch.equal(model(x), first) and not torch.equal(model(x), first)


def test_no_candidate_code_runs_while_generators_are_found():
    calls = []
    source = SOURCE + '''
class Meta(type):
    def __hash__(cls):
        calls.append("metaclass __hash__")
        return 1

    def __eq__(cls, other):
        calls.append("metaclass __eq__")
        return False

class Hostile(metaclass=Meta):
    def __init__(self):
        object.__setattr__(self, "hidden", torch.Generator())

    def __getattribute__(self, name):
        calls.append("__getattribute__ " + name)
        return object.__getattribute__(self, name)

    def __getattr__(self, name):
        calls.append("__getattr__ " + name)
        raise AttributeError(name)

    @property
    def __class__(self):
        calls.append("__class__")
        return torch.Generator

    @property
    def __dict__(self):
        calls.append("__dict__")
        return {}

    def __iter__(self):
        calls.append("__iter__")
        return iter(())

class HostileList(list):
    def __iter__(self):
        calls.append("list __iter__")
        return iter(())
'''
    module = candidate(source)
    module.calls = calls
    model = module.Model()
    model.hostile = module.Hostile()
    model.listed = module.HostileList([module.Hostile()])
    calls.clear()
    found = {id(g) for g in rngs.find((model, module), "candidate")}
    assert calls == []
    assert id(object.__getattribute__(model.hostile, "hidden")) in found


def test_the_search_is_bounded():
    """A generator 5000 containers deep is found only by a search allowed that far."""
    deep = torch.Generator()
    chain = [deep]
    for _ in range(5000):
        chain = [chain]
    holder = types.SimpleNamespace(chain=chain)
    assert rngs.find((holder,), "candidate", limit=1000) == []
    assert rngs.find((holder,), "candidate", limit=10_000) == [deep]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_a_cuda_generator_is_forked():
    gen = torch.Generator(device="cuda")
    holder = types.SimpleNamespace(gen=gen)
    (found,) = rngs.find((holder,), "candidate")
    with rngs.forked([found]):
        first = torch.rand(5, device="cuda", generator=gen)
    assert torch.equal(first, torch.rand(5, device="cuda", generator=gen))
