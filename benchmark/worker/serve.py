"""One worker process: build the candidate's model, then do what the judge asks (Op lines).

The training worker trains the model with the evaluator's loop and saves its state; the scoring
worker builds a fresh model, loads that state strictly and answers forward requests. Both only
hand over tensors through files in their private folder; the judge computes everything else.
"""

from __future__ import annotations

import ctypes
import importlib.abc
import importlib.util
import logging
import mmap
import os
import reprlib
import sys
import threading
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from . import guard, rngs, sandbox
from .candidate import (MODULE_NAME, build, compile_failure, import_candidate, memory_message, out_of_memory,
                        raised_in_candidate, raised_in_evaluator, tail_traceback)
from .train import Runtime, counted_flops, forward_logits, make_optimizer, train, train_step
from .. import numerics, statefile
from ..protocol import (MAX_TOP_K_TEXT, STATE_FILE, Message, Op, ProtocolError,
                        WorkerRequest, valid_top_k)
from ..result import EvalFailure
from ..spec import Spec

log = logging.getLogger(__name__)


MIB = 1 << 20
INT_MAX = (1 << 31) - 1


def tune_allocator(largest_bytes: int = 0) -> None:
    """Keep freed memory in the process: glibc returning it to the OS costs a page fault per 4 KiB
    when it is next used. Measured: ~1/3 of a CPU training step, and ~0.3 s of each 0.8 GB
    validation batch's logits (the lm_head's output, allocated afresh each batch). Blocks up to
    `largest_bytes` (the biggest logits the worker hands over; at least 256 MiB) come from the
    heap and are reused; up to twice that stays mapped after a free."""
    mmap_threshold = min(INT_MAX, max(256 * MIB, largest_bytes + 64 * MIB))
    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.mallopt(-3, mmap_threshold)                            # M_MMAP_THRESHOLD
        libc.mallopt(-1, min(INT_MAX, max(1 << 30, 2 * mmap_threshold)))  # M_TRIM_THRESHOLD
    except (OSError, AttributeError):
        pass


def module_tensors(model: torch.nn.Module) -> list:
    """[(module, "_parameters" or "_buffers", name, tensor)] for every parameter and buffer, read
    from each module's own dictionaries (``vars``, never a method a subclass can override)."""
    out, seen, stack = [], set(), [model]
    while stack:
        module = stack.pop()
        if id(module) in seen:
            continue
        seen.add(id(module))
        attributes = vars(module)
        for table in ("_parameters", "_buffers"):
            for name, tensor in attributes.get(table, {}).items():
                if isinstance(tensor, torch.Tensor):
                    out.append((module, table, name, tensor))
        stack.extend(m for m in attributes.get("_modules", {}).values() if m is not None)
    return out


def snapshot(model: torch.nn.Module) -> tuple:
    """(:func:`module_tensors`, a copy of each) for :func:`restore`."""
    before = module_tensors(model)
    return before, [tensor.detach().clone() for *_, tensor in before]


def restore(before: list, saved: list) -> None:
    """Puts the same tensor objects back in their places with their saved values (and no grad)."""
    with torch.no_grad():
        for (module, table, name, tensor), copy in zip(before, saved):
            if tensor.shape == copy.shape and tensor.dtype == copy.dtype:
                tensor.detach().copy_(copy)
                tensor.grad = None
            else:  # resized through .data: the saved copy takes its place
                tensor = torch.nn.Parameter(copy, tensor.requires_grad) if table == "_parameters" else copy
            vars(module)[table][name] = tensor


