"""The platform features the evaluator uses where the host has them, and the switch that does
without them. Standard library only (the worker reads it too).

- ``landlock``: the worker's file-system and network wall (Linux 5.13+; benchmark/worker/sandbox.py)
- ``namespaces``: the worker's own PID, IPC, network (and user) namespaces (util-linux ``unshare``)
- ``cgroup``: the worker's CPU time from a control group of its own (benchmark/judge/cpugroup.py)

Process trees, resident memory and CPU time otherwise come from psutil, on every platform (no
/proc needed). Where a feature is missing (macOS, a locked-down container) an evaluation still
runs: the result's ``sandbox`` field says what was not enforced, and the judge warns once per
process. ``PLASA_HOST_WITHOUT`` (a comma-separated list of the features above, or ``all``) switches
features off on a host that has them: how the tests run such a host on Linux.
"""

from __future__ import annotations

import os

FEATURES = ("landlock", "namespaces", "cgroup")
SWITCH = "PLASA_HOST_WITHOUT"


def switched_off(feature: str) -> bool:
    """True when PLASA_HOST_WITHOUT names `feature` (or says ``all``). Unknown names switch
    nothing off: the safe way to read a typo."""
    if feature not in FEATURES:
        raise ValueError(f"unknown host feature {feature!r}; expected one of {', '.join(FEATURES)}")
    names = {n.strip() for n in os.environ.get(SWITCH, "").split(",") if n.strip()}
    return feature in names or "all" in names


def why_off(feature: str) -> str:
    return f"{feature} switched off by {SWITCH}"
