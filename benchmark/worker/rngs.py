"""The model's own random generators, forked around a probe forward as the global RNG is.

An honest model may draw its dropout masks from a ``torch.Generator()`` of its own. A train-mode
probe compares two forwards that must draw the same masks (the judge seeds the global RNG alike
for both); a generator of the model's own, advanced by the first forward, gave the second other
masks, and dropout read as a future leak (0.83 nats). So every generator the model can reach has
its state saved before such a forward and put back after it: both forwards draw the same masks,
and training continues from the state it would have had without the probe.

Found without running any of the candidate's code: from the model and the candidate module,
through instance dictionaries and slots, containers, bound methods and partials
(``gc.get_referents``: the objects' own C traversal, no attribute lookup, so no ``__getattr__``,
property, ``__iter__`` or ``__class__`` of the candidate's runs), the defaults, closures and
attributes of the candidate's functions, and the namespaces of the candidate's classes. Not
entered: other modules, classes and functions (their globals are torch's and the evaluator's),
tensors, frames. At most MAX_OBJECTS objects are examined; a generator hidden beyond that, or
re-seeded from a count the model keeps, still draws other masks in the second forward, which only
makes the model's own probe fail.
"""

from __future__ import annotations

import gc
import types
from contextlib import contextmanager
from typing import Iterator

import torch

MAX_OBJECTS = 200_000

# captured before any candidate is imported
_referents = gc.get_referents
_get_state = torch.Generator.get_state
_set_state = torch.Generator.set_state
_class_namespace = type.__dict__["__dict__"].__get__  # a class's own namespace, past its metaclass
# types never entered, by id (hashing a candidate's class could run its metaclass's __hash__)
_LEAVES = frozenset(map(id, (str, bytes, bytearray, int, float, complex, bool, type(None), range, slice,
                             types.CodeType, types.FrameType, types.TracebackType, types.GeneratorType,
                             types.CoroutineType, types.AsyncGeneratorType)))


def find(roots: tuple, module_name: str, limit: int = MAX_OBJECTS) -> list:
    """Every torch.Generator reachable from `roots` (the model, the candidate module), in the order
    found; `module_name` names the candidate module, whose functions and classes are entered."""
    found, seen, stack = [], set(), []
    for root in roots:  # a module is entered through its namespace (md_dict), a root or not
        stack.extend(_referents(root) if issubclass(type(root), types.ModuleType) else (root,))
    examined = 0
    while stack and examined < limit:
        obj = stack.pop()
        kind = type(obj)
        if id(kind) in _LEAVES or id(obj) in seen:
            continue
        seen.add(id(obj))
        examined += 1
        if issubclass(kind, torch.Generator):
            found.append(obj)
        elif issubclass(kind, (torch.Tensor, types.ModuleType)):
            continue
        elif issubclass(kind, type):
            namespace = _class_namespace(obj)
            owner = namespace.get("__module__")
            if type(owner) is str and owner == module_name:
                stack.extend(_referents(namespace))  # the class's dict, alive while the class is
        elif kind is types.FunctionType:
            if type(obj.__module__) is str and obj.__module__ == module_name:
                stack.extend(part for part in (obj.__defaults__, obj.__kwdefaults__, obj.__closure__,
                                               obj.__dict__) if part is not None)
        else:
            stack.extend(_referents(obj))
    return found


@contextmanager
def forked(generators: list) -> Iterator[None]:
    """Puts each generator's state back as it was when the block ends (the C methods, whatever a
    subclass defines)."""
    states = [_get_state(generator) for generator in generators]
    try:
        yield
    finally:
        for generator, state in zip(generators, states):
            _set_state(generator, state)