class CompileBeat:
    """Heartbeats while torch.compile builds code. Inductor's first build of a model's forward and
    backward can be silent for minutes on a busy CPU, longer than the judge's heartbeat limit, so
    a daemon thread sends a "compiling" message every `interval` seconds while dynamo compiles a
    frame or a lazy backward (its public compile callbacks). Nothing is imported here: importing
    torch._dynamo takes seconds, which a model without torch.compile never pays; :meth:`watch`
    registers the callbacks once the candidate has imported it, between the judge's requests (so
    the first compile of a model that calls torch.compile only inside its forward goes unbeaten)."""

    def __init__(self, send: Callable[[Message], None], interval: float) -> None:
        self.send, self.interval = send, interval
        self.depth = 0
        self.watching = False
        threading.Thread(target=self._beat, name="plasa-compile-beat", daemon=True).start()

    def watch(self) -> None:
        if self.watching:
            return
        handler = getattr(sys.modules.get("torch._dynamo.callback"), "callback_handler", None)
        if handler is not None:
            handler.register_start_callback(self._started)
            handler.register_end_callback(self._ended)
            self.watching = True

    def _started(self, _args) -> None:
        self.depth += 1

    def _ended(self, _args) -> None:
        self.depth = max(0, self.depth - 1)

    def _beat(self) -> None:
        while True:
            time.sleep(self.interval)
            if self.depth > 0:
                try:
                    self.send(Message("compiling"))
                except (OSError, ValueError):  # the channel is closed: the worker is ending
                    return


def declared_top_k(top_k):
    """The model's layer_top_k as a ``built`` message may carry it (protocol.valid_top_k): None, an
    int, a list of ints, or else a short description the judge shows in its verdict."""
    top_k = list(top_k) if isinstance(top_k, (list, tuple)) else top_k
    if valid_top_k(top_k) and not isinstance(top_k, str):
        return top_k
    try:
        return reprlib.repr(top_k)[:MAX_TOP_K_TEXT]  # bounded in depth and length, unlike repr
    except Exception:  # noqa: BLE001 - the candidate's __repr__, or an int too long to print
        return f"<a {type(top_k).__name__}>"[:MAX_TOP_K_TEXT]


def eager_from_now() -> None:
    """From here on this process runs torch.compile'd code eagerly and compiles nothing (the
    compiled wrappers and their state-dict keys stay). Every process holding the trained state does
    (the scoring workers from their start, the training worker from its hand-over): there the judge
    allows forward passes only, and a compile's CPU time would be indistinguishable from training.
    The model must run uncompiled anyway (README "The contract")."""
    torch.compiler.set_stance("force_eager")


