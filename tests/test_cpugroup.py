"""CPU time a worker's forked children spend is counted even when the kernel reaps them itself
(SIGCHLD ignored), which /proc cannot see: a red-team candidate hid 24 extra training passes a
step that way."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from benchmark.judge.cpugroup import CpuGroup
from tests.adversarial.cheats import REFERENCE
from tests.conftest import evaluate_tiny

# A parent that ignores SIGCHLD, forks a child burning 1 s of CPU, and waits for its word on a pipe
# (not for the child itself, which the kernel reaps).
HIDDEN_CHILD = """
import os, signal, time
signal.signal(signal.SIGCHLD, signal.SIG_IGN)
r, w = os.pipe()
if os.fork() == 0:
    end = time.process_time() + 1.0
    while time.process_time() < end:
        pass
    os.write(w, b"x")
    os._exit(0)
os.close(w)
os.read(r, 1)
"""


@pytest.fixture
def group():
    made = CpuGroup.create()
    if made is None:
        pytest.skip("no writable cgroup hierarchy on this machine (the judge reads /proc instead)")
    yield made
    made.remove()


def test_a_child_the_kernel_reaps_is_counted_in_the_group_not_in_proc(group):
    proc = subprocess.Popen([sys.executable, "-c", HIDDEN_CHILD], preexec_fn=group.join)
    assert group.holds(proc.pid)
    _, status, rusage = os.wait4(proc.pid, 0)
    assert status == 0
    # what /proc and wait() can know: the parent's own time and its waited-for children's
    assert rusage.ru_utime + rusage.ru_stime < 0.5
    assert group.cpu_s() >= 0.95


def test_groups_are_removed_once_empty_and_stale_ones_swept(group, tmp_path):
    root = tmp_path / "hierarchy"
    root.mkdir()
    (root / "cgroup.controllers").write_text("")
    stale = root / "plasa-999999999-0-x"  # a judge that no longer runs
    stale.mkdir()
    mine = root / f"plasa-{os.getpid()}-0-y"
    mine.mkdir()
    CpuGroup.create(roots=((str(root), 2),))  # cannot make a real group in a plain folder
    assert not stale.exists() and mine.exists()
    proc = subprocess.Popen([sys.executable, "-c", "pass"], preexec_fn=group.join)
    proc.wait()
    group.remove()
    assert not os.path.exists(group.path)


SPINNING_CHILD = """

_os = torch.os
_signal = torch.utils.data._utils.signal_handling.signal


class SpinningAdamW(torch.optim.AdamW):
    \"\"\"Each step forks a child that burns 1.5 s of CPU (standing in for extra training passes,
    whose weights a real attack pipes back) and waits for its word on a pipe; the kernel reaps the
    child unseen.\"\"\"

    def __init__(self, model):
        super().__init__(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1)
        _signal.signal(_signal.SIGCHLD, _signal.SIG_IGN)

    def step(self, closure=None):
        super().step()
        r, w = _os.pipe()
        if _os.fork() == 0:
            end = sum(_os.times()[:2]) + 1.5
            while sum(_os.times()[:2]) < end:
                pass
            _os.write(w, b"x")
            _os._exit(0)
        _os.close(w)
        _os.read(r, 1)
        _os.close(r)


def configure_optimizer(model, config):
    return SpinningAdamW(model)
"""


@pytest.mark.evaluation
def test_work_in_children_the_kernel_reaps_counts_as_the_workers_cpu_time(tmp_path):
    """The judge's CPU time per step (what cpu_budget bounds) includes 1.5 s a step spent in a
    forked child the kernel reaps itself; /proc saw only the parent's ~0.3 s. The CPU floor is
    lowered here (the strict one stops this run at its first steps), so the run reaches the end
    and reports its CPU time per step."""
    probe = CpuGroup.create()
    if probe is None:
        pytest.skip("no writable cgroup hierarchy on this machine")
    probe.remove()
    path = tmp_path / "spinning_child.py"
    path.write_text(REFERENCE.read_text() + SPINNING_CHILD)
    result = evaluate_tiny(path, {"steps": 6, "min_cpu_efficiency": 0.02})
    assert "CPU time from its own cgroup" in result["sandbox"], result["sandbox"]
    assert result["timings"]["cpu_ms_per_step"] >= 1500, result["timings"]
