"""The typed messages across the trust boundary between the judge and a worker. Standard library.

The judge (``benchmark.judge``) starts a worker (``python -m benchmark.worker FD``) with one
:class:`WorkerRequest` on its standard input, then drives it with :class:`Op` lines on the same
pipe. The worker answers with JSON lines on file descriptor FD (every line is also a heartbeat).
Tensors never travel on the pipes: input ids and logits go through two sealed memory files the
worker inherits as descriptors, mapped by both sides (``ids_fd``,
``logits_fd``; files :data:`IDS_FILE`, :data:`LOGITS_FILE` where the OS cannot seal); the trained state
travels as :data:`STATE_FILE` (:mod:`benchmark.statefile`, no pickle). Training batches arrive one
at a time, at most two steps ahead of the step the worker reports, so training text the model has
not yet been trained on is never in the worker's reach.

Nothing a worker says is trusted to make a candidate pass: a worker can only hand over tensors
(logits, a state file) and declarations (``layer_top_k``, FLOP counts, losses), which the judge
checks against what it observes. A failure a worker reports is accepted (it can only hurt the
candidate that sent it).
"""

from __future__ import annotations

import dataclasses
import json
import re
from dataclasses import dataclass, field
from typing import Optional

IDS_FILE = "ids.bin"          # int64 (rows, T): the batch the judge asks for
LOGITS_FILE = "logits.bin"    # (rows, T, V) float32 or bfloat16: the worker's answer
STATE_FILE = "state.bin"      # the trained parameters and buffers
ROLES = ("train", "score")
OPS = ("forward", "count", "trial", "train", "batch", "save", "exit")
MODES = ("eval", "train")
LOGIT_DTYPES = {"float32": 4, "bfloat16": 2}


# Bounds of what a worker may say (its messages are hostile: bounded in size and depth).
MAX_DEPTH = 3          # nesting of a message: an object holding lists of scalars (2 is needed)
MAX_TOP_K = 64         # entries of a declared layer_top_k list
MAX_TOP_K_TEXT = 256   # characters of a declaration that is not a list of ints (the worker's repr)
INT64 = 1 << 63        # every int a worker sends fits in an int64


class ProtocolError(ValueError):
    """A malformed message: a bug on one side, or a worker writing garbage to its channel."""


_TOKENS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]')


def nesting_depth(text: str, limit: int) -> int:
    """How deep the arrays and objects of JSON `text` nest, counted up to `limit` + 1 (a scan
    that never recurses, so a line nested a million deep costs one pass, not a RecursionError)."""
    if text.count("[") + text.count("{") <= limit:
        return 0 if "[" not in text and "{" not in text else 1  # too few brackets to go deeper
    depth = deepest = 0
    for match in _TOKENS.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            if depth > deepest:
                deepest = depth
                if deepest > limit:
                    break
        elif token in "]}":
            depth -= 1
    return deepest


def loads_bounded(text, limit: int = MAX_DEPTH, what: str = "the message"):
    """json.loads of data a worker wrote: ProtocolError for anything that is not JSON or that nests
    deeper than `limit` (checked before parsing, so neither the parser nor anything that walks the
    result later recurses without bound)."""
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8", errors="replace")
    if nesting_depth(text, limit) > limit:
        raise ProtocolError(f"{what} nests arrays or objects deeper than {limit} levels")
    try:
        return json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise ProtocolError(f"{what} is not JSON: {text[:200]!r}") from exc


def plain_int(value) -> bool:
    """An int (not a bool) that fits in an int64."""
    return type(value) is int and -INT64 <= value < INT64


def valid_top_k(value) -> bool:
    """What a ``built`` message may declare as layer_top_k: None, an int, a short text (a
    worker's repr of anything else) or a list of at most MAX_TOP_K ints. Whether the declaration
    obeys the rules is the judge's budget verdict, not the protocol's."""
    if value is None or plain_int(value):
        return True
    if isinstance(value, str):
        return len(value) <= MAX_TOP_K_TEXT
    return isinstance(value, list) and len(value) <= MAX_TOP_K and all(plain_int(k) for k in value)


