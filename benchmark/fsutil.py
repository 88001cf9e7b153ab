"""Atomic writes, file locks and the cache root. Standard library only."""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

# The repository: the reference program, the package, the configs (one definition for every module).
REPO_ROOT = Path(__file__).resolve().parents[1]


def cache_dir() -> Path:
    """PLASA_CACHE_DIR, default ~/.cache/plasa-bench."""
    return Path(os.environ.get("PLASA_CACHE_DIR", "~/.cache/plasa-bench")).expanduser()


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """An exclusive flock on `path` (created if missing) for the duration of the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a temp file in the same folder, fsync, rename: readers see old or new, never half."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results and caches are for everyone to read
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_tree(path: Path) -> None:
    """Deletes a folder a worker wrote, however it is shaped; never raises. A candidate can nest
    thousands of folders in its own (shutil.rmtree recurses once per level and raises
    RecursionError, which ignore_errors does not cover): what is left goes to `rm -rf`, which
    walks iteratively."""
    try:
        shutil.rmtree(path, ignore_errors=True)
    except Exception:  # noqa: BLE001 - RecursionError, or anything else a strange tree causes
        pass
    if os.path.lexists(path):
        try:
            subprocess.run(["rm", "-rf", "--one-file-system", "--", str(path)], timeout=300,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired):
            pass
