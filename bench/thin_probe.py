"""Where CamVid's thin classes are lost: the training fit, and what a linear read-out of the decode head's
features can recover (issue 29, item 1).

    python -m bench.thin_probe [--model assets/models/default] [--reference assets/models/baseline_category]
                               [--train-images 120] [--steps 500] [--json docs/results/thin_probe.json]

For each model (the property model and the category baseline trained with the same recipe):

1. **Training fit**: ``prolab.evaluate`` on the first ``--fit-images`` CamVid *train* images. A class the
   model misses on the images it trained on is not a generalisation gap.
2. **Linear probe**: the decode head's 64-d features (the input of its last 1x1 conv, at stride 4) are
   cached for ``--train-images`` train images and every val image, and a free 11-way linear classifier is
   fitted to them (cross-entropy at points drawn class-balanced at the labels' resolution, as
   :func:`prolab.scoring.prolab_point_loss` draws them), then scored on val like ``evaluate`` (scores
   upsampled bilinearly, argmax). If this read-out cannot find a class either, the features do not hold
   it and no change to the label space's rows or the last layer can.
3. **Through the property rows** (property models): the same features, but the read-out is the model's own
   last 1x1 conv (64 -> D, started from its weights) followed by the fixed ProLab scoring against the
   CamVid classes' multi-hot rows, re-fitted with the point loss (:func:`prolab.scoring.prolab_point_loss`)
   once with the cosine loss alone (the shipped recipe's signal) and once with the class-score
   cross-entropy added (``class_ce_weight`` 0.5). The gap between 2 and 3 is what the rows cost.
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from bench.common import write_json
from prolab.assets import DEFAULT_MODEL_DIR

THIN = ("pole", "sign symbol", "pedestrian", "fence")


def decode_features(model, image: np.ndarray, size: int):
    """(64, h/4, w/4) input of the decode head's last 1x1 conv for ``image`` at short side ``size``."""
    from prolab.inference import embed_image_factored

    _, factors = embed_image_factored(model, image, size=size, mode="whole")
    return factors.features.float()


def cache_features(model, samples, size: int):
    import torch

    from prolab.data.dataset import read_index_png
    from prolab.images import load_image

    feats, labels = [], []
    for s in samples:
        feats.append(decode_features(model, load_image(s.image), size).half())
        labels.append(torch.from_numpy(read_index_png(s.label).astype(np.int64)))
    return feats, labels


