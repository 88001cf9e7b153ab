"""The worker's wall lets a CUDA worker use the NVIDIA devices (ioctl included, which Landlock v5+
enforces on device files), and only a CUDA worker; no address-space limit that CUDA cannot live with."""

from __future__ import annotations

import subprocess
import sys

import pytest

from benchmark.worker import sandbox
from tests.conftest import REPO


def test_only_a_cuda_worker_gets_the_nvidia_nodes_with_ioctl(tmp_path):
    for name in ("nvidia0", "nvidiactl", "nvidia-uvm", "nvidia-uvm-tools"):
        (tmp_path / name).write_text("")
    (tmp_path / "nvidia-caps").mkdir()
    nodes = (str(tmp_path / "nvidia*"),)
    cpu = dict(sandbox.rules("/w", (), "cpu", nodes))
    cuda = dict(sandbox.rules("/w", (), "cuda:0", nodes))
    assert not any("nvidia" in path for path in cpu)
    for name in ("nvidia0", "nvidiactl", "nvidia-uvm", "nvidia-uvm-tools", "nvidia-caps"):
        assert cuda[str(tmp_path / name)] & sandbox.IOCTL_DEV, name
    assert "/proc/driver/nvidia" in cuda and cuda["/w"] == sandbox.WRITE
    assert all(not access & sandbox.IOCTL_DEV for path, access in cpu.items())


PROBE = """
import errno, fcntl, os, sys, termios
from benchmark.worker import sandbox
print(sandbox.restrict(sys.argv[1], (), "cuda:0", nodes=("/dev/zero",)), file=sys.stderr)

def ioctl(path):
    fd = os.open(path, os.O_RDONLY)
    try:
        fcntl.ioctl(fd, termios.FIONREAD, b"\\0" * 4)
        return "ok"
    except OSError as exc:
        return errno.errorcode[exc.errno]
    finally:
        os.close(fd)

def opens(path):
    try:
        os.close(os.open(path, os.O_RDWR))
        return "ok"
    except OSError as exc:
        return errno.errorcode[exc.errno]

print(ioctl("/dev/zero"), ioctl("/dev/null"), opens("/dev/ptmx"))
"""


def test_a_sandboxed_worker_can_ioctl_an_allowed_device_and_nothing_else(tmp_path):
    abi = sandbox.abi_version()
    if abi < 5:
        pytest.skip(f"Landlock ABI {abi}: no ioctl rights to test")
    out = subprocess.run([sys.executable, "-c", PROBE, str(tmp_path)], capture_output=True, text=True,
                         timeout=60, cwd=REPO)
    assert out.returncode == 0, out.stderr
    allowed, standard, other = out.stdout.split()
    assert allowed != "EACCES", "an allow-listed device refused its ioctl"  # the device's own answer
    assert standard == "EACCES" and other == "EACCES"


@pytest.mark.evaluation
def test_workers_run_without_an_address_space_limit_of_their_own(tmp_path):
    """CUDA reserves far more virtual memory than it uses: RLIMIT_AS breaks it. The memory cap is
    resident memory, watched from outside."""
    import resource

    from benchmark.judge.launch import WorkerProcess

    with WorkerProcess(tmp_path, deadline=float("inf"), memory_limit_mb=8000) as worker:
        with open(f"/proc/{worker.proc.pid}/limits") as fh:
            limits = {line[:26].strip(): line[26:].split()[0] for line in fh if line.startswith("Max")}
    ours = resource.getrlimit(resource.RLIMIT_AS)[0]
    assert limits["Max address space"] == ("unlimited" if ours == resource.RLIM_INFINITY else str(ours))
