"""Compile beats are not a licence: the judge's bounds on the silence a worker buys with them.

While torch.compile builds code, a worker sends a "compiling" message every spec.compile_beat_s
(benchmark/worker/serve.py, CompileBeat), and the judge waits on past its heartbeat limit. Those
lines come from the worker's process, so a candidate can write them too (a red-team model sent 18
million and trained on in the silence they bought). So, for every wait for one reply:

- beats keep the wait alive at most spec.compile_wait_s past the heartbeat limit;
- over the evaluation, waits go past their heartbeat limits by at most spec.compile_total_s in all;
- a worker that sends more beats than 2 x time_limit_s / compile_beat_s in an evaluation (twice
  what an honest one could, one per beat interval for the whole wall-clock limit) floods the
  channel: protocol_error.

Past either time bound the worker is a hang, beats or not.
"""

from __future__ import annotations

import math
import time


class BeatFlood(Exception):
    """More compile beats than any honest compile could send."""


class Beats:
    """The compile beats of one evaluation (all its workers)."""

    def __init__(self, spec) -> None:
        self.spec = spec
        self.count = 0          # beats received
        self.bought_s = 0.0     # seconds waits ran past their heartbeat limits
        self.max_count = math.ceil(2 * spec.time_limit_s / spec.compile_beat_s)

    def wait(self, heartbeat_s: float) -> "Wait":
        return Wait(self, heartbeat_s)


class Wait:
    """One wait for a reply: :meth:`timeout` before each receive, :meth:`beat` for each beat,
    :meth:`done` when the reply came."""

    def __init__(self, beats: Beats, heartbeat_s: float) -> None:
        self.beats, self.heartbeat_s = beats, heartbeat_s
        self.start = self.last = time.monotonic()
        self.count = 0

    def timeout(self) -> tuple:
        """(seconds to wait for the next message, the hang's message should none come)."""
        spec, now = self.beats.spec, time.monotonic()
        if not self.count:
            return self.heartbeat_s, None
        # a beat restarts the heartbeat limit, up to the wait's and the evaluation's bounds
        here, left = spec.compile_wait_s, spec.compile_total_s - self.beats.bought_s
        bound = self.start + self.heartbeat_s + min(here, left)
        if self.last + self.heartbeat_s <= bound:
            return max(self.last + self.heartbeat_s - now, 0.0), None
        if here <= left:
            why = (f"the worker sent compile beats for {now - self.start:.0f} s without a reply: beats keep a wait "
                   f"alive at most {here:g} s past the {self.heartbeat_s:.0f} s heartbeat limit "
                   "(spec.compile_wait_s: a compile that long, or work hidden behind beats)")
        else:
            why = (f"the worker's compile beats kept waits alive past their heartbeat limits for "
                   f"{spec.compile_total_s:g} s in this evaluation (spec.compile_total_s)")
        return max(bound - now, 0.0), why

    def beat(self) -> None:
        self.count += 1
        self.last = time.monotonic()
        self.beats.count += 1
        if self.beats.count > self.beats.max_count:
            raise BeatFlood(f"the worker sent over {self.beats.max_count} 'compiling' messages, more than one per "
                            f"{self.beats.spec.compile_beat_s:g} s over the whole {self.beats.spec.time_limit_s:g} s "
                            "limit twice over: only the evaluator's compile beat may send them")

    def done(self) -> None:
        self.beats.bought_s += max(0.0, time.monotonic() - self.start - self.heartbeat_s)
