#!/usr/bin/env bash
# Copy a finished training run into assets/models/<name>: weights, config, label space, the class
# mapping, and the run's exact settings, summary and loss log (the model card is written by hand).
#   bash tools/ship_model.sh runs/default_property default
set -euo pipefail
run=$1; dest=assets/models/$2
mkdir -p "$dest"
for f in model.safetensors config.json dataset_mapping.json train_config.json train_summary.json metrics.jsonl; do
  install -m 0644 "$run/$f" "$dest/$f"
done
rm -rf "$dest/labelspace"
if [ -d "$run/labelspace" ]; then cp -r "$run/labelspace" "$dest/labelspace"; chmod -R a+rX "$dest/labelspace"; fi
du -sh "$dest"