def _strict(cls, data: dict):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        names = sorted(str(name)[:40] for name in unknown)
        raise ProtocolError(f"{cls.__name__}: {len(names)} unknown fields {names[:10]}")
    try:
        return cls(**data)
    except TypeError as exc:
        raise ProtocolError(f"{cls.__name__}: {exc}") from exc


@dataclass(frozen=True)
class WorkerRequest:
    """What a worker is for. Sent once, as the first line of its standard input."""

    role: str                      # "train" or "score"
    candidate: str                 # the private copy of the candidate file
    workdir: str                   # the worker's private folder (the only one it may write)
    overrides: dict                # spec overrides (Spec().replace(**overrides))
    device: str                    # "cpu" or "cuda[:N]"
    precision: str                 # "bf16" or "fp32", resolved by the judge
    max_rows: int                  # rows the shared ids/logits memory holds
    ids_fd: int = -1               # the inherited descriptor of the ids memory (int64, max_rows x T)
    logits_fd: int = -1            # ... and of the logits memory (max_rows x T x V x 4 bytes)
    trusted: bool = False          # a benchmark-owned experiment model (imports the benchmark)
    threads: Optional[int] = None  # torch threads
    progress: bool = False         # a progress bar on stderr while training
    sandbox: bool = True           # restrict the worker's file system access (Landlock)
    read_paths: tuple = ()         # extra folders the sandbox lets it read (the Python install ...)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> "WorkerRequest":
        data = json.loads(text)
        data["read_paths"] = tuple(data.get("read_paths", ()))
        request = _strict(cls, data)
        if request.role not in ROLES:
            raise ProtocolError(f"unknown role {request.role!r}")
        return request


@dataclass(frozen=True)
class Op:
    """One thing the judge asks a running worker to do.

    forward  the logits of the ``rows`` windows in IDS_FILE, in ``mode`` and ``precision``, written
             to LOGITS_FILE; with ``dropout_seed`` the torch RNG is forked and seeded first (so a
             train-mode pass repeats its dropout masks exactly)
    count    FLOPs of one eval-mode forward of the first row of IDS_FILE (FlopCounterMode)
    trial    FLOPs of a training step on ``tokens`` (batch, T + 1) before training: two steps with a
             fresh optimizer, the second counted; the model's state is restored exactly afterwards
    train    the evaluator's training loop, ``steps`` optimizer steps (a ``step`` message each)
    batch    the next training batch: ``tokens``, (batch, T + 1) token ids; sent during ``train``;
             with ``count`` the step runs under FlopCounterMode (the judge picks it in secret)
    save     write the model's state dict to STATE_FILE
    exit     end the process
    """

    op: str
    id: int = 0
    rows: int = 0
    mode: str = "eval"
    precision: str = "fp32"
    dropout_seed: Optional[int] = None
    steps: int = 0
    tokens: Optional[list] = None
    count: bool = False

    def to_json(self) -> str:
        return json.dumps({k: v for k, v in dataclasses.asdict(self).items() if v is not None})

    @classmethod
    def from_json(cls, text: str) -> "Op":
        op = _strict(cls, json.loads(text))
        if op.op not in OPS or op.mode not in MODES:
            raise ProtocolError(f"bad op {op}")
        if op.op in ("batch", "trial") and not (isinstance(op.tokens, list) and op.tokens and all(
                isinstance(row, list) and row and all(type(t) is int for t in row) for row in op.tokens)):
            raise ProtocolError(f"a {op.op} op needs tokens: a non-empty list of lists of ints")
        return op


