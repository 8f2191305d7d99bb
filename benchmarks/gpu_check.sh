#!/usr/bin/env bash
# The GPU check of issue 12, as one short script for a lent GPU (about 10 minutes on one H200).
#
#   OUT=/some/dir bash benchmarks/gpu_check.sh        # from the repository root, on a machine with CUDA
#
# 1. Checks that python3's torch sees a CUDA device (first, before anything is installed: a machine
#    without one fails in seconds, saying so). With no torch at all it installs the repository with
#    constraints.txt; with a torch there (a CUDA build) it keeps it: flowvi is installed with
#    `pip install --no-deps --no-build-isolation -e .` (no network needed), else imported from src/.
# 2. benchmarks/run.py --device cuda --cases dlgm-train: the DLGM training step (floor, flowvi, the
#    per-step reference; K = 0, 10, 80) on the GPU, eager                         -> $OUT/gpu-dlgm-train.json
#    (GPU_CHECK_COMPILED_STEP=1 adds flowvi under torch.compile at K = 80: one more compilation, minutes)
# 3. benchmarks/run.py --device cuda --cases train: a 2,000-update K = 80 `flowvi train` run, eager, then
#    compiled (the trainer's compiled step: COMPILED_TRAIN_ARGS, default "--compile true"; a trainer without
#    that option fails that row in seconds, saying so), each with the projected time of 500,000 updates
#                                                                                   -> $OUT/gpu-train.json
# Everything it prints is also in $OUT/gpu_check.log, the environment in $OUT/environment.txt. Compiling the
# K = 80 step is the slow part (the 80-step chain is unrolled: about 2 CPU-minutes here at tiny sizes).
#
# Settings (environment): OUT (required unless GPU_CHECK_DEVICE=cpu), PYTHON (default python3),
# GPU_CHECK_UPDATES (default 2000), GPU_CHECK_K (default 80), GPU_CHECK_REPEATS (default 30),
# COMPILED_TRAIN_ARGS, STEP_TIMEOUT (seconds per stage, default 300), TRAIN_TIMEOUT (seconds per training
# run, default 300). GPU_CHECK_DEVICE=cpu is a dry run of the script itself on a CPU machine at tiny sizes
# (nothing needs it, but it tries the script before GPU time is spent). No test depends on this script.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
DEVICE=${GPU_CHECK_DEVICE:-cuda}
PY=${PYTHON:-python3}
UPDATES=${GPU_CHECK_UPDATES:-2000}
TRAIN_K=${GPU_CHECK_K:-80}
REPEATS=${GPU_CHECK_REPEATS:-30}
STEP_TIMEOUT=${STEP_TIMEOUT:-300}
TRAIN_TIMEOUT=${TRAIN_TIMEOUT:-300}
COMPILED_TRAIN_ARGS=${COMPILED_TRAIN_ARGS:---compile true}
COMPILED_STEP=()
[[ "${GPU_CHECK_COMPILED_STEP:-0}" == 1 ]] && COMPILED_STEP=(--compiled)
if [[ "$DEVICE" == cpu ]]; then
    OUT=${OUT:-$(mktemp -d)}
    SIZE=(--tiny --warmup 1)
    MODES=1-thread,1-thread-compiled
else
    : "${OUT:?gpu_check: set OUT to the directory for the results}"
    SIZE=()
    MODES=cuda,cuda-compiled
fi
mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu_check.log") 2>&1
export PYTHONUNBUFFERED=1

fail() { echo "gpu_check: FAILED: $*"; exit 1; }
stage() { echo; echo "gpu_check: == $* ($(date -u +%H:%M:%S))"; }

stage "1/3 torch and the device"
if ! "$PY" -c "import torch" 2>/dev/null; then
    echo "gpu_check: $PY has no torch: installing the repository with constraints.txt"
    "$PY" -m pip install -q -c constraints.txt -e ".[experiments]" \
        || fail "no torch in $PY, and pip could not install one (no network?): use a Python with a CUDA torch (PYTHON=...)"
fi
"$PY" - "$DEVICE" <<'EOF' || fail "torch does not see the device (see the line above)"
import sys
import torch
device = sys.argv[1]
if device == "cuda" and not torch.cuda.is_available():
    sys.exit(f"torch {torch.__version__} (CUDA build: {torch.version.cuda}) sees no CUDA device")
name = torch.cuda.get_device_name() if device == "cuda" else "cpu (dry run)"
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, device: {name}")
EOF
if ! "$PY" -c "import flowvi, flowvi_experiments.cli.main" 2>/dev/null; then
    if "$PY" -m pip install -q --no-deps --no-build-isolation -e . >"$OUT/pip.log" 2>&1; then
        echo "gpu_check: installed flowvi from the repository (pip -e ., torch kept)"
    else
        echo "gpu_check: pip install -e . failed (see pip.log); importing flowvi from src/"
        export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
    fi
fi
"$PY" -c "import flowvi, flowvi_experiments.training, yaml, tqdm, numpy" \
    || fail "flowvi or what its trainer needs (numpy, pyyaml, tqdm) does not import in $PY"
{
    "$PY" -c "import platform, torch; print('python', platform.python_version(), '| torch', torch.__version__, '| cuda', torch.version.cuda)"
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv || true
    git rev-parse HEAD 2>/dev/null || true
} > "$OUT/environment.txt" 2>&1

stage "2/3 the DLGM training step on $DEVICE (floor, flowvi, reference${COMPILED_STEP:+, compiled at K = 80})"
timeout "$STEP_TIMEOUT" "$PY" benchmarks/run.py --device "$DEVICE" --cases dlgm-train "${COMPILED_STEP[@]}" \
    --no-memory --repeats "$REPEATS" "${SIZE[@]}" --json "$OUT/gpu-dlgm-train.json" \
    || fail "benchmarks/run.py --cases dlgm-train (exit $?; 124 = over ${STEP_TIMEOUT} s)"

stage "3/3 flowvi train, K = $TRAIN_K, $UPDATES updates, eager and compiled ($COMPILED_TRAIN_ARGS)"
timeout "$((2 * TRAIN_TIMEOUT + 60))" "$PY" benchmarks/run.py --device "$DEVICE" --cases train \
    --train-updates "$UPDATES" --train-K "$TRAIN_K" --train-modes "$MODES" \
    --compiled-train-args "$COMPILED_TRAIN_ARGS" --train-timeout "$TRAIN_TIMEOUT" "${SIZE[@]}" \
    --json "$OUT/gpu-train.json" \
    || fail "benchmarks/run.py --cases train (exit $?; 124 = over $((2 * TRAIN_TIMEOUT + 60)) s)"
"$PY" - "$OUT/gpu-train.json" <<'EOF'
import json
import sys
run = json.load(open(sys.argv[1]))
for r in run["records"]:
    if r.get("status") == "ok":
        print(f"gpu_check: {r['mode']}: {r['updates_per_s']:.1f} updates/s, 500,000 updates in "
              f"{r['projected_500k_h']:.2f} h")
    else:
        print(f"gpu_check: {r['mode']}: {r['status']}")
EOF
echo "gpu_check: done; results in $OUT"
