"""Every worker's CPU time, metered from its start to its last reply, window by window.

The judge reads a worker's CPU time from outside it (its cgroup, else its process tree:
``WorkerProcess.cpu_s``) when a message arrives, and splits the worker's life into contiguous
windows, each holding the work the judge asked of the worker there (:class:`budget.Work`). A
window's CPU seconds are checked against :func:`budget.cpu_allowance` of its work when it closes,
and, in a window opened with ``prefix``, at every request answered in it: work done early in a
window (training at the first forward after the hand-over, before any answer) is caught at that
answer, not averaged over the rest.

    training worker  before_training  start .. train request  start-up, compile, the count, trial and
                                                              untrained probes: on random tokens, no text
                     training         .. last step            steps 0 .. N-1 (a counted one as
                                                              counted_step_allowance), judged at each step
                     hand_over        .. saved                the state written, nothing else
                     after_hand_over  .. last reply           forward passes only (replay, canaries,
                                                              trained probes), compiled code run eagerly
    scoring worker   scoring          start .. last reply     start-up, the state's load, forward passes
                                                              only (replay, validation, probes, canaries)
"""

from __future__ import annotations

from typing import Callable, Optional

from . import budget
from .budget import Work

# What a window over its allowance means, and what to change (the verdict's second half).
FIX = {
    "before_training": "far more work before training than start-up, torch.compile's first builds, the "
                       "trial step and the probe forwards need",
    "training": "the training steps did far more work than their counted FLOPs (work hidden from the FLOP "
                "counter, in a counted step or between steps)",
    "hand_over": "work between the last training step and the state's hand-over (training on after the last "
                 "step, or a rewritten worker function): hand the state over as training left it",
    "after_hand_over": "work beyond the forward passes asked for after the state was handed over (training "
                       "on): every process that holds the trained state may only run forward passes",
    "scoring": "the scoring process did more than load the state and run the forward passes asked of it "
               "(training or other work while it is scored)",
}


class Meter:
    """One worker's CPU windows. `verdict` receives each check (it records it and stops the run on
    a failure); `flops` gives the (step, forward token) FLOPs counted so far (None: not yet);
    `floor` gives, for the load reading taken as a window opened, the lower :class:`budget.Floor`
    a window over the strict one is judged at instead (None: the strict floor stands)."""

    def __init__(self, worker, who: str, check_name: str, spec, rate: float,
                 verdict: Callable[[dict], None], flops: Callable[[], tuple],
                 load: Callable[[], object] = lambda: None,
                 floor: Callable[[object], Optional[budget.Floor]] = lambda since: None) -> None:
        self.worker, self.who, self.check_name = worker, who, check_name
        self.spec, self.rate, self.verdict, self.flops = spec, rate, verdict, flops
        self.load, self.floor = load, floor
        self.windows: dict = {}   # label -> {"used_s", "allowed_s"} of each closed window
        self.label: Optional[str] = None
        self.start, self.work, self.prefix, self.since = 0.0, Work(), False, None

    def open(self, label: str, fixed_s: float = 0.0, prefix: bool = False, start: Optional[float] = None) -> None:
        """A new window from `start` CPU seconds (the last reading; 0: the process's start)."""
        self.label, self.work, self.prefix = label, Work(fixed_s=fixed_s), prefix
        self.start = self.worker.cpu_s() if start is None else start
        self.since = self.load()

    def add(self, steps: float = 0, tokens: int = 0) -> None:
        """Work the judge asks for in the current window (before its answer arrives)."""
        self.work = self.work + Work(steps=steps, forward_tokens=tokens)

    def answered(self) -> None:
        """A request of the current window was answered: in a prefix window, check it now."""
        if self.prefix:
            check = self._check(self.worker.cpu_s())[0]
            if not check["passed"]:
                self.verdict(check)

    def close(self) -> float:
        """Ends the current window with its verdict; returns the reading (the next window's start)."""
        reading = self.worker.cpu_s()
        check, floor = self._check(reading)
        step, token = self.flops()
        self.windows[self.label] = {
            "used_s": round(reading - self.start, 3),
            "allowed_s": round(budget.cpu_allowance(self.work, step, token, self.rate, self.spec, floor), 3)}
        self.verdict(check)
        return reading

    def _check(self, reading: float) -> tuple:
        """(the window's verdict so far, the floor it was judged at): the strict floor first, and
        only a window over it is judged again at the lower floor its load may grant."""
        step, token = self.flops()
        name = self.check_name if self.label == "scoring" else f"{self.check_name}:{self.label}"
        judge = lambda floor: budget.window_check(  # noqa: E731
            name, f"{self.who}, {self.label.replace('_', ' ')}", reading - self.start, self.work, step, token,
            self.rate, self.spec, FIX[self.label], floor)
        return budget.strict_then_lenient(judge, lambda: self.floor(self.since))
