"""Static (AST) checks of a candidate's source: a courtesy, run before anything executes.

They catch clear mistakes early, each with its line and what to write instead: an import outside
PyTorch and the standard helpers, file or code execution builtins, RNG seeding (the evaluator
seeds), loading weights, reflection into interpreter internals, assigning to an imported module's
attributes (but for torch's backend flags, such as ``torch.backends.cuda.matmul.allow_tf32``). They are not the wall: a candidate that gets past them still runs sandboxed, and the
judge decides from its outputs alone. They must never reject what LLMs write every day
(``getattr(self, "x", None)``, ``vars(config)``, ``type(self).__name__``, a parameter named
``input``, ``t[torch.tensor(i)] = v``, a module-level cache with ``global``). Standard library only.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

ALLOWED_IMPORTS = frozenset({
    "torch", "math", "typing", "dataclasses", "enum", "functools", "itertools", "collections",
    "abc", "types", "numbers", "warnings", "__future__",
})
# Builtins that read files, run code or reach the interpreter's namespaces.
FORBIDDEN_CALLS = {
    "open": "file access belongs to the evaluator; build everything from the config",
    "exec": "run no generated code; write it out",
    "eval": "run no generated code; write it out",
    "compile": "run no generated code; write it out (torch.compile is not this)",
    "__import__": "import only torch and the allowed standard modules, with import statements",
    "breakpoint": "remove debugging hooks",
    "globals": "keep state in the model (parameters, buffers)",
    "locals": "keep state in the model (parameters, buffers)",
}
# Attributes of an imported module (torch.load, torch.manual_seed ...) that do I/O or seeding.
MODULE_ATTRIBUTES = {
    "load": "load no files or weights: the model trains from its initialisation",
    "save": "write no files",
    "hub": "download nothing",
    "from_pretrained": "load no pretrained weights",
    "from_file": "read no files",
    "manual_seed": "the evaluator seeds every run; remove the seeding",
    "manual_seed_all": "the evaluator seeds every run; remove the seeding",
    "seed": "the evaluator seeds every run; remove the seeding",
    "set_rng_state": "the evaluator owns the RNG; remove it",
    "fork_rng": "the evaluator owns the RNG; remove it",
    "cpp_extension": "PyTorch only: no compiled extensions",
    "load_inline": "PyTorch only: no compiled extensions",
    "library": "PyTorch only: register no custom operators",
    "set_num_threads": "the evaluator sets the threads",
    "use_deterministic_algorithms": "the evaluator owns global torch settings",
}
# torch's backend configuration flags, the most common lines of GPU-minded PyTorch code: assigning
# one is configuration, not monkey-patching. Each is one that the workers set again after the
# candidate's import and build_model (benchmark.numerics.apply; a test holds the two lists
# together), so it cannot change the numerics of training or scoring.
BACKEND_FLAGS = frozenset({
    "torch.backends.fp32_precision",
    "torch.backends.cuda.matmul.allow_tf32",
    "torch.backends.cuda.matmul.fp32_precision",
    "torch.backends.cuda.matmul.allow_fp16_reduced_precision_reduction",
    "torch.backends.cuda.matmul.allow_bf16_reduced_precision_reduction",
    "torch.backends.cuda.matmul.allow_fp16_accumulation",
    "torch.backends.cudnn.allow_tf32",
    "torch.backends.cudnn.benchmark",
    "torch.backends.cudnn.deterministic",
    "torch.backends.cudnn.enabled",
    "torch.backends.cudnn.fp32_precision",
    "torch.backends.cudnn.conv.fp32_precision",
    "torch.backends.cudnn.rnn.fp32_precision",
    "torch.backends.mkldnn.enabled",
    "torch.backends.mkldnn.fp32_precision",
    "torch.backends.mkldnn.matmul.fp32_precision",
    "torch.backends.mkldnn.conv.fp32_precision",
    "torch.backends.mkldnn.rnn.fp32_precision",
})
# Attributes that reach interpreter internals (frames, globals, class hierarchies, code objects).
REFLECTION = frozenset({
    "__globals__", "__builtins__", "__subclasses__", "__code__", "__bases__", "__mro__", "__closure__",
    "f_locals", "f_globals", "f_back", "f_builtins", "gi_frame", "tb_frame", "__import__", "__loader__",
    "__spec__",
})


@dataclass(frozen=True)
class Violation:
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.message}"


def _module_names(tree: ast.AST) -> set:
    """Names bound to imported modules or their members (import x, import x as y, from x import y)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                names.add((alias.asname or alias.name).split(".")[0])
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                names.add(alias.asname or alias.name)
    return names


