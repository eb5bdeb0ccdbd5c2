#!/usr/bin/env bash
# Every GPU measurement of issue 20 in one run that fits a device lease (under 8 minutes on one
# H100/H200, the install included). Run from the repository root; results land under $OUT:
# summary.md and summary.json (benchmarks/gpu_check_summary.py) and logs.tar.gz (every step's log),
# three files, well inside what a device run hands back.
#
#   OUT=/some/dir bash benchmarks/gpu_check.sh          # on the GPU machine
#   bash benchmarks/gpu_check.sh --dry                  # CPU, tiny sizes, no install (DRY=1 too); make test runs it
#
# Steps, each under a timeout (skipped when the budget is spent):
#   1 the machine (nvidia-smi, torch)         5 dcl train again, same shapes: compile_s warm (inductor cache)
#   2 install (only what is missing)          6 jobs per GPU at batch 32: 2, 4, 8 processes (aggregate views/s)
#   3 throughput.py at batch 256 and 32:      7 dcl probe on the zip: cold (empty decode cache), then cached
#     model-only vs end to end views/s
#   4 dcl train, 3 epochs at batch 256 on the zip, a checkpoint every epoch: epoch_time_s end to end,
#     train_s/knn_s/checkpoint_s, compile_s cold (an empty TORCHINDUCTOR_CACHE_DIR)
# Env: BUDGET_S (default 450), PY (a python that has torch; default python3), ZIP (an image zip with
# class folders; default the 10k CIFAR-10 zip when found, else a synthetic one), WORK (scratch folder).
set -u
[[ ${1:-} == --dry ]] && DRY=1
DRY=${DRY:-0}
OUT=${OUT:-$PWD/gpu_check_out}
WORK=${WORK:-$(mktemp -d /tmp/dcl-gpu-check.XXXXXX)}
LOGS=$WORK/logs
mkdir -p "$OUT" "$LOGS"
START=$SECONDS
BUDGET_S=${BUDGET_S:-450}
export PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export TORCHINDUCTOR_CACHE_DIR=$WORK/inductor-cache   # empty at first: step 4 compiles cold, step 5 warm
export TORCHINDUCTOR_FX_GRAPH_CACHE=1 TORCHINDUCTOR_AUTOGRAD_CACHE=1
PY=${PY:-python3}

log() { echo "[$((SECONDS - START))s] $*" | tee -a "$LOGS/timeline.txt"; }
left() { echo $((BUDGET_S - (SECONDS - START))); }
# step NAME MAX_S CMD...: run under min(MAX_S, time left - 5); its output in $LOGS/NAME.log, "rc seconds" in NAME.rc
step() {
  local name=$1 max=$2; shift 2
  local limit=$(( $(left) - 5 )); (( limit > max )) && limit=$max
  if (( limit < 10 )); then log "SKIP $name (no time left)"; echo "skipped" > "$LOGS/$name.rc"; return 99; fi
  log "START $name (limit ${limit}s): $*"
  local t0=$SECONDS
  timeout --kill-after=5 "$limit" "$@" > "$LOGS/$name.log" 2>&1
  local rc=$?
  echo "$rc $((SECONDS - t0))" > "$LOGS/$name.rc"
  log "END $name rc=$rc in $((SECONDS - t0))s"
  tail -n 5 "$LOGS/$name.log"
  return $rc
}

if [[ $DRY == 1 ]]; then
  DEV=cpu; ENC=convnet_small; NIMG=64; EPOCHS=2; TRAIN_B=16; TP_STEPS=2; TP_WIN=1; TP_WARM=1
  JOBS_ARGS="--seconds 0.5 --warmup 1 --image-size 16 --num-images 64 --steps-per-check 1 --threads 1 --jobs 2"
  MAX_IMG='"max_images": 64,'; PROBE_TEST=32; BATCHES="16 8"
else
  DEV=cuda; ENC=resnet18; NIMG=10000; EPOCHS=3; TRAIN_B=256; TP_STEPS=20; TP_WIN=3; TP_WARM=8
  JOBS_ARGS="--seconds 8 --warmup 20 --num-images 2048 --jobs 2 4 8"
  MAX_IMG=''; PROBE_TEST=2000; BATCHES="256 32"
fi

# ---------------------------------------------------------------- 1 the machine
log "host $(hostname), $(nproc) CPUs, repo $(git rev-parse --short HEAD 2>/dev/null || echo '?'), DRY=$DRY"
{ command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv; } \
  > "$LOGS/machine.txt" 2>&1
