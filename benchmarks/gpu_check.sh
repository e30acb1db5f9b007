#!/usr/bin/env bash
# The prepared GPU check (issue 13): one command for a CUDA machine, under 8 minutes in all.
#
#   bash benchmarks/gpu_check.sh [--dry-run] [--out DIR]
#
# 1. the golden-equivalence tests on CUDA (ACTIONKIT_TEST_DEVICE=cuda, read by tests/conftest.py);
# 2. the full 30-view test speed of I3D R50 and SlowFast R50 4x16 (1 video = 30 views of 3x32x256x256):
#    float32, --amp, --channels-last and --fast (bf16 + channels_last_3d + torch.compile), with peak memory;
# 3. a train step of each (batch 8 of 3x32x224x224): float32, --amp, --amp --channels-last;
# 4. the SlowOnly R50 4x16 AVA detector (one keyframe clip, 8 RoIs): float32, --amp, --fast;
# and prints one table of every row for BENCHMARKS.md (JSON rows in DIR, default gpu_check_out/).
# Each step has its own time limit (the sum stays under 8 minutes); a step that fails or runs out of time is
# reported and the others still run. Without CUDA (or with --dry-run) it only prints what it would run.
set -u
cd "$(dirname "$0")/.." || exit 2

DRY=0
OUT=gpu_check_out
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --out) OUT="$2"; shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown argument $1" >&2; exit 2 ;;
  esac
  shift
done
PY=${PYTHON:-python}
if [ "$DRY" = 0 ] && ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)' 2>/dev/null; then
  echo "gpu_check: no CUDA device here: dry run (what a CUDA machine would run)"
  DRY=1
fi
[ "$DRY" = 1 ] && echo "gpu_check: DRY RUN, nothing is executed"

I3D=configs/recognition/i3d/i3d_r50_32x2x1_100e_kinetics400_rgb.py
SLOWFAST=configs/recognition/slowfast/slowfast_r50_4x16x1_256e_kinetics400_rgb.py
AVA=configs/detection/ava/slowonly_kinetics_pretrained_r50_4x16x1_20e_ava_rgb.py
BENCH="$PY -m actionkit benchmark"
FAILED=()
JSONS=()

# step LIMIT_SECONDS NAME COMMAND...: run (or, in a dry run, print) one step under a time limit
step() {
  local limit=$1 name=$2
  shift 2
  echo "gpu_check step [$name] (limit ${limit}s): $*"
  [ "$DRY" = 1 ] && return 0
  local t0=$SECONDS
  timeout "$limit" "$@"
  local rc=$?
  echo "gpu_check step [$name]: exit $rc after $((SECONDS - t0))s"
  [ $rc -ne 0 ] && FAILED+=("$name (exit $rc)")
  return 0
}

# bench NAME LIMIT ARGS...: an `actionkit benchmark` step whose rows go to $OUT/NAME.json
bench() {
  local name=$1 limit=$2
  shift 2
  JSONS+=("$OUT/$name.json")
  step "$limit" "$name" $BENCH "$@" --device cuda --json "$OUT/$name.json"
}

[ "$DRY" = 0 ] && mkdir -p "$OUT"
[ "$DRY" = 0 ] && "$PY" -c 'import torch; print("gpu_check:", torch.__version__, torch.cuda.get_device_name(0))'

step 60 golden env ACTIONKIT_TEST_DEVICE=cuda "$PY" -m pytest -q -k golden -p no:cacheprovider \
  tests/test_models_recognition.py tests/test_roi.py tests/test_bbox_head.py tests/test_detector.py tests/test_lfb.py

bench test_fp32 30 "$I3D" "$SLOWFAST" --iters 5 --warmup 2
bench test_amp 25 "$I3D" "$SLOWFAST" --iters 5 --warmup 2 --amp
bench test_channels_last 30 "$I3D" "$SLOWFAST" --iters 5 --warmup 2 --channels-last
bench test_fast 150 "$I3D" "$SLOWFAST" --iters 5 --warmup 2 --fast
bench train_fp32 25 "$I3D" "$SLOWFAST" --train-step --batch-size 8 --iters 5 --warmup 2
bench train_amp 20 "$I3D" "$SLOWFAST" --train-step --batch-size 8 --iters 5 --warmup 2 --amp
bench train_amp_channels_last 20 "$I3D" "$SLOWFAST" --train-step --batch-size 8 --iters 5 --warmup 2 --amp --channels-last
bench ava_fp32 15 "$AVA" --iters 10 --warmup 3
bench ava_amp 15 "$AVA" --iters 10 --warmup 3 --amp
bench ava_fast 45 "$AVA" --iters 10 --warmup 3 --fast

if [ "$DRY" = 1 ]; then
  echo "gpu_check: then prints one table of ${#JSONS[@]} JSON files: $BENCH --table-from ${JSONS[*]}"
  exit 0
fi
EXISTING=()
for j in "${JSONS[@]}"; do [ -f "$j" ] && EXISTING+=("$j"); done
echo
echo "## GPU check ($(date -u +%Y-%m-%dT%H:%MZ), $SECONDS s in all)"
[ ${#EXISTING[@]} -gt 0 ] && $BENCH --table-from "${EXISTING[@]}"
if [ ${#FAILED[@]} -gt 0 ]; then
  echo "gpu_check: FAILED steps: ${FAILED[*]}"
  exit 1
fi
echo "gpu_check: every step passed"