def _import_paths(tree: ast.AST) -> dict:
    """{name: {the dotted paths it is bound to by imports}}: ``import torch.backends.cudnn as c``
    binds c to torch.backends.cudnn, ``import torch.backends.cudnn`` binds torch to torch."""
    paths = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                name = alias.asname or alias.name.split(".")[0]
                paths.setdefault(name, set()).add(alias.name if alias.asname else name)
        elif isinstance(node, ast.ImportFrom):
            for alias in node.names:
                paths.setdefault(alias.asname or alias.name, set()).add(
                    f"{'.' * node.level}{node.module or ''}.{alias.name}")
    return paths


def _backend_flag(target: ast.AST, paths: dict) -> bool:
    """True when `target` (name.attr.attr...) is one of torch's BACKEND_FLAGS under every import
    that binds its name."""
    attrs = []
    while isinstance(target, ast.Attribute):
        attrs.append(target.attr)
        target = target.value
    if not isinstance(target, ast.Name) or not paths.get(target.id):
        return False
    tail = ".".join(reversed(attrs))
    return all(f"{path}.{tail}" in BACKEND_FLAGS for path in paths[target.id])


def _root_name(node: ast.AST):
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else None


def _literal_name(call: ast.Call):
    if len(call.args) >= 2 and isinstance(call.args[1], ast.Constant) and isinstance(call.args[1].value, str):
        return call.args[1].value
    return None


def check_source(source: str) -> list:
    """Every violation in `source`, in line order; an empty list means the source passes."""
    try:
        tree = ast.parse(source)
    except SyntaxError as exc:
        return [Violation(exc.lineno or 0, f"syntax error: {exc.msg}")]
    modules = _module_names(tree)
    paths = _import_paths(tree)
    found = []
    allowed = ", ".join(sorted(ALLOWED_IMPORTS - {"__future__"}))
    for node in ast.walk(tree):
        line = getattr(node, "lineno", 0)
        if isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] not in ALLOWED_IMPORTS:
                    found.append(Violation(line, f"import of {alias.name!r} is not allowed: a candidate "
                                                 f"is PyTorch only (allowed: {allowed})"))
        elif isinstance(node, ast.ImportFrom):
            root = (node.module or "").split(".")[0]
            if node.level or root not in ALLOWED_IMPORTS:
                found.append(Violation(line, f"import from {node.module!r} is not allowed: the candidate "
                                             f"is one self-contained file (allowed: {allowed})"))
            for alias in node.names:
                if alias.name in MODULE_ATTRIBUTES:
                    found.append(Violation(line, f"importing {alias.name!r}: {MODULE_ATTRIBUTES[alias.name]}"))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name):
            name = node.func.id
            if name in FORBIDDEN_CALLS and name not in modules:
                found.append(Violation(line, f"{name}(): {FORBIDDEN_CALLS[name]}"))
            elif name in ("getattr", "setattr", "hasattr", "delattr"):
                attr = _literal_name(node)
                if attr in REFLECTION:
                    found.append(Violation(line, f"{name}(..., {attr!r}) reaches interpreter internals; "
                                                 "use the object's ordinary attributes"))
        elif isinstance(node, ast.Attribute):
            if node.attr in REFLECTION:
                found.append(Violation(line, f"attribute {node.attr!r} reaches interpreter internals; "
                                             "use the object's ordinary attributes"))
            elif node.attr in MODULE_ATTRIBUTES and _root_name(node) in modules:
                found.append(Violation(line, f"{_root_name(node)}...{node.attr}: {MODULE_ATTRIBUTES[node.attr]}"))
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete)):
            targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) else [node.target]
            flat = []
            for target in targets:
                flat.extend(target.elts if isinstance(target, (ast.Tuple, ast.List)) else [target])
            for target in flat:
                if isinstance(node, (ast.Assign, ast.AnnAssign)) and _backend_flag(target, paths):
                    continue  # torch.backends.cudnn.benchmark = True: configuration, set again after build
                if isinstance(target, (ast.Attribute, ast.Subscript)) and _root_name(target) in modules:
                    found.append(Violation(line, f"assigning to an attribute of imported module "
                                                 f"{_root_name(target)!r} (monkey-patching): define your "
                                                 "own function or module instead"))
    return sorted(set(found), key=lambda v: (v.line, v.message))
