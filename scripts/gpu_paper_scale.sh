#!/usr/bin/env bash
# The paper-scale MNIST run (planar K = 80, configs/mnist/b300k/planar-k80.yaml) on a lent GPU, trained and
# evaluated in one device call, so that nothing but the result files has to come back (a checkpoint of this model
# with its Adam state is about 70 MB: more than a device call returns). On one CPU core the same run takes
# about 6 hours, more than one session; see docs/mnist.md.
#
# Here, once, before the call (the data travel with the working tree; about 3 MB):
#   mkdir -p .gpu-data && cp -r ../shared/data/binarized_mnist .gpu-data/ && echo /.gpu-data/ >> .git/info/exclude
# The call (the device tool): command "OUT=$OUT bash scripts/gpu_paper_scale.sh", carry [".gpu-data"], timeout_s 600.
#
# 1. torch sees the device; flowvi imports (pip install --no-deps -e ., else src/ on PYTHONPATH: nothing is fetched).
# 2. flowvi train ROW on the device (GPU_TRAIN_ARGS, default: a CUDA-graph update) for at most TRAIN_TIMEOUT seconds;
#    stopped there (SIGTERM) it writes its checkpoint and summary, and its log gives the rate and the projected time.
# 3. When it completed: evaluate best.pt at S = 200 and S = 5000 on the device.
# 4. $OUT/results/RUN-NAME/: the files that results/mnist/ commits (flowvi export: config, summary, log, metrics at
#    S = 200 and 5000 with their per-image values); $OUT/gpu_paper_scale.log; a run stopped before its end leaves
#    $OUT/partial/ (config, summary, log) instead. Commit a finished one here with
#    cp -r FILES_AT/results/RUN-NAME results/mnist/<prefix>RUN-NAME, then flowvi report ... --update README.md.
#
# Settings (environment): OUT (required), ROW (default b300k/planar-k80), PYTHON (default python3), TRAIN_TIMEOUT
# (default 420), EVAL_TIMEOUT (default 150 per evaluation), S_LARGE (default 5000), GPU_TRAIN_ARGS (default
# "--cuda-graph true"),
# DEVICE (default cuda; DEVICE=cpu with EXTRA_TRAIN_ARGS="--updates 20 ..." is a dry run of the script here).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
: "${OUT:?gpu_paper_scale: set OUT to the directory for the results}"
ROW=${ROW:-b300k/planar-k80}
PY=${PYTHON:-python3}
DEVICE=${DEVICE:-cuda}
TRAIN_TIMEOUT=${TRAIN_TIMEOUT:-420}
EVAL_TIMEOUT=${EVAL_TIMEOUT:-150}
S_LARGE=${S_LARGE:-5000}
if [[ "$DEVICE" == cuda ]]; then GPU_TRAIN_ARGS=${GPU_TRAIN_ARGS:---cuda-graph true}; else GPU_TRAIN_ARGS=${GPU_TRAIN_ARGS:-}; fi
NAME=$(basename "$ROW")
RUN=runs/gpu/$NAME
mkdir -p "$OUT"
exec > >(tee -a "$OUT/gpu_paper_scale.log") 2>&1
export PYTHONUNBUFFERED=1 FLOWVI_DATA_DIR="$PWD/.gpu-data"
fail() { echo "gpu_paper_scale: FAILED: $*"; exit 1; }
stage() { echo; echo "gpu_paper_scale: == $* ($(date -u +%H:%M:%S))"; }

stage "1/4 torch, the device and flowvi"
[[ -d .gpu-data/binarized_mnist ]] || fail "no .gpu-data/binarized_mnist: copy the data into the checkout and carry it (see the header)"
"$PY" -c "import sys, torch; d = sys.argv[1]; ok = d != 'cuda' or torch.cuda.is_available(); \
print('torch', torch.__version__, '| device:', torch.cuda.get_device_name() if d == 'cuda' and ok else d); \
sys.exit(0 if ok else 'torch sees no CUDA device')" "$DEVICE" || fail "torch does not see the device"
if ! "$PY" -c "import flowvi_experiments.cli.main" 2>/dev/null; then
    "$PY" -m pip install -q --no-deps --no-build-isolation -e . >/tmp/gpu_paper_scale-pip.log 2>&1 \
        || export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
fi
FLOWVI=("$PY" -m flowvi_experiments.cli.main)
"${FLOWVI[@]}" --help >/dev/null || fail "flowvi does not run in $PY (numpy, pyyaml and tqdm are needed)"

stage "2/4 train $ROW on $DEVICE ($GPU_TRAIN_ARGS; at most $TRAIN_TIMEOUT s)"
if [[ -f "$RUN/checkpoint.pt" ]]; then
    timeout -s TERM "$TRAIN_TIMEOUT" "${FLOWVI[@]}" train --out "$RUN" --resume --progress false
else
    # shellcheck disable=SC2086 # the argument strings are word lists
    timeout -s TERM "$TRAIN_TIMEOUT" "${FLOWVI[@]}" train --config "configs/mnist/$ROW.yaml" --out "$RUN" \
        --device "$DEVICE" --progress false --tensorboard false $GPU_TRAIN_ARGS ${EXTRA_TRAIN_ARGS:-}
fi
echo "gpu_paper_scale: train exit $? (124: stopped at $TRAIN_TIMEOUT s, resumable on this machine only)"
"$PY" - "$RUN/log.csv" "$RUN/config.yaml" <<'PYEOF' || true
import csv, sys, yaml
rows = list(csv.DictReader(open(sys.argv[1])))
target = yaml.safe_load(open(sys.argv[2]))["updates"]
if rows and rows[-1].get("updates_per_s"):
    rate = float(rows[-1]["updates_per_s"])
    print(f"gpu_paper_scale: {rows[-1]['update']} of {target} updates, {rate:.1f} updates/s: {target / rate / 60:.1f} "
          f"min for the run, {500000 / rate / 60:.1f} min for 500,000 updates")
PYEOF
if ! grep -qE '"status": "(completed|early_stopped)"' "$RUN/summary.json" 2>/dev/null; then
    mkdir -p "$OUT/partial"
    for f in config.yaml summary.json log.csv; do [[ -f "$RUN/$f" ]] && cp "$RUN/$f" "$OUT/partial/"; done
    echo "gpu_paper_scale: not completed; nothing to evaluate ($OUT/partial/ has its config, summary and log)"
    exit 0
fi

stage "3/4 evaluate best.pt at S = 200 and S = 5000 on $DEVICE"
timeout "$EVAL_TIMEOUT" "${FLOWVI[@]}" evaluate "$RUN" --samples 200 --device "$DEVICE" || fail "evaluation at S = 200"
timeout "$EVAL_TIMEOUT" "${FLOWVI[@]}" evaluate "$RUN" --samples "$S_LARGE" --device "$DEVICE" \
    --output "$RUN/metrics-s$S_LARGE.json" || echo "gpu_paper_scale: evaluation at S = $S_LARGE failed or ran out of time"

stage "4/4 the result files"
"${FLOWVI[@]}" export "$RUN" --out "$OUT/results" || fail "flowvi export"
ls -la "$OUT/results/$NAME"
echo "gpu_paper_scale: done; results in $OUT/results/$NAME"
