"""Robustness to another camera: mIoU on val re-rendered by fixed simulated cameras.

    python -m bench.camera_shift [--model DIR ...] [--dataset camvid ...] [--preset NAME ...] [--limit N]
                                 [--threads 2] [--json docs/results/camera_shift.json]
                                 [--examples docs/figures/camera_shift_examples.jpg]
    python -m bench.camera_shift --report docs/results/camera_shift.json

Each model is evaluated (:func:`prolab.evaluate.evaluate`, its default setting, its own classes) on each
dataset's val split as it is and re-rendered by every :data:`prolab.data.transforms.CAMERA_PRESETS`
camera (white balance, tone curve, sensor resolution, blur, noise, JPEG, vignetting, alone and combined;
the labels are unchanged). A proxy for images from another camera or drive, which the shared data does
not hold: what a model loses there is what camera-shift augmentation (``camera_shift`` in a training
config) is meant to win back. Run from the repository root.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import time
import zlib
from functools import partial
from pathlib import Path

import torch

from bench.common import add_report_option, machine, print_reports, write_json
from prolab.assets import DEFAULT_MODEL_DIR
from prolab.data.readers import data_root, read_shared
from prolab.data.transforms import CAMERA_PRESETS, CameraLook, render_uint8
from prolab.evaluate import evaluate, load_mapping
from prolab.model import PropertySegmenter

THIN = ("pole", "sign symbol", "pedestrian", "fence", "bicyclist")
CLEAN = "as recorded"


def rendered(image, look: CameraLook):
    """``image`` through ``look``, its noise seeded by the image itself (independent noise per image, the same
    every run)."""
    return render_uint8(image, dataclasses.replace(look, seed=zlib.crc32(image.tobytes())))


def measure(model, source, mapping, look: CameraLook | None, limit: int | None) -> dict:
    t = time.perf_counter()
    transform = None if look is None else partial(rendered, look=look)
    res = evaluate(model, source, mapping=mapping, limit=limit, image_transform=transform)
    labelled = [c for c, n in res["per_class_pixels"].items() if n > 0]
    # evaluate's mIoU skips a class that is neither labelled nor predicted (MSRC-v2 val's horse) and counts
    # it as 0 once a model predicts a pixel of it: the mean over the labelled classes compares models
    return {"images": res["images"], "miou": res["miou"], "per_class_iou": res["per_class_iou"],
            "labelled_classes": len(labelled),
            "miou_labelled": sum(res["per_class_iou"][c] or 0.0 for c in labelled) / max(1, len(labelled)),
            "seconds": time.perf_counter() - t}


def markdown(results: dict) -> str:
    """One table per dataset: a row per camera, a column pair (mIoU over the classes with val pixels, change)
    per model, then the thin classes of the first model; the last row is the mean over the cameras."""
    lines = []
    for ds, per_model in results.items():
        models = list(per_model)
        cams = list(per_model[models[0]])
        first = per_model[models[0]]
        thin = [c for c in THIN if c in first[CLEAN]["per_class_iou"]]
        head = "| camera |" + "".join(f" {Path(m).name} mIoU | change |" for m in models)
        head += "".join(f" {c} ({Path(models[0]).name}) |" for c in thin)
        n = first[CLEAN]["labelled_classes"]
        lines += [f"**{ds}** (mIoU over the {n} classes with val pixels)", "", head, "|---|" + "---|---|" * len(models) + "---|" * len(thin)]
        for cam in cams:
            row = f"| {cam} |"
            for m in models:
                r, base = per_model[m][cam], per_model[m][CLEAN]
                row += f" {100 * r['miou_labelled']:.2f} | {100 * (r['miou_labelled'] - base['miou_labelled']):+.2f} |"
            ious = [first[cam]["per_class_iou"].get(c) for c in thin]
            row += "".join(" - |" if v is None else f" {100 * v:.1f} |" for v in ious)
            lines.append(row)
        mean = "| mean over the other cameras |"
        for m in models:
            drops = [per_model[m][c]["miou_labelled"] - per_model[m][CLEAN]["miou_labelled"] for c in cams if c != CLEAN]
            others = [per_model[m][c]["miou_labelled"] for c in cams if c != CLEAN]
            if drops:
                mean += f" {100 * sum(others) / len(others):.2f} | {100 * sum(drops) / len(drops):+.2f} |"
            else:
                mean += " - | - |"
        lines += [mean + " |" * len(thin), ""]
    return "\n".join(lines)


def example_grid(image_path: Path, out: Path, presets: dict[str, CameraLook], width: int = 320) -> None:
    """One image rendered by each camera, captioned, in a grid (what the cameras look like)."""
    import numpy as np
    from PIL import Image, ImageDraw

    from prolab.images import load_image

    img = load_image(image_path)
    h = round(img.shape[0] * width / img.shape[1])
    small = np.asarray(Image.fromarray(img).resize((width, h), Image.BILINEAR))
    tiles = [(CLEAN, small)] + [(name, render_uint8(small, look)) for name, look in presets.items()]
    cols = 4
    rows = (len(tiles) + cols - 1) // cols
    sheet = Image.new("RGB", (cols * width, rows * (h + 18)), "white")
    draw = ImageDraw.Draw(sheet)
    for i, (name, tile) in enumerate(tiles):
        x, y = (i % cols) * width, (i // cols) * (h + 18)
        sheet.paste(Image.fromarray(tile), (x, y + 18))
        draw.text((x + 4, y + 3), name[:48], fill="black")
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out, quality=85)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, action="append", help="model folders (default: the shipped model)")
    ap.add_argument("--dataset", action="append", help="shared datasets (default camvid)")
    ap.add_argument("--preset", action="append", choices=sorted(CAMERA_PRESETS), help="cameras (default all)")
    ap.add_argument("--data-root")
    ap.add_argument("--limit", type=int, help="first N images of each val split (a quick check)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=Path("docs/results/camera_shift.json"), help="'' for none")
    ap.add_argument("--examples", type=Path, help="also write a sheet of an example image under each camera")
    add_report_option(ap)
    args = ap.parse_args(argv)
    if print_reports(args.report, markdown):
        return {}
    torch.set_num_threads(args.threads)
    presets = {name: CAMERA_PRESETS[name] for name in (args.preset or CAMERA_PRESETS)}
    if args.examples:
        from prolab.assets import EXAMPLES_DIR

        example_grid(Path(EXAMPLES_DIR) / "coffee.png", args.examples, presets)
    root = data_root(args.data_root)
    results: dict[str, dict] = {}
    for model_dir in args.model or [DEFAULT_MODEL_DIR]:
        model = PropertySegmenter.from_pretrained(model_dir)
        mapping = load_mapping(model_dir)
        for name in args.dataset or ["camvid"]:
            source = read_shared(root, name, "val")
            rows = results.setdefault(f"{name}/val", {}).setdefault(str(model_dir), {})
            for cam, look in [(CLEAN, None), *presets.items()]:
                rows[cam] = measure(model, source, mapping, look, args.limit)
                print(f"{Path(model_dir).name:24s} {name:8s} {cam:44s} mIoU {100 * rows[cam]['miou']:6.2f} "
                      f"({100 * rows[cam]['miou_labelled']:.2f} over the labelled classes)", flush=True)
    out = {"models": [str(m) for m in args.model or [DEFAULT_MODEL_DIR]], "threads": args.threads,
           "limit": args.limit, "load_average": list(os.getloadavg()), "machine": machine(),
           "presets": {name: dataclasses.asdict(look) for name, look in presets.items()},
           "results": results}
    print(markdown(results))
    if args.json and str(args.json) not in ("", "."):
        write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
