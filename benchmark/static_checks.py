"""Static (AST) checks of a candidate's source, run in the parent before anything executes.

Standard library only. Each violation names the offending line so an LLM can fix it.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

ALLOWED_IMPORTS = frozenset({
    "torch", "math", "typing", "dataclasses", "enum", "functools", "itertools", "collections",
    "abc", "types", "numbers", "warnings", "__future__",
})
FORBIDDEN_NAMES = frozenset({
    "open", "exec", "eval", "compile", "__import__", "importlib", "sys", "os", "subprocess",
    "socket", "ctypes", "pickle", "gc", "inspect", "threading", "multiprocessing", "builtins",
    "__builtins__", "globals", "locals", "vars", "breakpoint", "input", "memoryview",
    "getattr", "setattr", "delattr",
})
# Attribute names that reach outside the model: file and network I/O, RNG control, reflection.
FORBIDDEN_ATTRIBUTES = frozenset({
    "load", "save", "hub", "from_pretrained", "manual_seed", "seed", "set_rng_state",
    "initial_seed", "get_rng_state", "fork_rng", "from_file", "ops", "_C", "library",
    "__dict__", "__globals__", "__builtins__", "__subclasses__", "__code__", "__class__",
    "__bases__", "__mro__", "f_locals", "f_globals", "f_back", "__import__", "__loader__",
    "__spec__", "utils_data", "cpp_extension", "load_inline", "register_forward_hook",
    "set_num_threads", "set_flush_denormal", "use_deterministic_algorithms",
})


@dataclass(frozen=True)
class Violation:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


def _module_names(tree: ast.AST) -> set:
    """Names bound to imported modules (import x, import x as y, from x import y)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                names.add((alias.asname or alias.name).split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                names.add(alias.asname or alias.name)
    return names


def _root_name(node: ast.AST):
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def check_source(source: str) -> list:
    """Every violation in `source`, in line order; an empty list means the source passes."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        return [Violation(exc.lineno or 0, f"syntax error: {exc.msg}")]
    modules = _module_names(tree)
    found = []
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] not in ALLOWED_IMPORTS:
                    found.append(Violation(line, f"import of {alias.name!r} is not allowed "
                                                 f"(allowed: {', '.join(sorted(ALLOWED_IMPORTS))})"))
        elif isinstance(node, ast.ImportFrom):
            root = (node.module or "").split(".")[0]
            if node.level or root not in ALLOWED_IMPORTS:
                found.append(Violation(line, f"import from {node.module!r} is not allowed"))
            for alias in node.names:
                if alias.name in FORBIDDEN_NAMES or alias.name in FORBIDDEN_ATTRIBUTES:
                    found.append(Violation(line, f"importing {alias.name!r} is not allowed"))
        elif isinstance(node, ast.Name) and node.id in FORBIDDEN_NAMES:
            found.append(Violation(line, f"use of {node.id!r} is not allowed"))
        elif isinstance(node, ast.Attribute) and node.attr in FORBIDDEN_ATTRIBUTES:
            found.append(Violation(line, f"use of attribute {node.attr!r} is not allowed "
                                         "(file I/O, RNG control and reflection belong to the evaluator)"))
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete)):
            targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
            for target in targets:
                for sub in ast.walk(target):
                    if isinstance(sub, (ast.Attribute, ast.Subscript)) and _root_name(sub) in modules:
                        found.append(Violation(line, f"assigning to an attribute of imported module "
                                                     f"{_root_name(sub)!r} (monkey-patching) is not allowed"))
                        break
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            found.append(Violation(line, f"{type(node).__name__.lower()} statements are not allowed "
                                         "(module-level state across forward calls)"))
    return sorted(set(found), key=lambda v: (v.line, v.message))