class _EagerOnImport(importlib.abc.MetaPathFinder):
    """Calls eager_from_now() the moment torch._dynamo has finished importing, for a scoring worker
    that did not import it (guard.arm): a model that reaches torch.compile under another name, even
    inside its first forward, then compiles nothing there, as before."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "torch._dynamo":
            return None
        sys.meta_path.remove(self)  # once, and find_spec below must not find us again
        spec = importlib.util.find_spec(fullname)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module

        def exec_module(module) -> None:
            run(module)
            eager_from_now()

        spec.loader.exec_module = exec_module
        return spec


def eager_once_imported() -> None:
    """eager_from_now() now if torch._dynamo is imported, else as soon as it is."""
    if "torch._dynamo" in sys.modules:
        eager_from_now()
    elif not any(isinstance(finder, _EagerOnImport) for finder in sys.meta_path):
        sys.meta_path.insert(0, _EagerOnImport())


class Worker:
    trained = False  # the training loop has run: the next save hands over the scored state

    def __init__(self, request: WorkerRequest, channel, ops) -> None:
        self.request, self.channel, self.ops = request, channel, ops
        self.spec = Spec().replace(**request.overrides)
        self.workdir = Path(request.workdir)
        self.stage = "setup"
        self.sending = threading.Lock()
        self.beat = CompileBeat(self.send, self.spec.compile_beat_s)

    def send(self, message: Message) -> None:
        with self.sending:  # the compile beat writes from its own thread
            self.channel.write(message.to_json() + "\n")
            self.channel.flush()

    def run(self) -> None:
        try:
            self.setup()
            self.load()
            for line in self.ops:
                op = Op.from_json(line)
                if op.op == "exit":
                    break
                self.beat.watch()
                self.handle(op)
        except EvalFailure as exc:
            self.send(Message("failure", stage=exc.stage if exc.stage != "forward" else self.stage,
                              error_type=exc.error_type, error=exc.message))
        except BaseException as exc:  # noqa: BLE001 - any exception becomes a failure message
            allocator = out_of_memory(exc) if self.stage != "setup" else None
            if allocator is not None:  # the model's allocation, wherever torch raised it
                self.send(Message("failure", stage=self.stage, error_type="memory_limit",
                                  error=memory_message(self.stage, allocator), traceback=tail_traceback(exc)))
                return
            compiled = compile_failure(exc)
            ours = self.stage == "setup" or (not compiled and not raised_in_candidate(exc, self.request.candidate)
                                             and raised_in_evaluator(exc))
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            what = (f"torch.compile failed during {self.stage}: {type(exc).__name__}: {first} (fix what the "
                    "compiler reports below, or compile less: a submodule, fullgraph=False; the model must "
                    f"also run uncompiled)\n{str(exc)[:3000]}" if compiled
                    else f"{type(exc).__name__} during {self.stage}: {exc}")
            self.send(Message("failure", stage=self.stage,
                              error_type="evaluator_error" if ours else "runtime_error",
                              error=what, traceback=tail_traceback(exc)))

    def setup(self) -> None:
        request = self.request
        guard.arm(request.role, Path(request.candidate).read_bytes())
        if request.threads:
            torch.set_num_threads(request.threads)
        tune_allocator(request.max_rows * self.spec.seq_len * self.spec.vocab_size * 4)
        self.numerics = numerics.apply(request.device)
        self.rt = Runtime(torch.device(request.device), request.precision)
        size = request.max_rows * self.spec.seq_len
        # the judge's memory for ids and logits, inherited as descriptors (sealed: fixed in size)
        ids = mmap.mmap(request.ids_fd, size * 8, access=mmap.ACCESS_READ)
        self.ids = np.frombuffer(ids, dtype=np.int64).reshape(request.max_rows, self.spec.seq_len)
        self.out_map = mmap.mmap(request.logits_fd, size * self.spec.vocab_size * 4)
        for fd in (request.ids_fd, request.logits_fd):
            os.close(fd)
        wall = (sandbox.restrict(str(self.workdir), request.read_paths, request.device) if request.sandbox
                else "none (disabled by the judge)")
        self.send(Message("hello", sandbox=wall))

    def load(self) -> None:
        spec, request = self.spec, self.request
        self.stage = "load"
        if request.role == "score":
            eager_once_imported()
        guard.seed_everything(spec.seed)
        self.module = import_candidate(request.candidate)
        self.stage = "build"
        self.config = spec.model_config()
        guard.seed_everything(spec.seed)
        self.model = build(self.module, self.config).to(self.rt.device)
        guard.verify("build")
        numerics.apply(request.device)  # whatever the candidate set at import or build
        if request.role == "score":
            self.load_state()
        self.send(Message("built", layer_top_k=declared_top_k(getattr(self.model, "layer_top_k", None))))

    def load_state(self) -> None:
        self.stage = "load_state"
        try:
            state = statefile.read(self.workdir / STATE_FILE, max_bytes=self.spec.max_state_bytes)
            self.model.load_state_dict(state, strict=True)
        except (statefile.StateFileError, RuntimeError) as exc:
            raise EvalFailure("load_state", "state_mismatch",
                              "the freshly built model does not load the trained state strictly "
                              f"({str(exc)[:500]}); build_model must build the same parameters and "
                              "buffers every time, and every trained tensor must be in state_dict()") from exc

    def handle(self, op: Op) -> None:
        if op.op == "forward":
            self.stage = "probe" if self.request.role == "train" else "validate"
            self.forward(op)
        elif op.op == "count":
            self.stage = "budget"
            x = torch.from_numpy(np.array(self.ids[:1])).to(self.rt.device)
            self.model.eval()
            kept = snapshot(self.model)  # the counted forward, like every forward here, changes nothing
            _, flops = counted_flops(lambda: forward_logits(self.model, x, Runtime(self.rt.device, "fp32"),
                                                            self.spec.vocab_size, "budget"))
            restore(*kept)
            self.send(Message("flops", id=op.id, flops=flops))
        elif op.op == "trial" and self.request.role == "train":
            self.stage = "budget"
            self.send(Message("flops", id=op.id, flops=self.trial_step(op.tokens)))
        elif op.op == "train" and self.request.role == "train":
            self.train(op.steps)
        elif op.op == "save":
            self.stage = "save"
            statefile.write(self.workdir / STATE_FILE, self.model.state_dict())
            if self.trained:  # the scored state is handed over: forward passes only from here
                eager_from_now()
            self.send(Message("saved", id=op.id))
        else:
            raise ProtocolError(f"a {self.request.role} worker got op {op.op!r}")

    def forward(self, op: Op) -> None:
        x = torch.from_numpy(np.array(self.ids[:op.rows])).to(self.rt.device)
        self.model.train(op.mode == "train")
        rt = Runtime(self.rt.device, op.precision)
        run: Callable[[], torch.Tensor] = lambda: forward_logits(  # noqa: E731
            self.model, x, rt, self.spec.vocab_size, self.stage, grad=op.mode == "train")
        # a train-mode probe leaves the model as it found it: a buffer an honest model advances in
        # a train-mode forward (a step counter behind its own schedule, running statistics) would
        # otherwise differ between the two forwards a probe compares, and in what comes after. In
        # the training worker every forward does: a model that trained inside its first untrained
        # probe forward kept that training (red-team pretrain_in_untrained_probes, 2.9x the score)
        kept = snapshot(self.model) if op.mode == "train" or self.request.role == "train" else None
        if op.dropout_seed is not None:
            # both forwards of a probe draw the same masks: the global RNG seeded alike, and the
            # model's own generators (dropout from its own torch.Generator) from where they stand
            devices = [self.rt.device] if self.rt.device.type == "cuda" else []
            with guard.fork_rng(devices=devices), rngs.forked(self.own_generators()):
                guard.manual_seed(op.dropout_seed)
                logits = run()
        else:
            logits = run()
        logits = logits.detach()
        if kept is not None:
            restore(*kept)
        if logits.dtype not in (torch.float32, torch.bfloat16):
            logits = logits.float()
        dtype = "bfloat16" if logits.dtype == torch.bfloat16 else "float32"
        out = torch.frombuffer(self.out_map, dtype=logits.dtype, count=logits.numel())
        out.copy_(logits.reshape(-1))
        self.send(Message("out", id=op.id, shape=list(logits.shape), dtype=dtype))

    def own_generators(self) -> list:
        """The torch.Generator objects the model and the candidate module hold (:mod:`.rngs`)."""
        return rngs.find((self.model, self.module), MODULE_NAME)

    def next_batch(self, step: int) -> tuple:
        """The judge's batch for `step` (it sends each one when the step two before it is done),
        and whether to count the step's FLOPs."""
        op = Op.from_json(next(self.ops))
        self.beat.watch()
        if op.op != "batch":
            raise ProtocolError(f"the judge sent {op.op!r} where step {step}'s batch was due")
        return torch.tensor(op.tokens, dtype=torch.long), op.count

    def trial_step(self, tokens: list) -> int:
        """FLOPs of a training step as the loop runs it, with a throwaway optimizer: two steps, the
        second counted (an optimizer's first step may do one-off work). The model's parameters and
        buffers are put back bit for bit and the RNG (its own generators too) restored, so training
        starts from the same untrained model. The tensors are found in the modules' own dictionaries
        (:func:`module_tensors`), never through a method the candidate may override (a
        state_dict(keep_vars=True) that returned copies made the restore write into the copies: the
        model kept 50 extra passes of the trial's first step)."""
        model = self.model
        before, saved = snapshot(model)
        optimizer, scheduler = make_optimizer(model, self.module, self.spec, self.config)
        params = [p for p in model.parameters() if p.requires_grad]
        window = torch.tensor(tokens, dtype=torch.long)
        devices = [self.rt.device] if self.rt.device.type == "cuda" else []
        model.train()
        step = lambda first: train_step(model, optimizer, scheduler, window, self.spec, self.rt,  # noqa: E731
                                        params, first)
        with guard.fork_rng(devices=devices), rngs.forked(self.own_generators()):
            step(True)
            _, flops = counted_flops(lambda: step(False))
        restore(before, saved)
        return flops

    def train(self, steps: int) -> None:
        spec = self.spec
        self.stage = "train"
        guard.seed_everything(spec.seed)
        optimizer, scheduler = make_optimizer(self.model, self.module, spec, self.config)
        guard.verify("optimizer")

        def on_step(step: int, loss: float, flops) -> None:
            self.send(Message("step", step=step, loss=loss, flops=flops))

        steps = train(self.model, optimizer, scheduler, steps, self.next_batch, spec, self.rt, on_step,
                      progress=self.request.progress)
        guard.verify("train")
        self.trained = True
        self.send(Message("trained", step=steps))
