"""The machine an evaluation runs on, as the judge's measurements of it are keyed: its CPU model
and torch version, and the folder where a quiet measurement is kept (PLASA_CACHE_DIR/tuning/)."""

from __future__ import annotations

import hashlib
import json
import platform
from pathlib import Path

import torch

from ..fsutil import cache_dir


def cpu_model() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu)
    except OSError:  # no /proc (macOS): the platform's own name
        pass
    return cpu


def key(*settings) -> str:
    """This CPU model and torch version, with the `settings` a measurement depends on."""
    text = json.dumps([cpu_model(), torch.__version__, *settings])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def kept(name: str) -> Path:
    """Where the measurement `name` of this machine is kept."""
    return cache_dir() / "tuning" / f"{name}.json"
