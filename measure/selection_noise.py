"""What one-seed selection costs, measured on the committed study runs (docs/findings/*/runs).

Each group of rows trained on the same seeds (one study, one sequence length) stands in for the
candidates a search compares. For every seed, a one-seed search keeps the row with the best
perplexity on that seed; stage 3 (noise-aware) keeps the row with the best mean over the seeds.
Prints how often the two differ and the one-seed pick's regret: how much worse its mean
perplexity is than the best mean.

    python measure/selection_noise.py [--findings docs/findings]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
from collections import defaultdict
from pathlib import Path


def groups(findings: Path) -> dict:
    """{group name: {row: {seed: val_ppl}}}, rows with a valid run on every seed of the group."""
    found = defaultdict(lambda: defaultdict(dict))
    for path in sorted(findings.glob("*/runs/*/seed*.json")):
        run = json.loads(path.read_text())
        if not run.get("valid"):
            continue
        row = path.parent.name
        length = re.search(r"@(\d+)$", row)
        group = path.parents[2].name + (f"@{length.group(1)}" if length else "")
        found[group][row][run["seed"]] = run["val_ppl"]
    out = {}
    for group, rows in found.items():
        seeds = set.intersection(*(set(s) for s in rows.values()))
        rows = {r: {k: v for k, v in s.items() if k in seeds} for r, s in rows.items()}
        if len(rows) > 1 and seeds:
            out[group] = rows
    return out


def picks(rows: dict) -> list:
    """(seed, one-seed pick, best-mean row, regret in % of mean perplexity) for every seed."""
    mean = {r: statistics.mean(s.values()) for r, s in rows.items()}
    best = min(mean, key=mean.get)
    seeds = sorted(next(iter(rows.values())))
    out = []
    for seed in seeds:
        pick = min(rows, key=lambda r: rows[r][seed])
        out.append((seed, pick, best, 100.0 * (mean[pick] / mean[best] - 1.0)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--findings", default=str(Path(__file__).resolve().parents[1] / "docs" / "findings"))
    found = groups(Path(parser.parse_args().findings))
    all_picks = []
    for group, rows in sorted(found.items()):
        for seed, pick, best, regret in picks(rows):
            all_picks.append((pick != best, regret))
            print(f"{group:>28} ({len(rows):>2} rows) seed {seed}: one seed keeps {pick}, "
                  f"the mean keeps {best}, regret {regret:.2f}%")
    differ = sum(d for d, _ in all_picks)
    regrets = [r for _, r in all_picks]
    print(f"{len(all_picks)} selections: the one-seed pick differs from the best mean in {differ}; "
          f"regret mean {statistics.mean(regrets):.2f}%, max {max(regrets):.2f}%")


if __name__ == "__main__":
    main()
