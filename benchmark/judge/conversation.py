"""The judge's conversation with its workers: spawn one, start it on its request, expect its next
message (heartbeats and compile beats within their bounds), and run a forward pass through the
shared memory. :class:`benchmark.judge.evaluation.Evaluation` holds the state it works on; the
verdicts live there, this module only talks.
"""

from __future__ import annotations

import shutil
from typing import Optional

import numpy as np
import torch

from . import probes
from .beats import BeatFlood
from .launch import WorkerGone, WorkerProcess, read_paths
from .scoring import Exchange
from ..protocol import Message, Op, WorkerRequest
from ..result import EvalFailure


class WorkerConversation:
    """Spawning, starting and talking to the workers of one evaluation. Uses the evaluation's
    spec, run_dir, deadline, memory_limit_mb, threads, echo, progress, worker_env, worker_device,
    precision, candidate, overrides, trusted, sandbox, max_rows and stage; keeps workers,
    exchanges, worker_fds, spawned, beats, meters, log_tail and result["compile_beats"]."""

    def spawn(self, name: str) -> WorkerProcess:
        """Starts a worker process `name` in its own private folder. It imports torch and waits:
        no candidate code runs in it before start() sends its request."""
        workdir = self.run_dir / name
        workdir.mkdir(mode=0o700, exist_ok=True)
        spec = self.spec  # the shared ids and logits memory is handed over at birth, as descriptors
        exchange = self.exchanges[name] = Exchange(workdir, self.max_rows, spec.seq_len, spec.vocab_size)
        self.workers[name] = WorkerProcess(workdir, self.deadline, self.memory_limit_mb, self.threads,
                                           echo=self.echo if self.progress else None,
                                           extra_env=self.worker_env, output_limit=spec.output_limit_bytes,
                                           pass_fds=exchange.fds)
        self.worker_fds[name] = exchange.fds
        exchange.handed_over()
        self.spawned.append(self.workers[name])
        return self.workers[name]

    def worker_output(self) -> dict:
        """What the workers wrote to their stdout and stderr, summed: bytes, forwarded_bytes (to the
        echo) and dropped_bytes (past spec.output_limit_bytes each, read and thrown away)."""
        total = {"bytes": 0, "forwarded_bytes": 0, "dropped_bytes": 0}
        for worker in self.spawned:
            for key, n in worker.logs.counts().items():
                total[key] += n
        return total

    def start(self, name: str, role: str) -> tuple:
        worker = self.workers.get(name) or self.spawn(name)
        workdir = self.run_dir / name
        exchange = self.exchanges.pop(name)
        ids_fd, logits_fd = self.worker_fds.pop(name)
        shutil.copyfile(self.candidate, workdir / "candidate.py")
        worker.start(WorkerRequest(
            role=role, candidate=str(workdir / "candidate.py"), workdir=str(workdir), overrides=self.overrides,
            device=self.worker_device, precision=self.precision, max_rows=self.max_rows, ids_fd=ids_fd,
            logits_fd=logits_fd, trusted=self.trusted,
            threads=self.threads, progress=self.progress and role == "train", sandbox=self.sandbox,
            read_paths=read_paths(self.trusted)))
        return worker, exchange

    def expect(self, worker: WorkerProcess, kind: str, heartbeat_s: Optional[float] = None) -> Message:
        """The worker's next message, which must be `kind`; failures become EvalFailure. A
        "compiling" message (torch.compile at work) is a heartbeat: the wait goes on, within the
        bounds of benchmark/judge/beats.py."""
        wait = self.beats.wait(heartbeat_s or self.spec.heartbeat_s)
        while True:
            timeout, why = wait.timeout()
            try:
                message = worker.recv(max(timeout, 1e-3))
            except WorkerGone as exc:
                self.log_tail = worker.logs.tail
                text = why if why and exc.error_type == "hang" else exc.message
                raise EvalFailure(self.stage, exc.error_type, text) from exc
            if message.type != "compiling":
                break
            try:
                wait.beat()
            except BeatFlood as exc:
                raise EvalFailure(self.stage, "protocol_error", str(exc)) from exc
            finally:
                self.result["compile_beats"] = self.beats.count
        wait.done()
        if message.type == "failure":
            self.log_tail = worker.logs.tail
            error = EvalFailure(message.stage or self.stage, message.error_type or "runtime_error",
                                message.error or "the worker reported a failure")
            error.traceback = message.traceback
            raise error
        if message.type != kind:
            raise EvalFailure(self.stage, "protocol_error",
                              f"the worker sent '{message.type}' where the judge expected '{kind}'")
        return message

    def forward(self, worker: WorkerProcess, exchange: Exchange, x: np.ndarray, mode: str,
                precision: str, dropout_seed: Optional[int] = None,
                heartbeat_s: Optional[float] = None) -> torch.Tensor:
        exchange.put(x)
        meter = self.meters.get(worker)
        if meter is not None:
            meter.add(tokens=x.shape[0] * x.shape[1])
        worker.send(Op("forward", rows=len(x), mode=mode, precision=precision, dropout_seed=dropout_seed))
        message = self.expect(worker, "out", heartbeat_s)
        if meter is not None:
            meter.answered()
        try:
            logits = exchange.logits(message, len(x))
        except ValueError as exc:
            raise EvalFailure(self.stage, "bad_output_shape", str(exc)) from exc
        if self.stage != "validate" and not probes.all_finite(logits):
            raise EvalFailure(self.stage, "non_finite_logits", "the model produced NaN/Inf logits")
        return logits

