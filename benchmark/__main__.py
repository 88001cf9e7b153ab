"""`python -m benchmark COMMAND ...`

  compare RESULT.json ... [--baseline NAME] [--plot out.png]   leaderboard of results
  record --candidate R ... --baseline R ...                    the record rule: beats it at p < 0.01?
  openevolve-config [--check FILE]                             print configs/openevolve.yaml
  shinka-config [--check FILE]                                 print shinka_task/shinka.yaml
  experiment STUDY [--seeds N] [--steps N] [--workers N] [--out DIR] [--rows A,B]
             [--executor local|ray] [--address ADDR]           run a study (patterns, schedules, warmup)
  probe-power [--leaks N] [--plans N] [--val-tokens N]         the hidden probes' detection probability
                                                               by leak density (docs/probe-power.md)
"""

from __future__ import annotations

import sys


def main(argv: list) -> int:
    commands = {"compare": "benchmark.analysis.compare",
                "record": "benchmark.analysis.record",
                "openevolve-config": "benchmark.search.openevolve_config",
                "shinka-config": "benchmark.search.shinka_config",
                "experiment": "benchmark.experiments.runner",
                "probe-power": "benchmark.judge.power"}
    if not argv or argv[0] not in commands:
        print(__doc__, file=sys.stderr)
        return 2
    import importlib

    return importlib.import_module(commands[argv[0]]).main(argv[1:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
