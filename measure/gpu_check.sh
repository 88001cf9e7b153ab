#!/usr/bin/env bash
# PLASA-Bench on a GPU: one prepared check for one NVIDIA H100/H200 (no network needed).
#
# What it checks, one run after another, each through `python evaluator.py ... --device cuda
# --no-cache` with its own time limit (timeout(1), and the evaluator's --time-limit a little below
# it, so one stuck run cannot eat the budget) and its stderr kept in a log:
#   1. reference                  initial_program.py at the official budget (1000 steps, the whole
#                                 validation split): must pass; its score is the GPU reference
#   2. leak_topk_over_masked_row  a future-leaking cheat (tests/adversarial/cheats.py), tiny budget:
#                                 must be rejected (exit 1) at stage "probe"
#   3. hang_in_eval               a cheat looping forever in eval mode, tiny budget, --heartbeat 20
#                                 (8 in the dry run):
#                                 must be rejected as error_type "hang" (or "timeout")
#   4. compile_whole_model        tests/honest/candidates/compile_whole_model.py (build_model
#                                 returns torch.compile(model)), 200 steps and 65,536 validation
#                                 tokens: must pass
# It then writes ONE JSON summary to OUT_JSON (per run: command, exit code, wall seconds, the
# result's key fields, the expectation and whether it was met; the machine, the git commit, the
# date, the overall "ok") and keeps each run's stderr in OUT_JSON's name with .logs/ instead of
# .json. Exit 0 when every expectation is met, 1 otherwise, 2 on bad arguments.
#
# How long: at most 8 minutes on the GPU, a hard budget (device time is scarce): the runs' limits
# are 240 s (reference), 60 s, 75 s and 150 s, and no run may go past GPU_CHECK_BUDGET_S (default
# 460 s) from the script's start; a run with too little time left is skipped and reported. With a
# warm machine it should end well inside that (the leak and the hang take well under a minute).
#
# --dry-run: the same four runs on the CPU (--device cpu --precision fp32) at a tiny budget (3
# steps, 4096 validation tokens, scaled-down probes) and generous limits, all four at once with
# OMP_NUM_THREADS=1 (a rehearsal for the script itself; tests/test_gpu_check.py runs it).
# The GPU runs use the default precision, auto: bf16 on an H100/H200.
#
# Run it on the device machine (the data is not in the repository; it needs PyTorch with CUDA,
# numpy and tokenizers, which the device image has):
#   1. here, copy the data into an ignored folder of the checkout:
#        mkdir -p runs && cp -r ../shared/data runs/data          # /runs/ is in .gitignore
#   2. on the device, from the repository root, with carry ["runs/data"] (about 22 MB) and a
#      command timeout of about 540 s:
#        PYTHON=python3 bash measure/gpu_check.sh runs/data "$OUT/gpu_check.json"
#      (the logs come back too: $OUT/gpu_check.logs/*.log, 5 files in all)
#   3. here, commit the summary under docs/gpu/, e.g. docs/gpu/gpu_check-YYYY-MM-DD-h200.json.
# Locally: PYTHON=.venv/bin/python bash measure/gpu_check.sh ../shared/data runs/gpu_check.json --dry-run
#
# Usage: bash measure/gpu_check.sh DATA_DIR OUT_JSON [--dry-run]
#   PYTHON (default python3): the interpreter the evaluator runs with (it needs torch).

set -u

usage() {
    echo "usage: bash measure/gpu_check.sh DATA_DIR OUT_JSON [--dry-run]" >&2
    echo "  DATA_DIR: the PLASA data folder (wikitext-2-tokenized/, tokenizers/, ...);" >&2
    echo "  OUT_JSON: where the JSON summary goes; PYTHON=... selects the interpreter (default python3)" >&2
}
die_usage() {
    echo "gpu_check: $*" >&2
    usage
    exit 2
}

DRY_RUN=0
POSITIONAL=()
for arg in "$@"; do
    case "$arg" in
        --dry-run) DRY_RUN=1 ;;
        -h|--help) usage; exit 0 ;;
        -*) die_usage "unknown option: $arg" ;;
        *) POSITIONAL+=("$arg") ;;
    esac
done
[ "${#POSITIONAL[@]}" -eq 2 ] || die_usage "expected DATA_DIR and OUT_JSON (got ${#POSITIONAL[@]} arguments)"
DATA_DIR_ARG=${POSITIONAL[0]}
OUT_ARG=${POSITIONAL[1]}
[ -n "$DATA_DIR_ARG" ] || die_usage "DATA_DIR is empty"
[ -d "$DATA_DIR_ARG" ] || die_usage "DATA_DIR '$DATA_DIR_ARG' is not a folder (missing data: copy the PLASA data folder, e.g. ../shared/data, there first)"
[ -n "$OUT_ARG" ] || die_usage "OUT_JSON is empty"
[ -d "$OUT_ARG" ] && die_usage "OUT_JSON '$OUT_ARG' is a folder; give a file name such as $OUT_ARG/gpu_check.json"

