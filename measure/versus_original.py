"""Whole evaluations, ours against the original benchmark's loop, alternating in one invocation.

Ours: `python evaluator.py initial_program.py --steps N` (fresh process: start-up, data from the
cache, probes, training, the whole validation split through the judge). The original: its program
(`PLASAModel` from ORIGINAL/initial_program.py) in its own loop as its evaluator.py runs it
(DataLoader over every overlapping window, random_split 90/10, batch 2, AdamW 3e-4,
`model(input_ids, labels).loss`, gradient clipping 1.0, 100 validation batches of 2), in a fresh
process of ORIGINAL_PYTHON (a venv with torchtune 0.6.1 and torchao 0.10.0, which its program
imports), over the same WikiText-2 training tokens (its hub dataset is unreachable here). Both
are timed from process start to exit; the ratio is ours over theirs at the same step count.

    python measure/versus_original.py --original ../shared/original/plasa_attention \\
        --original-python /path/to/venv/bin/python [--steps 100] [--rounds 2] [--output f.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

# Runs in the original's venv: no import from this project.
ORIGINAL_LOOP = r'''
import importlib.util, sys, time
import numpy as np, torch
from torch.utils.data import DataLoader, Dataset, random_split
program, tokens_path, steps = sys.argv[1], sys.argv[2], int(sys.argv[3])
torch.manual_seed(42)
spec = importlib.util.spec_from_file_location("plasa_program", program)
module = importlib.util.module_from_spec(spec); sys.modules["plasa_program"] = module
spec.loader.exec_module(module)
tokens = np.load(tokens_path).tolist()

class Windows(Dataset):  # the original's TextTokenDataset: every overlapping window
    def __len__(self): return len(tokens) - 128
    def __getitem__(self, i):
        return (torch.tensor(tokens[i:i + 128], dtype=torch.long),
                torch.tensor(tokens[i + 1:i + 129], dtype=torch.long))

data = Windows()
val = len(data) // 10
train_set, val_set = random_split(data, [len(data) - val, val], generator=torch.Generator().manual_seed(42))
train_loader = DataLoader(train_set, batch_size=2, shuffle=True, num_workers=0)
val_loader = DataLoader(val_set, batch_size=2, shuffle=False, num_workers=0)
model = module.PLASAModel(vocab_size=49152, hidden_size=128, n_layers=4, n_heads=4, num_kv_heads=2,
                          head_dim=32, intermediate_size=512, max_seq_len=128, dropout=0.1, rms_norm_eps=1e-6)
opt = torch.optim.AdamW(model.parameters(), lr=3e-4, betas=(0.9, 0.95), weight_decay=0.1)
model.train(); step = 0; t_train = time.perf_counter()
while step < steps:
    for x, _ in train_loader:
        if step >= steps: break
        loss = model(input_ids=x, labels=x.clone()).loss
        loss.backward(); torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step(); opt.zero_grad(); step += 1
t_val = time.perf_counter()
model.eval()
with torch.no_grad():
    for i, (x, _) in enumerate(val_loader):
        if i >= 100: break
        out = model(input_ids=x, labels=x.clone()); out.loss.item(); out.logits.argmax(-1)
print("ORIGINAL", t_val - t_train, time.perf_counter() - t_val, flush=True)
'''


def timed(cmd: list, env=None) -> tuple:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=REPO)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{cmd[:3]} exited {proc.returncode}:\n{proc.stderr[-3000:]}")
    return wall, proc.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--original", required=True, help="folder of the original benchmark")
    parser.add_argument("--original-python", required=True, help="python with torchtune 0.6.1 / torchao 0.10.0")
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--output")
    args = parser.parse_args()

    from benchmark.judge.data import load_benchmark_data
    from benchmark.spec import SPEC

    program = Path(args.original) / "initial_program.py"
    if not program.is_file():
        raise SystemExit(f"no original program at {program}")
    with tempfile.TemporaryDirectory() as tmp:
        tokens_path = Path(tmp) / "train.npy"
        np.save(tokens_path, np.asarray(load_benchmark_data(SPEC).train, dtype=np.int64))
        loop_path = Path(tmp) / "original_loop.py"
        loop_path.write_text(ORIGINAL_LOOP)
        ours_cmd = [sys.executable, str(REPO / "evaluator.py"), str(REPO / "initial_program.py"),
                    "--steps", str(args.steps), "--no-cache", "--quiet"]
        theirs_cmd = [args.original_python, str(loop_path), str(program), str(tokens_path), str(args.steps)]
        ours, theirs, phases = [], [], []
        for _ in range(args.rounds):  # alternating, so drift of the machine hits both
            wall, out = timed(ours_cmd)
            result = json.loads(out)
            ours.append(wall)
            wall, out = timed(theirs_cmd)
            theirs.append(wall)
            train_s, val_s = map(float, out.split("ORIGINAL")[-1].split())
            phases.append({"original_train_s": train_s, "original_validation_s": val_s,
                           "ours_train_s": result["timings"]["train_s"],
                           "ours_validation_s": result["timings"]["validation_s"]})
    report = {"steps": args.steps, "rounds": args.rounds, "ours_wall_s": ours, "original_wall_s": theirs,
              "ratio": statistics.median(ours) / statistics.median(theirs), "phases": phases,
              "ours_val_tokens": "the whole validation split", "original_val_tokens": 100 * 2 * 128}
    print(json.dumps(report, indent=1))
    if args.output:
        Path(args.output).write_text(json.dumps(report, indent=1) + "\n")


if __name__ == "__main__":
    main()
