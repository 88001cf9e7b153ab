"""The evaluator on a host without /proc, Landlock, namespaces or cgroups (macOS, a locked-down
container), run on Linux by switching each off: process trees, resident memory and CPU time come
from psutil; the result's `sandbox` says what was not enforced, and the judge warns once."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import types

import psutil
import pytest

from benchmark import host
from benchmark.judge import launch
from tests.conftest import REPO, TINY, tiny_probe_env

TREE = """
import os, sys, time
if os.fork() == 0:          # a helper that leaves the session and burns CPU
    os.setsid()
    end = time.process_time() + 0.6
    while time.process_time() < end:
        pass
    open(sys.argv[1], "w").write(str(os.getpid()))
    time.sleep(60)
time.sleep(60)
"""


def _no_proc(path):
    if str(path) == "/proc" or str(path).startswith("/proc/"):
        raise FileNotFoundError(2, "no /proc on this host", str(path))


@pytest.fixture
def no_proc_for_the_judge(monkeypatch):
    """launch.py's own open and os.scandir refuse /proc (psutil keeps its own platform layer)."""
    real_open = open

    def opener(path, *args, **kwargs):
        _no_proc(path)
        return real_open(path, *args, **kwargs)

    def scandir(path="."):
        _no_proc(path)
        return os.scandir(path)

    monkeypatch.setattr(launch, "open", opener, raising=False)
    names = {k: getattr(os, k) for k in dir(os) if not k.startswith("__")}
    monkeypatch.setattr(launch, "os", types.SimpleNamespace(**dict(names, scandir=scandir)))


def test_the_process_tree_memory_and_cpu_time_without_proc(tmp_path, no_proc_for_the_judge):
    marker = tmp_path / "helper"
    script = tmp_path / "tree.py"
    script.write_text(TREE)
    proc = subprocess.Popen([sys.executable, str(script), str(marker)], start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not (marker.exists() and marker.read_text()) and time.monotonic() < deadline:
            time.sleep(0.05)
        helper = int(marker.read_text())
        # a number tracked before, now held by a process that is not the one tracked, is dropped
        stale = {os.getppid(): psutil.Process(os.getpid())}
        tree = launch.descendants(proc.pid, stale)
        assert set(tree) == {proc.pid, helper}, "the helper that left the session was lost"
        rss_mb, cpu_s = launch.usage(tree)
        assert cpu_s >= 0.5 and rss_mb > 1, (rss_mb, cpu_s)
    finally:
        os.killpg(proc.pid, 9)
        for pid in launch.descendants(proc.pid, {}):
            os.kill(pid, 9)
        proc.wait(timeout=10)


def test_the_switch_names_features_and_ignores_typos(monkeypatch):
    monkeypatch.setenv(host.SWITCH, "cgroup, landlok")
    assert host.switched_off("cgroup") and not host.switched_off("landlock")
    monkeypatch.setenv(host.SWITCH, "all")
    assert all(host.switched_off(f) for f in host.FEATURES)
    with pytest.raises(ValueError, match="unknown host feature"):
        host.switched_off("proc")


# The evaluator's CLI with an audit hook that makes /proc missing for the benchmark's own code (any
# open or directory listing under /proc reached from a benchmark frame before a psutil frame).
NO_PROC_CLI = """
import os, runpy, sys

def hook(event, args):
    if event not in ("open", "os.scandir", "os.listdir") or not args or isinstance(args[0], int):
        return
    path = os.fsdecode(args[0]) if args[0] is not None else ""
    if path != "/proc" and not path.startswith("/proc/"):
        return
    frame = sys._getframe(1)
    while frame is not None:
        name = frame.f_globals.get("__name__") or ""
        if name.startswith("psutil"):
            return
        if name.startswith("benchmark"):
            raise FileNotFoundError(2, "No such file or directory (no /proc on this host)", path)
        frame = frame.f_back

sys.addaudithook(hook)
sys.argv = [sys.argv[1]] + sys.argv[2:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


@pytest.mark.evaluation
def test_a_tiny_evaluation_on_a_host_without_proc_landlock_namespaces_or_cgroups(tmp_path):
    wrapper = tmp_path / "no_proc.py"
    wrapper.write_text(NO_PROC_CLI)
    env = dict(tiny_probe_env(), **{host.SWITCH: "landlock,namespaces,cgroup"})
    out = subprocess.run([sys.executable, str(wrapper), str(REPO / "evaluator.py"), str(REPO / "initial_program.py"),
                          *TINY, "--no-cache"], env=env, capture_output=True, text=True, timeout=1200, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    assert result["valid"] and result["stage"] == "done", result.get("error")
    sandbox = result["sandbox"]
    for feature in host.FEATURES:
        assert host.why_off(feature) in sandbox, sandbox
    assert "CPU time from its process tree" in sandbox
    assert out.stderr.count("this host cannot enforce") == 1, out.stderr[-3000:]   # three workers, one warning
    for what in launch.UNENFORCED.values():
        assert what in out.stderr
