"""Copy a model folder with its weights replaced by a weighted average of two fine-tunes of one model.

    python -m tools.average_weights --model runs/camera_noce_stage15 --model runs/camera_noce_stage16 \
        --weight 0.5 --out runs/soup_15_16

Two fine-tunes that start from the same weights (one continuing the other, or two recipes from one start)
usually stay in one basin of the loss, and the average of their weights ("model soup", Wortsman et al. 2022)
scores between or above them at no inference cost: it is a way to keep most of what a second fine-tune gained
on one dataset without what it lost on another. Both folders must share the config, the label space and every
tensor's name and shape; the output copies the first folder (label space, class mapping, training records),
gets the averaged ``model.safetensors``, loses ``score_offsets.json`` (fitted for other weights: run
``prolab calibrate``) and records what it was made from in ``averaged_from.json``.
"""
from __future__ import annotations

import argparse
import filecmp
import json
import shutil
from pathlib import Path

import torch

from prolab.calibration import OFFSETS_FILE


def average_state(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor],
                  weight: float) -> dict[str, torch.Tensor]:
    """``(1 - weight) * first + weight * second`` for floating tensors; other tensors (counters) are the
    first's. Raises ``ValueError`` when the two do not have the same names and shapes."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight must be in [0, 1], got {weight}.")
    if first.keys() != second.keys():
        diff = sorted(first.keys() ^ second.keys())
        raise ValueError(f"the weights differ in {len(diff)} tensor names, e.g. {diff[:3]}.")
    out = {}
    for name, a in first.items():
        b = second[name]
        if a.shape != b.shape or a.dtype != b.dtype:
            raise ValueError(f"{name}: {tuple(a.shape)} {a.dtype} vs {tuple(b.shape)} {b.dtype}.")
        out[name] = torch.lerp(a, b, weight) if a.is_floating_point() else a.clone()
    return out


def _same_tree(a: Path, b: Path) -> bool:
    cmp = filecmp.dircmp(a, b)
    if cmp.left_only or cmp.right_only or cmp.funny_files:
        return False
    _, mismatch, errors = filecmp.cmpfiles(a, b, cmp.common_files, shallow=False)
    return not mismatch and not errors and all(_same_tree(a / d, b / d) for d in cmp.common_dirs)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", action="append", required=True, help="model folder; give exactly two")
    p.add_argument("--weight", type=float, default=0.5, help="share of the second model (0: the first's weights)")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)
    if len(args.model) != 2:
        raise SystemExit("give --model twice.")

    from safetensors.torch import save_file

    from prolab.errors import ProLabError
    from prolab.model import PropertySegmenter
    from prolab.model.config import CONFIG_FILE
    from prolab.model.segmenter import WEIGHTS_FILE, _read_weights

    first, second = (Path(m) for m in args.model)
    out = Path(args.out)
    if out.resolve() in (first.resolve(), second.resolve()):
        raise SystemExit("--out must be a new folder.")
    if json.loads((first / CONFIG_FILE).read_text()) != json.loads((second / CONFIG_FILE).read_text()):
        raise SystemExit(f"{first} and {second} have different {CONFIG_FILE}s.")
    if (first / "labelspace").is_dir() != (second / "labelspace").is_dir() or (
            (first / "labelspace").is_dir() and not _same_tree(first / "labelspace", second / "labelspace")):
        raise SystemExit(f"{first} and {second} have different label spaces.")
    try:  # the loader's reader: a corrupt or truncated file gets its message, not a safetensors trace
        state = average_state(_read_weights(first / WEIGHTS_FILE), _read_weights(second / WEIGHTS_FILE), args.weight)
    except (ValueError, ProLabError) as exc:
        raise SystemExit(f"cannot average {first} and {second}: {exc}") from None
    shutil.copytree(first, out, dirs_exist_ok=True, ignore=shutil.ignore_patterns("checkpoint"))
    (out / OFFSETS_FILE).unlink(missing_ok=True)
    save_file(state, str(out / WEIGHTS_FILE))
    (out / "averaged_from.json").write_text(json.dumps(
        {"models": [str(first), str(second)], "weight_of_second": args.weight}, indent=1) + "\n")
    PropertySegmenter.from_pretrained(out)  # the copy loads like any model folder
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
