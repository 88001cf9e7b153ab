"""ShinkaEvolve task entry point: `python evaluate.py --program_path P --results_dir D [--k v ...]`.

This folder is a ShinkaEvolve task directory (`shinka_run --task-dir shinka`): evaluate.py and
initial.py (a link to ../initial_program.py). Writes D/metrics.json and D/correct.json and exits
0 even when the candidate fails. Data locations come from PLASA_DATA_DIR / PLASA_TOKENIZER_DIR.
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmark.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