@dataclass
class Message:
    """A worker's line on its channel. ``type`` is one of:

    hello    the worker started (``sandbox``: what restricts it)
    built    the model is built (and, for the score role, its state loaded): ``layer_top_k``
    out      the answer to forward op ``id``: logits of ``shape`` and ``dtype`` are in LOGITS_FILE
    flops    the answer to count or trial: ``flops`` of the counted forward or training step
    step     training step ``step`` done (``loss``, and on the counted step ``flops``: its FLOPs)
    trained  the training loop ended after ``step`` steps
    saved    STATE_FILE is written
    failure  the candidate failed: ``stage``, ``error_type``, ``error``, ``traceback``
    compiling torch.compile is building code (a heartbeat, sent while it lasts, between the others)
    """

    type: str
    id: int = 0
    shape: list = field(default_factory=list)
    dtype: str = ""
    flops: Optional[int] = None
    step: Optional[int] = None
    loss: Optional[float] = None
    layer_top_k: Optional[object] = None
    sandbox: str = ""
    stage: str = ""
    error_type: str = ""
    error: str = ""
    traceback: str = ""

    def to_json(self) -> str:
        return json.dumps({k: v for k, v in dataclasses.asdict(self).items()
                           if v not in (None, "", [])}, allow_nan=True)

    @classmethod
    def from_json(cls, text: str) -> "Message":
        """The message on one channel line, checked against its schema (:data:`_MESSAGE_TYPES`,
        :data:`_MAX_CHARS`, :func:`valid_top_k`, ints within int64, at most MAX_DEPTH deep)."""
        data = loads_bounded(text)
        if not isinstance(data, dict):
            raise ProtocolError(f"not an object: {text[:200]!r}")
        message = _strict(cls, data)
        for name, kinds in _MESSAGE_TYPES.items():
            value = getattr(message, name)
            if not isinstance(value, kinds) or isinstance(value, bool) and bool not in kinds:
                raise ProtocolError(f"field {name!r} of a {message.type[:40]!r} message has the wrong type")
            if isinstance(value, int) and not isinstance(value, bool) and not plain_int(value):
                raise ProtocolError(f"field {name!r} of a {message.type[:40]!r} message is outside int64")
            if isinstance(value, str) and len(value) > _MAX_CHARS.get(name, len(value)):
                raise ProtocolError(f"field {name!r} of a {message.type[:40]!r} message has {len(value)} "
                                    f"characters, over {_MAX_CHARS[name]}")
        if len(message.shape) > 8 or not all(plain_int(n) for n in message.shape):
            raise ProtocolError("a shape must be at most 8 ints")
        if not valid_top_k(message.layer_top_k):
            raise ProtocolError(f"layer_top_k must be None, an int, a text of at most {MAX_TOP_K_TEXT} "
                                f"characters or a list of at most {MAX_TOP_K} ints; got "
                                f"{_describe(message.layer_top_k)}")
        return message


# The JSON types each Message field may have (layer_top_k: see valid_top_k) ...
_MESSAGE_TYPES = {"type": (str,), "id": (int,), "shape": (list,), "dtype": (str,), "flops": (int, type(None)),
                  "step": (int, type(None)), "loss": (float, int, type(None)), "sandbox": (str,),
                  "stage": (str,), "error_type": (str,), "error": (str,), "traceback": (str,)}
# ... and the longest text of the short ones (error and traceback are bounded by the line).
_MAX_CHARS = {"type": 64, "dtype": 64, "sandbox": 1000, "stage": 64, "error_type": 64}


def _describe(value) -> str:
    """A bounded description of a JSON value (never its repr, which may be huge)."""
    if isinstance(value, list):
        kinds = sorted({type(v).__name__ for v in value[:MAX_TOP_K + 1]})
        return f"a list of {len(value)} ({', '.join(kinds) or 'empty'})"
    if isinstance(value, str):
        return f"a text of {len(value)} characters"
    return f"a {type(value).__name__}" if not isinstance(value, int) else "an int outside int64"
