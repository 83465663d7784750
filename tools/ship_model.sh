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
# What ships beside the weights is tied to them: score offsets name the weights they were fitted for, and the
# app's shipped UMAP map of the model's sentences is keyed by them (a grounded or edited row changes it).
echo "next: python -m prolab calibrate --model $dest --dataset camvid --dataset msrc_v2 (or copy the run's score_offsets.json)"
echo "      python -m tools.make_layouts (the map of the model's sentences; tests/test_layouts.py checks it)"
