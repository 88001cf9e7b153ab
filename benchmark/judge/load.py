"""Whether the machine was quiet while the judge measured it (its threads and precision, its
matmul peak): a measurement taken under load is recorded but never kept.

Two signals. Other processes' CPU use over the measurement (:class:`Watch`: psutil's busy time of
the CPUs this process may run on, less this process's own; portable, no /proc needed): above
``LOAD_FRACTION`` of those cores, and at least ``MIN_LOAD_CORES``, the machine was loaded. And the
spread between repeats of one measurement (:func:`spread`): over ``MAX_SPREAD``, something took the
cores in bursts the average hides. Threads of the judge's own process (another evaluation run in a
thread beside this one) count as its own; their workers count as others.
"""

from __future__ import annotations

import os
import statistics
import time
from typing import Callable, Optional

import psutil

LOAD_FRACTION = 0.10     # other processes using more than this share of the cores while measuring ...
MIN_LOAD_CORES = 0.5     # ... and more than half a core: a loaded machine
MAX_SPREAD = 0.25        # repeats further apart than this (the slowest but one against the fastest,
                         # over the median; one stray repeat is forgiven): a loaded machine
RETRY_S = 600            # after a loaded measurement, later ones are not taken for this long
WAIT_WATCH_S = 0.2       # how long an evaluation watches the machine before choosing its wait policy


def cpus() -> list:
    """The CPUs this process may run on (all where the platform cannot say)."""
    count = psutil.cpu_count() or 1
    try:
        return [c for c in psutil.Process().cpu_affinity() if c < count] or list(range(count))
    except (AttributeError, psutil.Error, OSError):  # macOS has no affinity
        return list(range(count))


def other_cpu_s() -> float:
    """CPU seconds the machine's other processes have used so far on the CPUs this process may
    run on: psutil's busy time of those CPUs, less this process's own."""
    per_cpu = psutil.cpu_times(percpu=True)
    busy = 0.0
    for index in cpus():
        if index < len(per_cpu):
            t = per_cpu[index]._asdict()
            # guest time is already inside user and nice (Linux); idle and iowait are not busy
            busy += sum(t.values()) - sum(t.get(k, 0.0) for k in ("idle", "iowait", "guest", "guest_nice"))
    own = psutil.Process().cpu_times()
    return busy - own.user - own.system


def limit() -> float:
    """Cores the other processes may use while the judge measures: above it, the machine is loaded."""
    return max(MIN_LOAD_CORES, LOAD_FRACTION * len(cpus()))


def spread(times: list) -> float:
    """How far apart repeats lie: (the slowest but one - the fastest) / median; 0 for one."""
    if len(times) < 2:
        return 0.0
    ordered = sorted(times)
    return (ordered[-2] - ordered[0]) / max(statistics.median(ordered), 1e-12)


class Watch:
    """Other processes' CPU use, in cores, over a block: ``with Watch(others) as w: ...; w.cores``.
    `others` is :func:`other_cpu_s` or a stand-in (tests)."""

    def __init__(self, others: Optional[Callable[[], float]] = None) -> None:
        self.others = others or other_cpu_s
        self.cores = 0.0

    def __enter__(self) -> "Watch":
        self._start, self._t0 = self.others(), time.perf_counter()
        return self

    def __exit__(self, *exc) -> None:
        wall = max(time.perf_counter() - self._t0, 1e-6)
        self.cores = max(0.0, self.others() - self._start) / wall


def verdict(watch: Watch, spreads: list) -> dict:
    """{"other_cores", "spread" (the worst of `spreads`), "loaded", "why"} of a watched measurement."""
    worst = max(spreads, default=0.0)
    loaded = watch.cores > limit() or worst > MAX_SPREAD
    why = []
    if watch.cores > limit():
        why.append(f"other processes used {watch.cores:.2f} cores (limit {limit():.2f})")
    if worst > MAX_SPREAD:
        why.append(f"repeats {worst:.0%} apart (limit {MAX_SPREAD:.0%})")
    return {"other_cores": round(watch.cores, 3), "spread": round(worst, 3), "loaded": loaded,
            "why": "; ".join(why) or None}


def wait_policy(others: Optional[Callable[[], float]] = None, watch_s: float = WAIT_WATCH_S) -> dict:
    """OpenMP's wait policy for the CPU workers of an evaluation starting now, and why.

    By default OpenMP threads spin at every barrier: fastest on a quiet machine, but beside other
    busy processes a spinning thread burns the core its partner needs, and that CPU time is charged
    to the candidate. Measured on the 2-core EPYC (the reference, 100 steps, bf16, one run each): a
    step took 136 ms of wall and 263 ms of CPU quiet, 418 and 558 ms beside two busy processes;
    with OMP_WAIT_POLICY=PASSIVE 180 and 224 ms quiet, 174 and 183 ms loaded. So the workers wait
    passively when other processes load the machine as the evaluation starts, and spin otherwise.
    An OMP_WAIT_POLICY the judge was started with is kept. Returns {"omp_wait_policy": the value
    for the workers (None: OpenMP's default), "other_cores": what the watch saw (None: not watched)}.
    """
    if os.environ.get("OMP_WAIT_POLICY"):
        return {"omp_wait_policy": os.environ["OMP_WAIT_POLICY"], "other_cores": None}
    with Watch(others) as watch:
        time.sleep(watch_s)
    return {"omp_wait_policy": "PASSIVE" if watch.cores > limit() else None, "other_cores": round(watch.cores, 3)}


class Others:
    """Other processes' CPU use beside one evaluation's workers, between two readings: the busy time
    of this process's CPUs, less the judge's own and (`own`) its workers' CPU seconds so far.
    A reading is (wall seconds, others' CPU seconds); :meth:`cores` turns two into cores."""

    def __init__(self, own: Callable[[], float], others: Optional[Callable[[], float]] = None) -> None:
        self.own, self.others = own, others or other_cpu_s

    def reading(self) -> tuple:
        return time.perf_counter(), self.others() - self.own()

    def cores(self, since: tuple) -> float:
        now = self.reading()
        return max(0.0, now[1] - since[1]) / max(now[0] - since[0], 1e-6)
