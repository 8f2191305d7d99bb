#!/usr/bin/env bash
# One lane of long MNIST trainings (docs/mnist.md, "Long runs"): for each row, train it from its config or resume
# it from its last checkpoint, then evaluate best.pt at S = 200 (and at S = 5000 for K >= 80 rows), one thread.
# Rerunning the same command after an interruption continues where each row stands; finished rows are skipped.
#
#   scripts/mnist_lane.sh b100k/nice-perm-global-k80 b100k/nice-perm-k10
#
# ROW is a config under $CONFIGS (default configs/mnist/) without .yaml; its run directory is $RUNS/ROW (default
# runs/). Start a lane from a worktree of a fixed commit with its own virtualenv, in the background (two lanes
# fill 2 cores):
#
#   git worktree add ../runs-wt HEAD && cd ../runs-wt && python3 -m venv .venv && . .venv/bin/activate \
#     && pip install -c constraints.txt -e ".[experiments]"
#   mkdir -p runs && setsid nohup scripts/mnist_lane.sh ROW... >> runs/lane-a.log 2>&1 &
#
# Environment: FLOWVI_DATA_DIR (default ../shared/data), RUNS (default runs), CONFIGS (default configs/mnist),
# S5000_MIN_K (default 80; a large value skips the S = 5000 evaluations), TRAIN_ARGS (more `flowvi train` arguments
# for every row, new or resumed, e.g. "--compile true": 1.4-1.5x faster at K = 80 on CPU, docs/benchmarks.md).
# Every row's config and TRAIN_ARGS are checked (flowvi train --check) before the first row starts.
set -u
cd "$(dirname "$0")/.."
[ -n "${VIRTUAL_ENV:-}" ] || { [ -f .venv/bin/activate ] && . .venv/bin/activate; }
command -v flowvi >/dev/null || { echo "mnist_lane.sh: no flowvi on PATH; install the worktree's venv first" >&2; exit 2; }
export FLOWVI_DATA_DIR="${FLOWVI_DATA_DIR:-$(cd .. && pwd)/shared/data}"
RUNS="${RUNS:-runs}"
CONFIGS="${CONFIGS:-configs/mnist}"
S5000_MIN_K="${S5000_MIN_K:-80}"
read -r -a train_args <<< "${TRAIN_ARGS:-}"
trained() { grep -qsE '"status": "(completed|early_stopped)"' "$1/summary.json"; }  # an early stop is an end too
# the `flowvi train` arguments of a row that is not trained, in `args`: resume it, or train it from its config
train_args_of() {
  local out="$RUNS/$1"
  if [ -f "$out/checkpoint.pt" ]; then args=(--out "$out" --resume); else args=(--config "$CONFIGS/$1.yaml" --out "$out"); fi
  args+=(--threads 1 --progress false "${train_args[@]}")
}
for row in "$@"; do
  [ -f "$CONFIGS/$row.yaml" ] || {
    echo "mnist_lane.sh: no config $CONFIGS/$row.yaml; give rows as configs under $CONFIGS without .yaml" >&2; exit 2; }
done
# every row's config and TRAIN_ARGS are checked as its training would take them before any row runs
for row in "$@"; do
  trained "$RUNS/$row" && continue
  train_args_of "$row"
  flowvi train "${args[@]}" --check >/dev/null \
    || { echo "mnist_lane.sh: row $row would fail (the error above); fix its config or TRAIN_ARGS" >&2; exit 2; }
done
# a lane started with setsid has an autogroup of its own: it then outranks interactive work (tests, builds), and
# its trainings inherit that; a lane started from a shell leaves the shell's autogroup alone
if [ "$(ps -o sid= -p $$ 2>/dev/null | tr -d " ")" = "$$" ]; then echo -10 > "/proc/$$/autogroup" 2>/dev/null || true; fi
log() { echo "$(date -Is) $*"; }
failed=()
for row in "$@"; do
  out="$RUNS/$row"
  if trained "$out"; then
    log "$row: already trained"
  else
    if [ -f "$out/checkpoint.pt" ]; then log "$row: resume"; else log "$row: train"; fi
    train_args_of "$row"
    flowvi train "${args[@]}" || { log "$row: train failed rc=$?"; failed+=("$row"); continue; }
  fi
  if [ ! -f "$out/metrics.json" ]; then
    flowvi evaluate "$out" --samples 200 --threads 1; rc=$?; log "$row: evaluate S=200 rc=$rc"
    [ $rc -eq 0 ] || failed+=("$row")
  fi
  K=$(sed -n 's/^K: *\([0-9]*\).*/\1/p' "$out/config.yaml")
  if [ "${K:-0}" -ge "$S5000_MIN_K" ] && [ ! -f "$out/metrics-s5000.json" ]; then
    flowvi evaluate "$out" --samples 5000 --chunk-size 20 --threads 1 --output "$out/metrics-s5000.json"
    rc=$?; log "$row: evaluate S=5000 rc=$rc"; [ $rc -eq 0 ] || failed+=("$row")
  fi
done
if [ ${#failed[@]} -gt 0 ]; then log "lane done: $*; failed: ${failed[*]}"; exit 1; fi
log "lane done: $*"
