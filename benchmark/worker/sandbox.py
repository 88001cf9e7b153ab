"""The worker's file-system and network wall: Linux Landlock, applied before the candidate runs.

After :func:`restrict` the process (and anything it starts) can read only the Python installation,
the system's libraries and ``/proc``, ``/sys``, ``/dev``; it can write only its own private
folder. The token caches, the data folders, the other worker's folder, other evaluations' folders in
/dev/shm and the home directory are out of reach, whatever object chain the candidate finds to
``open``; TCP connects and binds are
denied, and so are signals to processes outside the sandbox (the judge) and ptrace of them.

Landlock needs Linux 5.13+; where the kernel lacks it (or PLASA_HOST_WITHOUT switches it off:
benchmark.host), :func:`restrict` returns "none" and the evaluation goes on (the result records it,
the judge warns), since the judge's checks do not depend on it.
"""

from __future__ import annotations

import ctypes
import glob
import os
import platform

from .. import host

SYS_CREATE_RULESET, SYS_ADD_RULE, SYS_RESTRICT_SELF = 444, 445, 446  # same on x86_64 and aarch64
PR_SET_NO_NEW_PRIVS = 38
RULE_PATH_BENEATH = 1

EXECUTE, WRITE_FILE, READ_FILE, READ_DIR = 1 << 0, 1 << 1, 1 << 2, 1 << 3
REMOVE_DIR, REMOVE_FILE, MAKE_CHAR, MAKE_DIR, MAKE_REG = 1 << 4, 1 << 5, 1 << 6, 1 << 7, 1 << 8
MAKE_SOCK, MAKE_FIFO, MAKE_BLOCK, MAKE_SYM = 1 << 9, 1 << 10, 1 << 11, 1 << 12
REFER, TRUNCATE, IOCTL_DEV = 1 << 13, 1 << 14, 1 << 15
# Rights known by each Landlock ABI version (v2 adds REFER, v3 TRUNCATE, v5 IOCTL_DEV).
_FS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 4: (1 << 15) - 1, 5: (1 << 16) - 1}
NET_BIND_TCP, NET_CONNECT_TCP = 1 << 0, 1 << 1
SCOPE_ABSTRACT_UNIX, SCOPE_SIGNAL = 1 << 0, 1 << 1

READ = EXECUTE | READ_FILE | READ_DIR
WRITE = (READ | WRITE_FILE | REMOVE_DIR | REMOVE_FILE | MAKE_DIR | MAKE_REG | MAKE_SYM | TRUNCATE)
SYSTEM_READ = ("/usr", "/lib", "/lib64", "/bin", "/sbin", "/etc", "/proc", "/sys", "/opt")
# Device files a worker may use; not /dev as a whole, whose /dev/shm holds other runs' folders.
DEVICES = ("/dev/null", "/dev/zero", "/dev/full", "/dev/random", "/dev/urandom")
# What a CUDA worker needs besides: the NVIDIA device nodes, read, written and ioctl'd (the driver's
# whole interface is ioctl, which Landlock v5+ denies on a device without IOCTL_DEV: CUDA would
# not start), and the driver's /proc and /sys files that CUDA and NVML read (also under
# SYSTEM_READ today; named so that narrowing it never breaks CUDA). Only for a cuda device.
NVIDIA_NODES = ("/dev/nvidia*", "/dev/nvidia-uvm*", "/dev/nvidia-caps/*", "/dev/nvidia-caps-imex-channels/*")
NVIDIA_READ = ("/proc/driver/nvidia", "/sys/module/nvidia", "/sys/bus/pci/devices", "/sys/devices")


class _RulesetAttr(ctypes.Structure):
    _fields_ = [("handled_access_fs", ctypes.c_uint64), ("handled_access_net", ctypes.c_uint64),
                ("scoped", ctypes.c_uint64)]


class _PathBeneath(ctypes.Structure):
    _pack_ = 1
    _fields_ = [("allowed_access", ctypes.c_uint64), ("parent_fd", ctypes.c_int32)]


def abi_version() -> int:
    """The kernel's Landlock ABI version; 0 where there is none."""
    if platform.system() != "Linux":
        return 0
    libc = ctypes.CDLL(None, use_errno=True)
    version = libc.syscall(SYS_CREATE_RULESET, None, ctypes.c_size_t(0), ctypes.c_uint32(1))
    return max(int(version), 0)


def rules(writable: str, readable: tuple, device: str = "cpu", nodes: tuple = NVIDIA_NODES) -> list:
    """(path, access) pairs the wall allows: read the system and `readable`, use the standard
    device files, write `writable`; and for a cuda `device` the NVIDIA device nodes matching
    `nodes` (with ioctl) and the driver's files."""
    allowed = [(p, READ) for p in SYSTEM_READ + tuple(readable)]
    allowed += [(device_file, READ_FILE | WRITE_FILE) for device_file in DEVICES]
    if device.startswith("cuda"):
        found = sorted({path for pattern in nodes for path in glob.glob(pattern)})
        allowed += [(node, READ_FILE | WRITE_FILE | IOCTL_DEV | (READ_DIR if os.path.isdir(node) else 0))
                    for node in found]
        allowed += [(path, READ) for path in NVIDIA_READ]
    return allowed + [(writable, WRITE)]


def restrict(writable: str, readable: tuple, device: str = "cpu", nodes: tuple = NVIDIA_NODES) -> str:
    """Confines this process to :func:`rules`; returns a description of the wall ("landlock vN
    ..." or "none")."""
    if host.switched_off("landlock"):
        return f"none ({host.why_off('landlock')})"
    abi = abi_version()
    if abi < 1:
        return "none (the kernel has no Landlock)"
    libc = ctypes.CDLL(None, use_errno=True)
    handled = _FS_BY_ABI.get(abi, (1 << 16) - 1)
    attr = _RulesetAttr(handled, (NET_BIND_TCP | NET_CONNECT_TCP) if abi >= 4 else 0,
                        (SCOPE_ABSTRACT_UNIX | SCOPE_SIGNAL) if abi >= 6 else 0)
    size = ctypes.sizeof(_RulesetAttr) if abi >= 6 else 16 if abi >= 4 else 8
    fd = libc.syscall(SYS_CREATE_RULESET, ctypes.byref(attr), ctypes.c_size_t(size), ctypes.c_uint32(0))
    if fd < 0:
        return f"none (landlock_create_ruleset failed: errno {ctypes.get_errno()})"
    try:
        for path, access in rules(writable, readable, device, nodes):
            _add_rule(libc, fd, path, access & handled)
        if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
            return f"none (PR_SET_NO_NEW_PRIVS failed: errno {ctypes.get_errno()})"
        if libc.syscall(SYS_RESTRICT_SELF, fd, ctypes.c_uint32(0)) != 0:
            return f"none (landlock_restrict_self failed: errno {ctypes.get_errno()})"
    finally:
        os.close(fd)
    gpu = "; the NVIDIA devices" if device.startswith("cuda") else ""
    return f"landlock v{abi}: writes only in the worker's folder; reads only the Python installation and system paths{gpu}"


def _add_rule(libc, ruleset_fd: int, path: str, access: int) -> None:
    try:
        dir_fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
    except OSError:
        return  # a path this machine does not have
    try:
        if not os.path.isdir(path):
            access &= EXECUTE | READ_FILE | WRITE_FILE | TRUNCATE | IOCTL_DEV
        rule = _PathBeneath(access, dir_fd)
        libc.syscall(SYS_ADD_RULE, ruleset_fd, RULE_PATH_BENEATH, ctypes.byref(rule), ctypes.c_uint32(0))
    finally:
        os.close(dir_fd)
