"""Where CamVid's thin classes are lost: the training fit, and what a linear read-out of the decode head's
features can recover (issue 29, item 1).

    python -m bench.thin_probe [--model assets/models/default] [--reference assets/models/baseline_category]
                               [--train-images 120] [--steps 1500] [--json docs/results/thin_probe.json]

For each model (the property model and the category baseline trained with the same recipe):

1. **Training fit**: ``prolab.evaluate`` on the first ``--fit-images`` CamVid *train* images. A class the
   model misses on the images it trained on is not a generalisation gap.
2. **Linear probe**: the decode head's 64-d features (the input of its last 1x1 conv, at stride 4) are
   cached for ``--train-images`` train images and every val image, and a free 11-way linear classifier is
   fitted to them (cross-entropy at points drawn class-balanced at the labels' resolution, as
   :func:`prolab.scoring.prolab_point_loss` draws them), then scored on val like ``evaluate`` (scores
   upsampled bilinearly, argmax). If this read-out cannot find a class either, the features do not hold
   it and no change to the label space's rows or the last layer can.
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from bench.common import write_json
from prolab.assets import DEFAULT_MODEL_DIR

THIN = ("pole", "sign symbol", "pedestrian", "fence")


def decode_features(model, image: np.ndarray, size: int):
    """(64, h/4, w/4) input of the decode head's last 1x1 conv for ``image`` at short side ``size``."""
    from prolab.inference import _embed_at_size

    return _embed_at_size(model, image, size, "whole", 512, 341, 1, False, True)[1][0].float()


def cache_features(model, samples, size: int):
    import torch

    from prolab.data.dataset import read_index_png
    from prolab.images import load_image

    feats, labels = [], []
    for s in samples:
        feats.append(decode_features(model, load_image(s.image), size).half())
        labels.append(torch.from_numpy(read_index_png(s.label).astype(np.int64)))
    return feats, labels


def fit_probe(feats, labels, classes: int, steps: int, points: int = 4096, batch: int = 8,
              lr: float = 1e-3, seed: int = 0):
    """A free linear classifier (W, b) on cached features, cross-entropy at class-balanced points."""
    import torch
    import torch.nn.functional as F

    from prolab.scoring import gather_points, sample_label_points

    torch.manual_seed(seed)
    dim = feats[0].shape[0]
    w = torch.zeros(classes, dim, requires_grad=True)
    b = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=lr)
    for _ in range(steps):
        loss = 0.0
        for i in torch.randint(0, len(feats), (batch,)).tolist():
            y = labels[i][None]
            index, ok = sample_label_points(y, points, 0.5)
            x = gather_points(feats[i].float()[None], index, tuple(y.shape[-2:]))[ok]
            loss = loss + F.cross_entropy(x @ w.T + b, y.reshape(1, -1).gather(1, index)[ok])
        opt.zero_grad()
        (loss / batch).backward()
        opt.step()
    return w.detach(), b.detach()


def probe_iou(feats, labels, w, b, names: list[str]) -> dict:
    import torch
    import torch.nn.functional as F

    inter, union = np.zeros(len(names)), np.zeros(len(names))
    for f, y in zip(feats, labels):
        scores = torch.einsum("kc,chw->khw", w, f.float()) + b[:, None, None]
        pred = F.interpolate(scores[None], size=y.shape, mode="bilinear", align_corners=False)[0].argmax(0)
        valid = y != 255
        for c in range(len(names)):
            a, g = (pred == c) & valid, y == c
            inter[c] += int((a & g).sum())
            union[c] += int((a | g).sum())
    iou = inter / np.maximum(union, 1)
    return {"miou": round(100 * float(iou.mean()), 2), "per_class": {n: round(100 * float(v), 2) for n, v in zip(names, iou)}}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=str(DEFAULT_MODEL_DIR))
    p.add_argument("--reference", default=str(DEFAULT_MODEL_DIR.parent / "baseline_category"))
    p.add_argument("--data-root", default=None)
    p.add_argument("--fit-images", type=int, default=40, help="first N CamVid train images for the training fit")
    p.add_argument("--train-images", type=int, default=120, help="first N CamVid train images for the probe")
    p.add_argument("--val-limit", type=int, default=None)
    p.add_argument("--steps", type=int, default=1500)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default="docs/results/thin_probe.json")
    args = p.parse_args(argv)

    import torch

    from prolab.data.readers import read_source
    from prolab.evaluate import evaluate, load_mapping
    from prolab.model import PropertySegmenter

    torch.set_num_threads(args.threads)
    t0 = time.time()
    train = read_source("camvid", args.data_root, "train", teacher=False)
    val = read_source("camvid", args.data_root, "val", teacher=False)
    val_samples = val.samples[:args.val_limit] if args.val_limit else val.samples
    result = {"fit_images": args.fit_images, "train_images": args.train_images, "val_images": len(val_samples),
              "steps": args.steps, "models": {}}
    for path in (args.model, args.reference):
        model = PropertySegmenter.from_pretrained(path).eval()
        size = model.config.input_size
        fit = evaluate(model, train, size=size, mapping=load_mapping(path), limit=args.fit_images)
        train_feats, train_labels = cache_features(model, train.samples[:args.train_images], size)
        val_feats, val_labels = cache_features(model, val_samples, size)
        w, b = fit_probe(train_feats, train_labels, len(val.classes), args.steps)
        result["models"][path] = {
            "supervision": model.config.supervision, "size": size,
            "train_fit": {"miou": round(100 * fit["miou"], 2),
                          "per_class": {c: (None if v is None else round(100 * v, 2))
                                        for c, v in fit["per_class_iou"].items()}},
            "probe_val": probe_iou(val_feats, val_labels, w, b, list(val.classes)),
            "probe_train": probe_iou(train_feats[:args.fit_images], train_labels[:args.fit_images], w, b,
                                     list(val.classes)),
        }
        _print(path, result["models"][path])
    result["seconds"] = round(time.time() - t0, 1)
    if args.json:
        write_json(args.json, result)
    return result


def _print(path: str, r: dict) -> None:
    def thin(d):
        return ", ".join(f"{c} {d['per_class'][c]}" for c in THIN)

    print(f"{path} ({r['supervision']}, size {r['size']})")
    print(f"  training fit (train images): mIoU {r['train_fit']['miou']:.2f}; {thin(r['train_fit'])}")
    print(f"  linear probe on the decode features, val: mIoU {r['probe_val']['miou']:.2f}; {thin(r['probe_val'])}")
    print(f"  linear probe, on its own train images: mIoU {r['probe_train']['miou']:.2f}; {thin(r['probe_train'])}",
          flush=True)


if __name__ == "__main__":
    main()
