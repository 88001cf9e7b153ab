"""The evaluator runs with only torch, numpy, tokenizers, tqdm, pyyaml and psutil importable, from a
PYTHONPATH folder and no install of the project (how a bare GPU machine gets them): a fresh
virtual environment with nothing in it, and a folder holding just those packages (links into
this environment's site-packages). datasets is needed only for cosmopedia and hub loading."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from tests.conftest import DATA_DIR, REPO, TOKENIZER_DIR, tiny_probe_env

import pytest
pytestmark = [pytest.mark.evaluation, pytest.mark.slow]

DISTRIBUTIONS = ("torch", "numpy", "tokenizers", "tqdm", "PyYAML", "psutil",  # psutil: the judge's process accounting
                 # what the torch wheel requires, installed with it
                 "sympy", "mpmath", "networkx", "Jinja2", "MarkupSafe", "filelock", "typing_extensions",
                 "fsspec", "setuptools")


def _site(folder: Path) -> Path:
    """`folder` with links to each distribution's top-level packages and metadata, nothing else."""
    folder.mkdir()
    owners = importlib.metadata.packages_distributions()
    for dist in DISTRIBUTIONS:
        meta = importlib.metadata.distribution(dist)
        tops = [name for name, dists in owners.items() if dist.lower() in (d.lower() for d in dists)]
        for name in tops:
            spec = importlib.util.find_spec(name)
            if spec is None:
                continue
            place = Path(spec.submodule_search_locations[0] if spec.submodule_search_locations else spec.origin)
            (folder / place.name).symlink_to(place)
        info = Path(meta._path)  # noqa: SLF001 - the .dist-info folder, for importlib.metadata
        (folder / info.name).symlink_to(info)
        for libs in info.parent.glob(f"{dist.lower()}.libs"):  # vendored shared libraries
            (folder / libs.name).symlink_to(libs)
    return folder


def test_the_evaluator_runs_with_only_its_runtime_packages(tmp_path):
    bare = tmp_path / "bare"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(bare)], check=True, timeout=120)
    python = str(bare / "bin" / "python")
    site = _site(tmp_path / "site")
    env = {k: v for k, v in tiny_probe_env().items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    env.update(PYTHONPATH=str(site), PLASA_DATA_DIR=str(DATA_DIR), PLASA_TOKENIZER_DIR=str(TOKENIZER_DIR))
    for absent in ("datasets", "openevolve", "matplotlib", "pytest"):
        probe = subprocess.run([python, "-c", f"import {absent}"], env=env, capture_output=True, text=True)
        assert probe.returncode != 0, f"{absent} is importable: the environment is not bare"
    out = subprocess.run([python, str(REPO / "evaluator.py"), str(REPO / "initial_program.py"),
                          "--steps", "3", "--val-tokens", "4096", "--quiet", "--no-cache"],
                         env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout)
    assert result["valid"] and result["stage"] == "done", result.get("error")