# Absolute paths before leaving the caller's folder.
DATA_DIR=$(cd "$DATA_DIR_ARG" && pwd -P) || die_usage "cannot enter DATA_DIR '$DATA_DIR_ARG'"
OUT_PARENT=$(dirname -- "$OUT_ARG")
mkdir -p -- "$OUT_PARENT" 2>/dev/null || die_usage "cannot create the folder of OUT_JSON: $OUT_PARENT"
OUT_JSON="$(cd "$OUT_PARENT" && pwd -P)/$(basename -- "$OUT_ARG")"
LOG_DIR="${OUT_JSON%.json}.logs"

REPO=$(cd "$(dirname -- "${BASH_SOURCE[0]}")/.." && pwd -P)
cd "$REPO" || exit 2
[ -f evaluator.py ] || die_usage "no evaluator.py in $REPO (the script must stay in measure/)"

PY=${PYTHON:-python3}
command -v "$PY" >/dev/null 2>&1 || die_usage "the interpreter '$PY' was not found (set PYTHON=...)"
command -v timeout >/dev/null 2>&1 || die_usage "timeout(1) (coreutils) is needed"

if [ "$DRY_RUN" = 1 ]; then
    DEVICE=cpu
    BUDGET_S=${GPU_CHECK_BUDGET_S:-1500}
    # the four runs share the CPU: one torch thread each, or OpenMP threads spin against each other
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
    LIMIT_REFERENCE=600; LIMIT_LEAK=400; LIMIT_HANG=400; LIMIT_COMPILE=700
    # fp32 on the CPU: "auto" picks bf16 only where a step measures 10% faster, which four runs
    # sharing the CPU make a coin toss (and bf16 is emulated, 13x slower, on a CPU without it)
    PRECISION=(--precision fp32)
    REFERENCE_BUDGET=(--steps 3 --val-tokens 4096)
    COMPILE_BUDGET=(--steps 3 --val-tokens 4096)
else
    DEVICE=cuda
    BUDGET_S=${GPU_CHECK_BUDGET_S:-460}
    LIMIT_REFERENCE=240; LIMIT_LEAK=60; LIMIT_HANG=75; LIMIT_COMPILE=150
    PRECISION=()          # auto, as an official evaluation: bf16 on an H100/H200
    REFERENCE_BUDGET=()   # the official budget: 1000 steps, the whole validation split
    COMPILE_BUDGET=(--steps 200 --val-tokens 65536)
fi
TINY_BUDGET=(--steps 3 --val-tokens 4096)
# The hang: a short heartbeat, so it is caught in seconds. The cheat's own cli_args (8 s, in
# tests/adversarial/cheats.py) in the dry run, where its busy loop takes a core from the others;
# 20 s on the GPU, far above any honest silence there.
if [ "$DRY_RUN" = 1 ]; then HANG_ARGS=(--heartbeat 8); else HANG_ARGS=(--heartbeat 20); fi
RESERVE_S=15                 # kept for the summary at the end of the budget
MIN_RUN_S=20                 # a run with less than this left is skipped
GRACE_S=10                   # timeout -k: SIGKILL this long after SIGTERM

