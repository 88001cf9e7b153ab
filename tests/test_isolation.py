"""A worker cannot outlive the evaluator (the judge side's imports: tests/test_trust_boundary.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

from tests.conftest import REPO


def _children(pid: int) -> list:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    stat = fh.read()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2:].split()[1]) == pid:
                out.append(int(entry))
    return out


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False


def test_worker_dies_with_its_parent(tmp_path):
    hang = tmp_path / "hang.py"
    hang.write_text("while True:\n    pass\n")
    parent = subprocess.Popen([sys.executable, str(REPO / "evaluator.py"), str(hang), "--quiet",
                               "--time-limit", "300"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    workers = []
    while not workers and time.monotonic() < deadline:
        workers = _children(parent.pid)
        time.sleep(0.2)
    assert workers, "no worker was started"
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 10
    while any(_alive(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not any(_alive(w) for w in workers), "the worker outlived the killed evaluator"
