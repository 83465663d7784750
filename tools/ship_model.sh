#!/usr/bin/env bash
# Copy a finished training run into assets/models/<name>: weights, config, label space, the class
# mapping, and the run's exact settings, summary and loss log (the model card is written by hand).
# An optional third argument sets the model's default inference short side (config.json input_size;
# otherwise the run's: a fine-tune keeps its starting model's, a new model takes the config's input_size or
# its short side), e.g. one chosen on the val splits.
#   bash tools/ship_model.sh runs/default_property default [416]
set -euo pipefail
run=$1; dest=assets/models/$2; size=${3:-}
mkdir -p "$dest"
for f in model.safetensors config.json dataset_mapping.json train_config.json train_summary.json metrics.jsonl; do
  install -m 0644 "$run/$f" "$dest/$f"
done
rm -rf "$dest/labelspace"
if [ -d "$run/labelspace" ]; then cp -r "$run/labelspace" "$dest/labelspace"; chmod -R a+rX "$dest/labelspace"; fi
if [ -n "$size" ]; then
  python -c 'import json, sys
p, size = sys.argv[1], int(sys.argv[2])
assert size % 32 == 0, "input size must be a multiple of 32"
cfg = json.load(open(p)); cfg["input_size"] = size
open(p, "w").write(json.dumps(cfg, indent=1) + "\n")' "$dest/config.json" "$size"
fi
du -sh "$dest"
