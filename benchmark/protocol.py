"""The typed messages across the trust boundary between the judge and a worker. Standard library.

The judge (``benchmark.judge``) starts a worker (``python -m benchmark.worker FD``) with one
:class:`WorkerRequest` on its standard input, then drives it with :class:`Op` lines on the same
pipe. The worker answers with JSON lines on file descriptor FD (every line is also a heartbeat).
Tensors never travel on the pipes: input ids and logits go through two files in the worker's
private folder, mapped by both sides (:data:`IDS_FILE`, :data:`LOGITS_FILE`); the trained state
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
from dataclasses import dataclass, field
from typing import Optional

IDS_FILE = "ids.bin"          # int64 (rows, T): the batch the judge asks for
LOGITS_FILE = "logits.bin"    # (rows, T, V) float32 or bfloat16: the worker's answer
STATE_FILE = "state.bin"      # the trained parameters and buffers
ROLES = ("train", "score")
OPS = ("forward", "count", "trial", "train", "batch", "save", "exit")
MODES = ("eval", "train")
LOGIT_DTYPES = {"float32": 4, "bfloat16": 2}


class ProtocolError(ValueError):
    """A malformed message: a bug on one side, or a worker writing garbage to its channel."""


def _strict(cls, data: dict):
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ProtocolError(f"{cls.__name__}: unknown fields {sorted(unknown)}")
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
    max_rows: int                  # rows the shared ids/logits files hold
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
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ProtocolError(f"not JSON: {text[:200]!r}") from exc
        if not isinstance(data, dict):
            raise ProtocolError(f"not an object: {text[:200]!r}")
        message = _strict(cls, data)
        for name, kinds in _MESSAGE_TYPES.items():
            value = getattr(message, name)
            if not isinstance(value, kinds) or isinstance(value, bool) and bool not in kinds:
                raise ProtocolError(f"field {name!r} of a {message.type!r} message has the wrong type")
        if not all(isinstance(n, int) and not isinstance(n, bool) for n in message.shape):
            raise ProtocolError("a shape holds something other than ints")
        return message


# The JSON types each Message field may have (layer_top_k is a free-form declaration).
_MESSAGE_TYPES = {"type": (str,), "id": (int,), "shape": (list,), "dtype": (str,), "flops": (int, type(None)),
                  "step": (int, type(None)), "loss": (float, int, type(None)), "sandbox": (str,),
                  "stage": (str,), "error_type": (str,), "error": (str,), "traceback": (str,)}