WORK=$(mktemp -d "${TMPDIR:-/tmp}/plasa-gpu-check.XXXXXX") || { echo "gpu_check: mktemp failed" >&2; exit 1; }
cleanup() { rm -rf -- "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
mkdir -p "$WORK/runs" "$WORK/cache" "$LOG_DIR"
: > "$WORK/order"

export PLASA_DATA_DIR="$DATA_DIR" PLASA_TOKENIZER_DIR="$DATA_DIR" HF_HUB_OFFLINE=1
export PLASA_CACHE_DIR="$WORK/cache"
unset PLASA_DEVICE PLASA_OVERRIDES PLASA_RAY_ADDRESS PLASA_FEATURES 2>/dev/null
# the dry run rehearses the script, not the probes' power: its hidden and direct probes are scaled
# down as the tests' tiny runs' are (tests/conftest.py TINY_PROBES)
[ "$DRY_RUN" = 1 ] && export PLASA_OVERRIDES='{"probe_causal_rows": 31, "probe_repeat_rows": 1, "probe_windows": 2}'
STARTED=$(date +%s.%N)

say() { echo "[gpu_check] $*" >&2; }
say "repo $REPO, data $DATA_DIR, device $DEVICE$([ "$DRY_RUN" = 1 ] && echo ' (dry run)'), budget ${BUDGET_S} s, python $PY"

# The machine, first: on the GPU, no run is started when torch sees no CUDA device.
CUDA_SEEN=$("$PY" measure/gpu_check_summary.py machine "$WORK/machine.json" 2>"$LOG_DIR/machine.log")
SKIP_ALL=""
if [ "$DEVICE" = cuda ] && [ "$CUDA_SEEN" != "cuda=1" ]; then
    SKIP_ALL="torch.cuda.is_available() is not True for $PY (see the summary's machine)"
    say "$SKIP_ALL: no run started"
fi

# run_one NAME EXPECT LIMIT_S CANDIDATE [EVALUATOR ARGS...]
# Runs the evaluator on CANDIDATE under timeout(1), its files in $WORK/runs/NAME.
run_one() {
    local name=$1 expect=$2 cap=$3 candidate=$4
    shift 4
    local dir="$WORK/runs/$name" log="$LOG_DIR/$name.log"
    mkdir -p "$dir"
    : > "$log"
    { echo "expect=$expect"; echo "log=$log"; } > "$dir/meta"
    local left=$((BUDGET_S - SECONDS - RESERVE_S))
    local limit=$cap
    [ "$left" -lt "$limit" ] && limit=$left
    [ "$limit" -lt 0 ] && limit=0
    # the evaluator's own limit ends the run first, with a JSON result (error_type timeout)
    local inner=$((limit - GRACE_S - 5))
    [ "$inner" -lt 10 ] && inner=10
    local cmd=(timeout -k "$GRACE_S" "$limit" "$PY" evaluator.py "$candidate" --device "$DEVICE" --no-cache
               --output "$dir/result.json" --time-limit "$inner" ${PRECISION[@]+"${PRECISION[@]}"} "$@")
    printf '%q ' "${cmd[@]}" > "$dir/cmd"
    if [ -n "$SKIP_ALL" ]; then
        echo "skipped=$SKIP_ALL" >> "$dir/meta"; return
    fi
    if [ ! -f "$candidate" ]; then
        echo "skipped=no candidate file $candidate" >> "$dir/meta"; say "$name: no candidate file"; return
    fi
    if [ "$limit" -lt "$MIN_RUN_S" ]; then
        echo "skipped=only ${left} s of the ${BUDGET_S} s budget left" >> "$dir/meta"
        say "$name: skipped, only ${left} s left"; return
    fi
    echo "limit_s=$limit" >> "$dir/meta"
    say "$name: started (limit ${limit} s), expect $expect"
    echo "start=$(date +%s.%N)" >> "$dir/meta"
    "${cmd[@]}" > "$dir/stdout" 2> "$log" < /dev/null
    local rc=$?
    { echo "end=$(date +%s.%N)"; echo "rc=$rc"; } >> "$dir/meta"
    say "$name: exit $rc"
}

# The cheats' sources, written from tests/adversarial/cheats.py.
for cheat in leak_topk_over_masked_row hang_in_eval; do
    if ! "$PY" -m tests.adversarial.cheats "$cheat" > "$WORK/$cheat.py" 2>> "$LOG_DIR/machine.log"; then
        say "could not write the cheat $cheat (see $LOG_DIR/machine.log)"
        rm -f -- "$WORK/$cheat.py"
    fi
done

launch() {  # sequential on the GPU (one device, honest timings); all at once in a dry run
    echo "$1" >> "$WORK/order"
    if [ "$DRY_RUN" = 1 ]; then run_one "$@" & else run_one "$@"; fi
}
launch reference pass "$LIMIT_REFERENCE" initial_program.py ${REFERENCE_BUDGET[@]+"${REFERENCE_BUDGET[@]}"}
launch leak_topk_over_masked_row reject:probe "$LIMIT_LEAK" "$WORK/leak_topk_over_masked_row.py" "${TINY_BUDGET[@]}"
launch hang_in_eval reject:hang "$LIMIT_HANG" "$WORK/hang_in_eval.py" "${TINY_BUDGET[@]}" "${HANG_ARGS[@]}"
launch compile_whole_model pass "$LIMIT_COMPILE" tests/honest/candidates/compile_whole_model.py "${COMPILE_BUDGET[@]}"
wait

DRY_FLAG=()
[ "$DRY_RUN" = 1 ] && DRY_FLAG=(--dry-run)
"$PY" measure/gpu_check_summary.py summarize "$WORK" "$OUT_JSON" --device "$DEVICE" \
    --budget-s "$BUDGET_S" --started "$STARTED" ${DRY_FLAG[@]+"${DRY_FLAG[@]}"}
rc=$?
case "$rc" in
    0|1) exit "$rc" ;;
    *) say "the summary could not be written (exit $rc)"; exit 1 ;;
esac
