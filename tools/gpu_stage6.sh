#!/usr/bin/env bash
# Stage 6 of the default property model and its category baseline, both at once on one lent GPU.
# The data is a pack made by tools/pack_training_data.py (the machine takes ~64 MB per call, so it
# arrives in two calls: msrc_v2 + coco128 as .devpack/a, camvid + indoor as .devpack/b) unpacked into
# $STAGE/data; the stage-3 models these configs start from are copied to $STAGE/init. $STAGE must lie
# outside the repository: the machine's copy of the repository loses ignored files between calls,
# /tmp keeps them while the machine stays warm. (On 2026-11-30 the first call used a folder inside the
# repository and lost it; pack b, then pack a with the init models, were copied to /tmp/st by hand
# before `STAGE=/tmp/st bash tools/gpu_stage6.sh train`, with the 1,600 steps the timing run gave.)
#   bash tools/gpu_stage6.sh stage-a   # copy pack a + init models, 100-step timing run of both
#   bash tools/gpu_stage6.sh train     # copy pack b, train both for the step count the timing allows
#   bash tools/gpu_stage6.sh unseen    # then configs/unseen_animals_stage6.yaml (1,200 steps) alone
# The starting weights are the models shipped before stage 6 (stage 3 of the default model and the
# baseline, stage 2 of unseen_animals), in git at commit daa775f. The script copies them from
# $INIT_FROM_ASSETS/assets/models (default: the checkout itself, which is right only at that commit):
#   git worktree add /tmp/before_stage6 daa775f && INIT_FROM_ASSETS=/tmp/before_stage6 bash tools/gpu_stage6.sh stage-a
# Outputs (weights, logs, metrics) land in $OUT when it is set.
set -uo pipefail
STAGE=${STAGE:-/tmp/prolab_stage6}
OUT=${OUT:-$STAGE/out}
TRAIN_SECONDS=${TRAIN_SECONDS:-400}   # wall time the step count is sized to
MAX_STEPS=${MAX_STEPS:-8000}
INIT_FROM_ASSETS=${INIT_FROM_ASSETS:-.}
export PYTHONUNBUFFERED=1 PROLAB_DATA=$STAGE/data
mkdir -p "$STAGE/data" "$STAGE/init" "$OUT"

train_one() {  # train_one <config name> <init model name> <tag> <extra args...>: one training, logged
  local name=$1 init=$2 tag=$3; shift 3
  python3 -m prolab train --config "configs/${name}_stage6.yaml" --no-progress \
    --set init_from="$STAGE/init/$init" --set data_cache_dir=null \
    --set out_dir="$STAGE/$tag/$name" "$@" > "$STAGE/$tag.$name.log" 2>&1
}

pair() {  # pair <tag> <extra args...>: the default model and the baseline at once; waits for both
  local tag=$1; shift
  train_one default_property default "$tag" "$@" &
  train_one baseline_category baseline_category "$tag" "$@" &
  wait
}

export_run() {  # export_run <config name>: weights, config and logs of a stage-6 run into $OUT
  tail -n 5 "$STAGE/stage6.$1.log"
  cp "$STAGE/stage6.$1.log" "$OUT/"
  # The label space is the init model's, unchanged by training.
  tar -C "$STAGE/stage6/$1" -cf "$OUT/$1.tar" --exclude=checkpoint --exclude=labelspace . && ls -la "$OUT/$1.tar"
}

case ${1:-} in
stage-a)
  nvidia-smi -L; python3 -c 'import torch; print("torch", torch.__version__, torch.cuda.get_device_name())'
  cp -r .devpack/a/. "$STAGE/data/"
  cp -r "$INIT_FROM_ASSETS/assets/models/default" "$INIT_FROM_ASSETS/assets/models/baseline_category" "$STAGE/init/"
  pair smoke --set steps=100 --set log_every=10 --set 'sources=[{name: msrc_v2, repeat: 3}, {name: coco128}]'
  tail -n 3 "$STAGE"/smoke.*.log
  python3 - "$STAGE" "$TRAIN_SECONDS" "$MAX_STEPS" <<'PY'
import json, sys
from pathlib import Path
stage, budget, cap = Path(sys.argv[1]), float(sys.argv[2]), int(sys.argv[3])
per_step = []
for m in ("default_property", "baseline_category"):
    rows = {r["step"]: r["elapsed_s"] for r in map(json.loads, (stage / "smoke" / m / "metrics.jsonl").read_text().splitlines())}
    per_step.append((rows[100] - rows[20]) / 80)  # crosses an epoch (85 steps): loader restarts count
steps = max(100, min(cap, int(budget / max(per_step) // 100 * 100)))
print("seconds per step (both at once):", per_step, "-> steps", steps)
(stage / "steps.txt").write_text(str(steps))
PY
  ;;
train)
  [ -d .devpack/b ] && cp -r .devpack/b/. "$STAGE/data/"
  steps=$(cat "$STAGE/steps.txt")
  echo "training $steps steps"
  pair stage6 --set steps="$steps" --set checkpoint_every=100000
  export_run default_property
  export_run baseline_category
  ;;
unseen)
  cp -r "$INIT_FROM_ASSETS/assets/models/unseen_animals" "$STAGE/init/"
  train_one unseen_animals unseen_animals stage6 --set checkpoint_every=100000
  export_run unseen_animals
  ;;
*) echo "usage: $0 stage-a|train|unseen" >&2; exit 2 ;;
esac