def fit_readout(feats, labels, w0, b0, steps: int, loss_fn, points: int = 4096, batch: int = 8,
                lr: float = 1e-3, seed: int = 0):
    """A linear read-out ``x -> w x + b`` (started from ``w0``, ``b0``) fitted on cached feature maps:
    features gathered at points drawn class-balanced at the labels' resolution (as
    :func:`prolab.scoring.prolab_point_loss` draws them), ``loss_fn(outputs (N, .), labels (N,))``."""
    import torch

    from prolab.scoring import point_samples

    torch.manual_seed(seed)
    w, b = w0.clone().requires_grad_(), b0.clone().requires_grad_()
    opt = torch.optim.Adam([w, b], lr=lr)
    for _ in range(steps):
        drawn = [point_samples(feats[i].float()[None], labels[i][None], points, 0.5)
                 for i in torch.randint(0, len(feats), (batch,)).tolist()]
        x, y = torch.cat([v for v, _ in drawn]), torch.cat([t for _, t in drawn])
        loss = loss_fn(x @ w.T + b, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return w.detach(), b.detach()


def fit_probe(feats, labels, classes: int, steps: int, **kw):
    """A free linear classifier (W, b) on cached features, cross-entropy at class-balanced points."""
    import torch
    import torch.nn.functional as F

    dim = feats[0].shape[0]
    return fit_readout(feats, labels, torch.zeros(classes, dim), torch.zeros(classes), steps, F.cross_entropy, **kw)


def fit_property_head(feats, labels, conv, centers, rows, temperature: float, steps: int,
                      class_ce_weight: float, **kw):
    """The model's last 1x1 conv (weight (D, 64), bias (D,)) re-fitted through the fixed property scoring
    against ``rows`` (the dataset classes' multi-hot rows) with :func:`prolab.scoring.pixel_loss`, the
    per-point loss of :func:`prolab.scoring.prolab_point_loss`."""
    from prolab.scoring import pixel_loss

    def loss_fn(emb, y):
        return pixel_loss(emb, y, centers, rows, temperature, class_ce_weight)

    w0 = conv.weight.detach().reshape(conv.out_channels, -1)
    return fit_readout(feats, labels, w0, conv.bias.detach(), steps, loss_fn, **kw)


def property_readout(w, b, centers, rows, temperature: float):
    """Class scores (C, h, w) of a feature map through embeddings ``w f + b`` and the property rows."""
    import torch

    from prolab.scoring import property_class_scores

    def scores(f):
        emb = torch.einsum("dc,chw->dhw", w, f) + b[:, None, None]
        return property_class_scores(emb[None], centers, rows, temperature)[0]

    return scores


def probe_iou(feats, labels, w, b, names: list[str], scores_fn=None) -> dict:
    """Per-class IoU of the argmax of a read-out's scores, upsampled to each label map: ``w f + b`` (a
    linear classifier) or ``scores_fn(f)``."""
    import torch
    import torch.nn.functional as F

    from prolab.evaluate import ConfusionMatrix

    cm = ConfusionMatrix(len(names))
    for f, y in zip(feats, labels):
        scores = (scores_fn(f.float()) if scores_fn is not None
                  else torch.einsum("kc,chw->khw", w, f.float()) + b[:, None, None])
        pred = F.interpolate(scores[None], size=y.shape, mode="bilinear", align_corners=False)[0].argmax(0)
        cm.update(pred.numpy(), y.numpy())
    return percent(cm.metrics(names))


def percent(metrics: dict) -> dict:
    """mIoU and per-class IoU of :meth:`prolab.evaluate.ConfusionMatrix.metrics` in percent (None: a class
    in neither the ground truth nor the predictions)."""
    return {"miou": round(100 * metrics["miou"], 2),
            "per_class": {c: (None if v is None else round(100 * v, 2)) for c, v in metrics["per_class_iou"].items()}}


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=str(DEFAULT_MODEL_DIR))
    p.add_argument("--reference", default=str(DEFAULT_MODEL_DIR.parent / "baseline_category"))
    p.add_argument("--data-root", default=None)
    p.add_argument("--fit-images", type=int, default=40, help="first N CamVid train images for the training fit")
    p.add_argument("--train-images", type=int, default=120, help="first N CamVid train images for the probe")
    p.add_argument("--val-limit", type=int, default=None)
    p.add_argument("--steps", type=int, default=500, help="Adam steps of each read-out (8 images x 4,096 points)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default="docs/results/thin_probe.json")
    args = p.parse_args(argv)

    import torch

    from prolab.data.readers import read_source
    from prolab.evaluate import class_indices, evaluate, load_mapping
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
        entry = result["models"][path] = {
            "supervision": model.config.supervision, "size": size,
            "train_fit": percent(fit),
            "probe_val": probe_iou(val_feats, val_labels, w, b, list(val.classes)),
            "probe_train": probe_iou(train_feats[:args.fit_images], train_labels[:args.fit_images], w, b,
                                     list(val.classes)),
        }
        if model.config.supervision == "property":
            space, conv = model.label_space, model.decode_head.classifier
            rows = torch.as_tensor(space.class_matrix, dtype=torch.float32)[
                class_indices(space.class_names, val.classes, val.label_key, load_mapping(path))]
            centers = torch.as_tensor(space.centers, dtype=torch.float32)
            temperature = model.config.temperature
            shipped = property_readout(conv.weight.detach().reshape(conv.out_channels, -1), conv.bias.detach(),
                                       centers, rows, temperature)
            entry["rows_shipped_head_val"] = probe_iou(val_feats, val_labels, None, None, list(val.classes), shipped)
            for name, ce in (("rows_refit_cosine", 0.0), ("rows_refit_cosine_ce", 0.5)):
                rw, rb = fit_property_head(train_feats, train_labels, conv, centers, rows, temperature,
                                           args.steps, ce)
                readout = property_readout(rw, rb, centers, rows, temperature)
                entry[name + "_val"] = probe_iou(val_feats, val_labels, None, None, list(val.classes), readout)
                entry[name + "_train"] = probe_iou(train_feats[:args.fit_images], train_labels[:args.fit_images],
                                                   None, None, list(val.classes), readout)
        _print(path, entry)
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
    print(f"  linear probe, on its own train images: mIoU {r['probe_train']['miou']:.2f}; {thin(r['probe_train'])}")
    for key, label in (("rows_shipped_head_val", "property rows, the model's own head, val"),
                       ("rows_refit_cosine_val", "property rows, head re-fitted (cosine loss), val"),
                       ("rows_refit_cosine_train", "property rows, head re-fitted (cosine loss), train"),
                       ("rows_refit_cosine_ce_val", "property rows, head re-fitted (cosine + CE), val"),
                       ("rows_refit_cosine_ce_train", "property rows, head re-fitted (cosine + CE), train")):
        if key in r:
            print(f"  {label}: mIoU {r[key]['miou']:.2f}; {thin(r[key])}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
