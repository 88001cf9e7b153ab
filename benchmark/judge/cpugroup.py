"""A worker's CPU time from a control group, where the machine lets the judge make one. Standard
library only.

/proc gives a process's own CPU time and that of the children it waited for. A child the kernel
reaps by itself (its parent set SIGCHLD to SIG_IGN) leaves no trace there, so a candidate could do
unbounded extra work in forked children that nobody counts (a red-team session did: 24 extra
training passes a step, 640 ms of counted CPU for 14 s of work). A cgroup counts the CPU time of
every process in it, and every process inherits its parent's group, gone or not. The worker joins
its own group between fork and exec, before it could run anything else.

cgroup v2 (``cpu.stat`` usage_usec, in any group) or v1's cpuacct controller (``cpuacct.usage``).
Making a group needs write access to the hierarchy (root, or a delegated subtree); where there is
none (a container's read-only /sys/fs/cgroup, an ordinary user), :func:`create` returns None, the
judge reads /proc instead, and the result's ``sandbox`` field says which.
"""

from __future__ import annotations

import itertools
import os
import time
from typing import Optional

# (hierarchy, version): a pure v2 machine, then v1's cpuacct (alone or with cpu), then the v2
# hierarchy of a hybrid machine.
ROOTS = (("/sys/fs/cgroup", 2), ("/sys/fs/cgroup/cpuacct", 1), ("/sys/fs/cgroup/cpu,cpuacct", 1),
         ("/sys/fs/cgroup/unified", 2))
PREFIX = "plasa-"
_serial = itertools.count()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's: alive
        pass
    return True


def _sweep(root: str) -> None:
    """Removes the empty groups of judges that are gone (a judge killed before it cleaned up)."""
    try:
        names = [n for n in os.listdir(root) if n.startswith(PREFIX)]
    except OSError:
        return
    for name in names:
        owner = name[len(PREFIX):].split("-", 1)[0]
        if owner.isdigit() and not _alive(int(owner)):
            try:
                os.rmdir(os.path.join(root, name))
            except OSError:
                pass


class CpuGroup:
    """One worker's control group: :meth:`join` in the child, :meth:`cpu_s` from the judge."""

    def __init__(self, path: str, version: int) -> None:
        self.path, self.version = path, version
        self.procs = os.path.join(path, "cgroup.procs")

    @classmethod
    def create(cls, roots: tuple = ROOTS) -> Optional["CpuGroup"]:
        """A new empty group in the first hierarchy that allows one, or None."""
        for root, version in roots:
            marker = "cgroup.controllers" if version == 2 else "cpuacct.usage"
            if not os.path.isfile(os.path.join(root, marker)):
                continue
            _sweep(root)
            path = os.path.join(root, f"{PREFIX}{os.getpid()}-{next(_serial)}-{os.urandom(4).hex()}")
            try:
                os.mkdir(path, 0o755)
            except OSError:
                continue
            group = cls(path, version)
            try:
                group.cpu_s()
            except (OSError, ValueError):
                group.remove()
                continue
            return group
        return None

    @property
    def describe(self) -> str:
        return f"cgroup v{self.version}" + (" cpuacct" if self.version == 1 else "")

    def join(self) -> None:
        """Moves the calling process into the group (run in the child between fork and exec);
        errors are left for :meth:`holds` to find."""
        try:
            fd = os.open(self.procs, os.O_WRONLY)
            try:
                os.write(fd, str(os.getpid()).encode())
            finally:
                os.close(fd)
        except OSError:
            pass

    def holds(self, pid: int) -> bool:
        try:
            with open(self.procs) as fh:
                return str(pid) in fh.read().split()
        except OSError:
            return False

    def cpu_s(self) -> float:
        """CPU seconds of every process that has been in the group."""
        if self.version == 1:
            with open(os.path.join(self.path, "cpuacct.usage")) as fh:
                return int(fh.read()) / 1e9
        with open(os.path.join(self.path, "cpu.stat")) as fh:
            for line in fh:
                key, _, value = line.partition(" ")
                if key == "usage_usec":
                    return int(value) / 1e6
        raise ValueError(f"no usage_usec in {self.path}/cpu.stat")

    def remove(self, wait_s: float = 1.0) -> None:
        """Deletes the group once its processes are gone (they may take a moment to leave it)."""
        end = time.monotonic() + wait_s
        while True:
            try:
                os.rmdir(self.path)
                return
            except FileNotFoundError:
                return
            except OSError:
                if time.monotonic() >= end:
                    return  # left for the sweep of a later evaluation
                time.sleep(0.02)
