"""A worker cannot outlive the evaluator (the judge side's imports: tests/test_trust_boundary.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

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


@pytest.mark.evaluation
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


def test_a_helper_that_double_forks_and_leaves_the_session_stays_in_the_workers_tree(tmp_path):
    """In its own PID namespace a worker's orphaned helpers re-parent to the worker, so the judge
    counts their CPU time and kills them with it, however fast they leave."""
    import pytest

    from benchmark.judge.launch import descendants, isolation

    prefix, what = isolation()
    if not prefix:
        pytest.skip(f"this machine gives workers {what}")
    script = tmp_path / "helper.py"
    script.write_text(
        "import os, sys, time\n"
        "if os.fork() == 0:\n"
        "    os.setsid()\n"
        "    if os.fork() == 0:\n"
        "        with open(sys.argv[1], 'w') as fh:\n"
        "            fh.write(open('/proc/self/stat').read().split()[0])\n"  # its pid as the judge sees it
        "        time.sleep(60)\n"
        "    os._exit(0)\n"
        "time.sleep(60)\n")
    marker = tmp_path / "started"
    proc = subprocess.Popen(list(prefix) + [sys.executable, str(script), str(marker)], start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not (marker.exists() and marker.read_text()) and time.monotonic() < deadline:
            time.sleep(0.1)
        helper = int(marker.read_text())
        time.sleep(0.5)  # the middle process has exited: the helper is an orphan now
        assert os.getsid(helper) != os.getsid(proc.pid), "the helper left the session"
        assert helper in descendants(proc.pid, {}), "the judge lost track of the helper"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        for pid in descendants(proc.pid, {}):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        proc.wait(timeout=10)


KEYRING = """
import ctypes, sys
libc = ctypes.CDLL(None, use_errno=True)
user_keyring = ctypes.c_int(-4)
if sys.argv[1] == "add":
    print(libc.syscall(248, b"user", b"plasa-test", b"payload", 7, user_keyring))  # add_key
else:
    print(libc.syscall(250, 10, user_keyring, b"user", b"plasa-test", 0))  # keyctl(SEARCH)
"""


def test_one_worker_cannot_leave_a_message_for_the_next_in_shared_memory_or_a_keyring(tmp_path):
    """System V shared memory and the user's keyring are outside Landlock's reach; each worker's
    own IPC and user namespaces keep what one worker leaves there away from the next."""
    import pytest

    from benchmark.judge.launch import isolation

    prefix, what = isolation()
    if "user" not in what:
        pytest.skip(f"this machine gives workers {what}")
    script = tmp_path / "key.py"
    script.write_text(KEYRING)
    shm = ("import ctypes, sys; libc = ctypes.CDLL(None); key = 0x504C4154; "
           "print(libc.shmget(key, 4096, 0o1666 if sys.argv[1] == 'add' else 0))")

    def run(*args):
        out = subprocess.run(list(prefix) + [sys.executable, *args], capture_output=True, text=True, timeout=60)
        return int(out.stdout.split()[-1])

    assert run(str(script), "add") > 0 and run(str(script), "find") == -1
    assert run("-c", shm, "add") >= 0 and run("-c", shm, "find") == -1