"$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(),
torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'cpu')" >> "$LOGS/machine.txt" 2>&1
cat "$LOGS/machine.txt"

# ---------------------------------------------------------------- 2 install what is missing
if [[ $DRY != 1 ]] && ! "$PY" -c "import dcl_core.config, safetensors, PIL" 2>/dev/null; then
  if [[ -d .whl ]]; then  # the device machine reaches no index: wheels carried in .whl (device README)
    step install 120 "$PY" -m pip install -q --no-index --no-deps --target "$WORK/site" .whl/*.whl
    export PYTHONPATH=$PYTHONPATH:$WORK/site
  else
    step install 240 "$PY" -m pip install -q -e .
  fi
fi

# ---------------------------------------------------------------- data
ZIP=${ZIP:-}
if [[ -z $ZIP && $DRY != 1 ]]; then
  for z in ../shared/data/cifar10-train-10k.zip shared/data/cifar10-train-10k.zip; do
    [[ -z $ZIP && -f $z ]] && ZIP=$(cd "$(dirname "$z")" && pwd)/$(basename "$z")
  done
fi
if [[ -z $ZIP ]]; then
  ZIP=$WORK/synthetic.zip
  log "no image zip given or found: a synthetic one of $NIMG 32 px images (timings only; accuracy meaningless)"
  "$PY" - "$ZIP" "$NIMG" <<'PYEOF'
import io, sys, zipfile
import numpy as np
from PIL import Image
path, n = sys.argv[1], int(sys.argv[2])
rng = np.random.default_rng(0)
with zipfile.ZipFile(path, "w") as z:
    for i in range(n):
        buf = io.BytesIO()
        Image.fromarray((rng.random((32, 32, 3)) * 255).astype(np.uint8)).save(buf, format="PNG")
        z.writestr(f"c{i % 4}/{i:05d}.png", buf.getvalue())
PYEOF
fi
echo "$ZIP" > "$LOGS/data.txt"
log "data: $ZIP"

# ---------------------------------------------------------------- 3 model-only vs end to end
for B in $BATCHES; do
  step "throughput_b$B" 150 "$PY" benchmarks/throughput.py --device "$DEV" --encoder "$ENC" --batch-size "$B" \
    --steps "$TP_STEPS" --windows "$TP_WIN" --warmup "$TP_WARM" --num-images "$NIMG" --no-peer
done

# ---------------------------------------------------------------- 4, 5 dcl train cold, then warm
train() {  # NAME EPOCHS
  local run=$WORK/run_$1
  cat > "$WORK/$1.json" <<JSONEOF
{"method": "dcl", "encoder": "$ENC", "dataset": {"source": "$ZIP", $MAX_IMG "image_size": 32},
 "batch_size": $TRAIN_B, "epochs": $2, "device": "$DEV", "seed": 0}
JSONEOF
  step "$1" 150 "$PY" -m dcl_core.cli train "$WORK/$1.json" --out "$run" --quiet --cache-dir "$WORK/cache"
  cp "$run/metrics.jsonl" "$LOGS/$1.metrics.jsonl" 2>/dev/null
}
train train_cold "$EPOCHS"
train train_warm 1

# ---------------------------------------------------------------- 6 jobs per GPU at batch 32
# shellcheck disable=SC2086  # JOBS_ARGS is a list of arguments
step jobs_per_gpu 150 "$PY" benchmarks/jobs_per_gpu.py --device "$DEV" --encoder "$ENC" --batch-size 32 $JOBS_ARGS

# ---------------------------------------------------------------- 7 the probe end to end, cold then cached
PROBE_CACHE=$WORK/probe-cache
for kind in cold cached; do
  step "probe_$kind" 90 "$PY" -m dcl_core.cli probe --encoder "$WORK/run_train_cold" --train "$ZIP" \
    --test "{\"source\": \"$ZIP\", \"max_images\": $PROBE_TEST}" --device "$DEV" --cache-dir "$PROBE_CACHE" \
    --out "$LOGS/probe_$kind.json"
done

# ---------------------------------------------------------------- results
log "done in $((SECONDS - START))s"
"$PY" benchmarks/gpu_check_summary.py "$LOGS" "$OUT" --dry "$DRY"
tar -czf "$OUT/logs.tar.gz" -C "$WORK" logs
cat "$OUT/summary.md"
