"""Batch prediction: images in -> index masks, coloured overlays and property heatmaps out.

For every input ``<stem>`` the output folder gets ``<stem>_mask.png`` (class indices, 255 =
unknown; 16-bit when there are more than 255 classes), ``<stem>_overlay.png`` (the classes'
colours blended over the image) and, for property models, ``<stem>_property_<rank>_<k>.png``:
heatmaps of the ``top_properties`` properties with the highest mean activation. A
``predictions.json`` lists the classes, per image the class pixel shares and the properties
shown, and under ``"errors"`` the images that could not be read (the batch goes on without them).
"""
from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, PngImagePlugin

from prolab.colorize import blend, colorize, heatmap, make_palette, resize_map
from prolab.data.readers import IMAGE_EXTS
from prolab.descriptions import write_text_atomic
from prolab.distributed import DistInfo, gather_json, shard
from prolab.errors import ProLabError
from prolab.frames import FrameSegmenter
from prolab.images import load_image
from prolab.novel_prior import PriorSettings
from prolab.quality import default_guided


def collect_images(inputs: list[str | os.PathLike]) -> list[Path]:
    """Files given directly plus the images inside given folders (sorted); a clear error if none."""
    out: list[Path] = []
    for item in inputs:
        p = Path(item)
        if p.is_dir():
            out += sorted(f for f in p.iterdir() if f.suffix.lower() in IMAGE_EXTS and f.is_file())
        elif p.is_file():
            out.append(p)
        else:
            raise ProLabError(f"Input not found: {p}")
    if not out:
        raise ProLabError("No images found in the inputs.")
    return out


def unknown_value(num_classes: int) -> int:
    """The mask value of unknown pixels: 255 in 8-bit masks (up to 255 classes, indices 0-254), else
    65535 in 16-bit ones."""
    return 255 if num_classes <= 255 else 65535


def save_mask(labels: np.ndarray, class_names: list[str], path: Path) -> Path:
    """Index mask PNG (8-bit, or 16-bit above 255 classes; unknown = :func:`unknown_value`), with the
    class names and the unknown value as PNG text chunks."""
    unknown = unknown_value(len(class_names))
    lab = np.where(labels < 0, unknown, labels).astype(np.uint8 if unknown == 255 else np.uint16)
    info = PngImagePlugin.PngInfo()
    info.add_text("classes", json.dumps(list(class_names), ensure_ascii=False))
    info.add_text("unknown", str(unknown))
    Image.fromarray(lab).save(path, pnginfo=info)
    return Path(path)


def predict_images(model, images: list[Path], out_dir: str | os.PathLike, label_space=None,
                   size: int | None = None, mode: Literal["whole", "slide"] = "whole",
                   crop: int = 512, stride: int = 341, flip: bool = False, scales: tuple[float, ...] = (1.0,),
                   top_properties: int = 5, alpha: float = 0.5,
                   unknown_threshold: float | None = None, palette=None,
                   on_error: Callable[[Path, str], None] | None = None,
                   prior: PriorSettings | None = PriorSettings(), dist: DistInfo | None = None,
                   guided: bool | None = None) -> dict:
    """Run ``model`` on ``images`` and write masks, overlays and heatmaps into ``out_dir``.

    ``label_space`` (property models) replaces the model's own classes, e.g. an edited or
    projected space. An image that cannot be read is reported under ``"errors"`` (path -> message)
    and the batch goes on. Classes of ``label_space`` the model never trained on get the open-set
    credit of :mod:`prolab.novel_prior` (``prior=None``: off). Returns the summary that is also
    written to ``predictions.json``.

    ``dist`` (:func:`prolab.distributed.init_distributed`, under torchrun): this process segments its
    share of the images (images with the same file stem, whose outputs share names, go to one process), so
    that each image is written once; every process returns the summary of all the images, which the main
    process writes. ``guided``: upsample the class scores with the image as guide
    (:func:`prolab.inference.segment`); None: as the default quality step does
    (:func:`prolab.quality.default_guided`).
    """
    dist = dist or DistInfo()
    segmenter = FrameSegmenter(model, label_space, dict(size=size, mode=mode, crop=crop, stride=stride, flip=flip,
                                                        scales=scales),
                               prior=prior, unknown_threshold=unknown_threshold,
                               guided=default_guided(guided))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    prop, space, classes = segmenter.is_property, segmenter.space, segmenter.class_names
    palette = make_palette(len(classes), palette)
    summary = {"classes": classes, "supervision": model.config.supervision, "images": {}, "errors": {}}
    for path in shard(images, dist, key=lambda p: Path(p).stem):
        try:
            image = load_image(path)
        except ProLabError as exc:  # one bad file must not cost the rest of the batch
            summary["errors"][str(path)] = str(exc)
            if on_error is not None:
                on_error(path, str(exc))
            continue
        result = segmenter(image)
        labels, act = result.labels, result.activations
        stem = path.stem
        save_mask(labels, classes, out / f"{stem}_mask.png")
        Image.fromarray(blend(image, colorize(labels, palette), alpha)).save(out / f"{stem}_overlay.png")
        ids, counts = np.unique(labels, return_counts=True)
        entry = {"mask": f"{stem}_mask.png", "overlay": f"{stem}_overlay.png",
                 "classes": {("unknown" if i < 0 else classes[i]): round(float(c) / labels.size, 5)
                             for i, c in sorted(zip(ids, counts), key=lambda t: -t[1])},
                 "properties": []}
        if prop and top_properties > 0:
            act = act.numpy()  # K h w
            order = np.argsort(-act.mean(axis=(1, 2)))[:top_properties]
            for rank, k in enumerate(order, 1):
                name = f"{stem}_property_{rank}_{int(k)}.png"
                hm = heatmap(resize_map(act[k], image.shape[:2]), 0.0, 1.0)
                Image.fromarray(hm).save(out / name)
                entry["properties"].append({"index": int(k), "name": space.property_names[k],
                                            "mean_activation": round(float(act[k].mean()), 5),
                                            "heatmap": name})
        summary["images"][str(path)] = entry
    if dist.world > 1:  # every process's images, in the order given
        parts = gather_json(summary, dist)
        for key in ("images", "errors"):
            done = {k: v for part in parts for k, v in part[key].items()}
            summary[key] = {str(p): done[str(p)] for p in images if str(p) in done}
    if dist.main:
        write_text_atomic(out / "predictions.json", json.dumps(summary, indent=1, ensure_ascii=False) + "\n")
    return summary
