"""The options of one evaluation: built once (by the command line, a search adapter or a study) and
passed down unchanged to :func:`benchmark.judge.runner.evaluate_file` and the evaluation.

Standard library only (the parent process imports it before torch). Frozen: a stage or a seed
loop that needs other options makes a new object (:meth:`Options.replace`,
:meth:`Options.with_overrides`), so no layer can change what another layer sees.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Mapping, Optional, TextIO

from ..spec import Spec

MODES = ("full", "stage1")


@dataclass(frozen=True)
class Options:
    """Everything an evaluation is asked for besides the candidate file."""

    overrides: Mapping[str, Any] = field(default_factory=dict)  # spec fields (an unofficial budget)
    mode: str = "full"                    # full, or stage1 (the cascade's quick first stage)
    device: str = "cpu"                   # cpu, cuda (a free GPU each), cuda:N
    precision: Optional[str] = None       # bf16 or fp32; None: the judge chooses for the machine
    data_dir: Optional[str] = None        # the corpus folder (else PLASA_DATA_DIR, else the hub)
    tokenizer_dir: Optional[str] = None   # the tokenizer folder (else PLASA_TOKENIZER_DIR)
    time_limit_s: Optional[float] = None  # wall clock of the whole evaluation (else spec.time_limit_s)
    memory_limit_mb: Optional[int] = None  # each worker's memory (else spec.memory_limit_mb)
    progress: bool = True                 # progress bars and worker logs on `echo`
    echo: Optional[TextIO] = field(default=None, compare=False, repr=False)  # None: sys.stderr
    use_cache: bool = True                # answer from, and write to, the results cache
    trusted: bool = False                 # the benchmark's own experiment models: no static checks
    threads: Optional[int] = None         # cap on the workers' torch threads (runs side by side)
    sandbox: bool = True                  # Landlock and namespaces for the workers where available

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode {self.mode!r}: expected one of {', '.join(MODES)}")
        object.__setattr__(self, "overrides", dict(self.overrides or {}))

    @classmethod
    def of(cls, options: Optional["Options"] = None, **changes) -> "Options":
        """`options` (or the defaults) with `changes`; a keyword that is not an option is a
        TypeError naming it."""
        return dataclasses.replace(options, **changes) if options is not None else cls(**changes)

    @cached_property
    def spec(self) -> Spec:
        """The spec with the overrides; ValueError or TypeError naming a bad field or value."""
        return Spec().replace(**self.overrides)

    @property
    def stream(self) -> TextIO:
        return self.echo if self.echo is not None else sys.stderr

    def replace(self, **changes) -> "Options":
        return dataclasses.replace(self, **changes)

    def with_overrides(self, **fields) -> "Options":
        """These options with more spec overrides (a seed, the audit)."""
        return dataclasses.replace(self, overrides=dict(self.overrides, **fields))
