"""JSON work for measure/gpu_check.sh (standard library only; torch only for the machine's
description). Run with the interpreter the evaluator uses.

    python measure/gpu_check_summary.py machine OUT_JSON
        the machine: nvidia-smi -L, python and torch versions, torch.cuda.is_available(), the GPU's
        name; prints "cuda=1" or "cuda=0" on stdout for the shell

    python measure/gpu_check_summary.py summarize WORK OUT_JSON --device D --budget-s S [--dry-run]
        reads WORK/machine.json and, for each run named in WORK/order (one a line), WORK/runs/NAME/
        {meta, cmd, result.json, stdout}; writes the summary to OUT_JSON, prints a table on
        stderr and exits 0 when every run met its expectation, 1 otherwise

A run's meta holds key=value lines written by the shell: expect (pass, reject:probe or
reject:hang), rc, start, end (epoch seconds), limit_s, log (its stderr), skipped (a reason).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

SCHEMA = "plasa-gpu-check/1"
# The result's fields kept per run (error is cut to ERROR_CHARS).
FIELDS = ("valid", "official", "stage", "error_type", "error", "combined_score", "val_ppl", "val_loss",
          "precision", "device", "environment", "timings", "sandbox", "peak_rss_mb")
ERROR_CHARS = 300
TAIL_CHARS = 1500
TIMEOUT_RCS = (124, 137)  # timeout(1): the limit was reached (137: killed after the grace period)
HANG_ERRORS = ("hang", "timeout")


def machine() -> dict:
    info: dict = {"python": platform.python_version(), "python_executable": sys.executable,
                  "platform": platform.platform(), "cpu_count": os.cpu_count()}
    smi = shutil.which("nvidia-smi")
    info["nvidia_smi"] = None
    if smi:
        try:
            done = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=30)
            info["nvidia_smi"] = (done.stdout.strip().splitlines() if done.returncode == 0
                                  else f"nvidia-smi -L exited {done.returncode}: {done.stderr.strip()[:300]}")
        except (OSError, subprocess.SubprocessError) as exc:
            info["nvidia_smi"] = f"nvidia-smi -L failed: {exc}"
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_cuda"] = torch.version.cuda
        info["cuda_available"] = bool(torch.cuda.is_available())
        if info["cuda_available"]:
            info["cuda_device_count"] = torch.cuda.device_count()
            info["cuda_device_name"] = torch.cuda.get_device_name(0)
    except Exception as exc:  # torch missing or broken: the runs will say more
        info["torch"] = None
        info["torch_error"] = f"{type(exc).__name__}: {exc}"[:300]
        info["cuda_available"] = False
    return info


def read_meta(path: Path) -> dict:
    meta = {}
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            key, sep, value = line.partition("=")
            if sep:
                meta[key.strip()] = value.strip()
    return meta


def load_result(run_dir: Path):
    """The evaluator's JSON: its --output file, else its stdout (a bad command line prints JSON
    there too); None when neither parses."""
    for name in ("result.json", "stdout"):
        path = run_dir / name
        try:
            data = json.loads(path.read_text(errors="replace"))
        except (OSError, ValueError):
            continue
        if isinstance(data, dict):
            return data
    return None


def log_tail(path: Path, chars: int = TAIL_CHARS) -> str:
    """The end of a stderr log, progress-bar redraws (\\r) reduced to their last state."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 20 * chars))
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    lines = [line.rsplit("\r", 1)[-1] for line in text.replace("\r\n", "\n").split("\n")]
    return "\n".join(line for line in lines if line.strip())[-chars:]


def judge(expect: str, rc, result) -> tuple:
    """(ok, why): whether the run met its expectation."""
    if rc in TIMEOUT_RCS:
        return False, f"killed by its time limit (exit {rc}) before the evaluator answered"
    if result is None:
        return False, f"no result JSON (exit {rc})"
    valid, stage, error_type = result.get("valid"), result.get("stage"), result.get("error_type")
    if expect == "pass":
        if rc == 0 and valid is True:
            return True, "passed"
        return False, f"expected a pass, got exit {rc}, valid {valid}, stage {stage}, error_type {error_type}"
    if expect.startswith("reject:"):
        want = expect.split(":", 1)[1]
        if rc != 1 or valid is not False:
            return False, f"expected a rejection ({want}), got exit {rc}, valid {valid}"
        if want == "hang":
            if error_type in HANG_ERRORS:
                return True, f"rejected as {error_type} at stage {stage}"
            return False, f"rejected, but as {error_type} at stage {stage}, not as a hang"
        if stage == want:
            return True, f"rejected at stage {stage} ({error_type})"
        return False, f"rejected, but at stage {stage} ({error_type}), not at {want}"
    return False, f"unknown expectation {expect!r}"


def run_entry(work: Path, name: str) -> dict:
    run_dir = work / "runs" / name
    meta = read_meta(run_dir / "meta")
    entry: dict = {"name": name, "expect": meta.get("expect", "?")}
    cmd = run_dir / "cmd"
    entry["command"] = cmd.read_text(errors="replace").strip() if cmd.is_file() else None
    rc = meta.get("rc")
    entry["exit_code"] = int(rc) if rc not in (None, "") and rc.lstrip("-").isdigit() else None
    try:
        entry["wall_s"] = round(float(meta["end"]) - float(meta["start"]), 2)
    except (KeyError, ValueError):
        entry["wall_s"] = None
    entry["limit_s"] = float(meta["limit_s"]) if meta.get("limit_s") else None
    entry["timed_out"] = entry["exit_code"] in TIMEOUT_RCS
    entry["skipped"] = meta.get("skipped") or None
    result = load_result(run_dir)
    for key in FIELDS:
        value = result.get(key) if result else None
        if key == "error" and isinstance(value, str):
            value = value[:ERROR_CHARS]
        entry[key] = value
    if entry["skipped"]:
        entry["ok"], entry["why"] = False, f"not run: {entry['skipped']}"
    else:
        entry["ok"], entry["why"] = judge(entry["expect"], entry["exit_code"], result)
    log = Path(meta["log"]) if meta.get("log") else None
    entry["stderr_log"] = str(log) if log else None
    entry["stderr_tail"] = log_tail(log) if log else ""
    return entry


def git_info() -> dict:
    info = {"commit": None, "dirty": None}
    try:
        done = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=30)
        if done.returncode == 0:
            info["commit"] = done.stdout.strip()
            status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                                    capture_output=True, text=True, timeout=60)
            if status.returncode == 0:
                info["dirty"] = bool(status.stdout.strip())
    except (OSError, subprocess.SubprocessError):
        pass
    return info


def summarize(work: Path, out: Path, device: str, budget_s: float, dry_run: bool, started: float) -> int:
    order = [line.strip() for line in (work / "order").read_text().splitlines() if line.strip()] \
        if (work / "order").is_file() else []
    runs = [run_entry(work, name) for name in order]
    try:
        machine_info = json.loads((work / "machine.json").read_text())
    except (OSError, ValueError):
        machine_info = None
    now = datetime.now(timezone.utc)
    summary = {
        "schema": SCHEMA,
        "date": now.isoformat(timespec="seconds"),
        "dry_run": dry_run,
        "device": device,
        "ok": bool(runs) and all(r["ok"] for r in runs),
        "runs_ok": f"{sum(r['ok'] for r in runs)}/{len(runs)}",
        "budget_s": budget_s,
        "wall_s": round(now.timestamp() - started, 1) if started else None,
        "git": git_info(),
        "machine": machine_info,
        "runs": runs,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(summary, indent=1, allow_nan=False, default=str) + "\n")
    os.replace(tmp, out)
    for r in runs:
        print(f"[gpu_check] {'ok  ' if r['ok'] else 'FAIL'} {r['name']:<28} expect {r['expect']:<13} "
              f"exit {r['exit_code']}  {r['wall_s']} s  {r['why']}", file=sys.stderr)
    print(f"[gpu_check] {'OK' if summary['ok'] else 'FAILED'} ({summary['runs_ok']} runs met their "
          f"expectation, {summary['wall_s']} s); summary in {out}", file=sys.stderr)
    return 0 if summary["ok"] else 1


def main(argv: list) -> int:
    if argv[:1] == ["machine"] and len(argv) == 2:
        info = machine()
        Path(argv[1]).write_text(json.dumps(info, indent=1) + "\n")
        print(f"cuda={int(bool(info.get('cuda_available')))}")
        return 0
    if argv[:1] == ["summarize"] and len(argv) >= 3:
        import argparse

        p = argparse.ArgumentParser(prog="gpu_check_summary.py summarize")
        p.add_argument("work")
        p.add_argument("out")
        p.add_argument("--device", default="cuda")
        p.add_argument("--budget-s", type=float, default=0.0)
        p.add_argument("--started", type=float, default=0.0)
        p.add_argument("--dry-run", action="store_true")
        a = p.parse_args(argv[1:])
        return summarize(Path(a.work), Path(a.out), a.device, a.budget_s, a.dry_run, a.started)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
