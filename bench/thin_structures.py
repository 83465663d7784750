"""Why the property model misses CamVid's thin classes (pole, sign symbol, pedestrian, fence).

    python -m bench.thin_structures [--model assets/models/default] [--data-root DIR] [--limit N]
                                    [--size 416] [--json docs/results/thin_structures.json]

Prints four groups of numbers (issue 29, item 1):

1. **Label space**: each thin class's properties in the model's label space, the cosine of its multi-hot
   with every other class of the union space (the nearest five) and with CamVid's other classes, and the
   share of its properties another class also has (containment): a class whose multi-hot lies inside a
   bigger class's can never out-score it on a pixel whose activations match both.
2. **Labels and balance** (CamVid train, as the trainer sees it): each class's share of the labelled pixels
   and of the images; the share of its pixels (at the training short side 352) that keep their class when the
   labels are nearest-sampled to the stride-4 grid of a loss at the output resolution (stages 1-5) and back.
3. **What the model predicts** on CamVid val (the evaluation's scorer, :func:`prolab.evaluate.make_scorer`):
   each thin class's confusion row, how often its own score ranks first / second on its pixels, and the
   margin to the winner. These need every class's score at every pixel, so the scores are upsampled
   bilinearly here; ``prolab evaluate``'s default step upsamples with the image as guide, so its IoUs differ
   a little from this section's.
4. **Reachability**: the class's IoU when a constant is added to its score (best constant over a sweep:
   the calibration gap, an oracle tuned on val, not a method), its IoU among its own pixels and those the
   model gives to its main confuser only, and the same numbers with the plain ProLab property scores
   (no alignment with the trained classes) and with each class's row replaced by the mean activations of its
   CamVid train pixels (``--means-images``; the best a re-weighting of the rows could reach).
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

from bench.common import write_json
from prolab.assets import DEFAULT_MODEL_DIR

THIN = ("pole", "sign symbol", "pedestrian", "fence")
BIASES = np.round(np.arange(0.0, 0.301, 0.01), 3)


def label_space_overlap(space, camvid_rows: dict[str, int]) -> dict:
    """Section 1: multi-hot cosines and containment of each thin class (in the model's union space)."""
    m = space.class_matrix > 0
    mf = m.astype(np.float64)
    norms = np.sqrt(mf.sum(1))
    cos = (mf @ mf.T) / np.maximum(norms[:, None] * norms[None, :], 1e-9)
    names = space.class_names
    out = {}
    for cls in THIN:
        i = camvid_rows[cls]
        props = np.where(m[i])[0]
        order = [j for j in np.argsort(-cos[i]) if j != i][:5]
        shared = {names[j]: int((m[i] & m[j]).sum()) for j in order}
        out[cls] = {
            "union_class": names[i],
            "properties": int(len(props)),
            "property_names": [space.property_names[p] for p in props],
            "property_sharers": {space.property_names[p]: int(m[:, p].sum()) - 1 for p in props},
            "nearest_union": {names[j]: round(float(cos[i, j]), 3) for j in order},
            "shared_with_nearest": shared,
            "camvid_cosines": {c: round(float(cos[i, r]), 3) for c, r in camvid_rows.items() if c != cls},
            "max_containment": round(float(max((m[i] & m[j]).sum() / max(1, m[i].sum())
                                               for j in range(len(names)) if j != i)), 3),
        }
    return out


def label_statistics(source, short_side: int = 352, stride: int = 4) -> dict:
    """Section 2: pixel and image shares per CamVid class and what a stride-4 label grid keeps of each."""
    import torch
    import torch.nn.functional as F

    from prolab.data.dataset import read_index_png

    n = len(source.classes)
    pixels = np.zeros(n, np.int64)
    images = np.zeros(n, np.int64)
    kept = np.zeros(n, np.float64)
    at_train = np.zeros(n, np.int64)
    for s in source.samples:
        lab = read_index_png(s.label)
        counts = np.bincount(lab.ravel(), minlength=256)[:n]
        pixels += counts
        images += counts > 0
        h, w = lab.shape
        scale = short_side / min(h, w)
        size = (round(h * scale), round(w * scale))
        t = torch.from_numpy(lab)[None, None].float()
        full = F.interpolate(t, size=size, mode="nearest")  # the trainer's resize of the label
        low = F.interpolate(full, size=(size[0] // stride, size[1] // stride), mode="nearest")
        back = F.interpolate(low, size=size, mode="nearest")  # what a stride-4 label grid can represent
        full, back = full.long().ravel().numpy(), back.long().ravel().numpy()
        at_train += np.bincount(full, minlength=256)[:n]
        kept += np.bincount(full[full == back], minlength=256)[:n]
    total = pixels.sum()
    return {c: {"pixel_share_pct": round(100 * pixels[i] / total, 3),
                "images_with_class": int(images[i]), "images": len(source.samples),
                "stride4_kept_pct": round(100 * kept[i] / max(1, at_train[i]), 1)}
            for i, c in enumerate(source.classes)}


def _iou(pred: np.ndarray, gt: np.ndarray, c: int) -> float:
    valid = gt != 255
    tp = np.sum((pred == c) & (gt == c))
    union = np.sum(((pred == c) | (gt == c)) & valid)
    return float(tp / union) if union else float("nan")


def model_diagnosis(model, source, size: int, limit: int | None, means: np.ndarray | None = None) -> dict:
    """Sections 3 and 4: predictions on the thin classes' pixels, with and without the alignment, and (with
    ``means``, (C, K) mean activations of each class's training pixels) with those means as class rows."""
    import torch
    import torch.nn.functional as F

    from prolab.class_scorer import ClassScorer
    from prolab.data.dataset import read_index_png
    from prolab.evaluate import load_mapping, restrict_space
    from prolab.images import load_image
    from prolab.inference import embed_image_factored

    classes = source.classes
    n = len(classes)
    mapping = load_mapping(model.source_dir if hasattr(model, "source_dir") else DEFAULT_MODEL_DIR)
    space = restrict_space(model.label_space, classes, source.label_key, mapping)
    scorers = {"evaluate (aligned)": ClassScorer(model, space),
               "property scores only": ClassScorer(model, space, prior=None, alignment=None)}
    if means is not None:
        # The best a scoring-side fix of the rows could do: each class scored against the activations its
        # own training pixels produce (nearest class mean), instead of its multi-hot.
        scorers["class means of train activations"] = ClassScorer(
            model, dataclasses.replace(space, class_matrix=means.astype(np.float32)), prior=None, alignment=None)
    samples = source.samples[:limit] if limit else source.samples
    thin_idx = [classes.index(c) for c in THIN]
    acc = {k: {"cm": np.zeros((n, n), np.int64), "rank": np.zeros((len(THIN), n), np.int64),
               "margin": [[] for _ in THIN], "bias_hits": np.zeros((len(THIN), len(BIASES), 3), np.int64)}
           for k in scorers}
    for s in samples:
        image = load_image(s.image)
        emb, factors = embed_image_factored(model, image, size=size)
        output = factors if factors is not None else emb
        gt = read_index_png(s.label)
        valid = gt != 255
        for name, scorer in scorers.items():
            a = acc[name]
            scores = scorer(output, scorer.prior_map(image))
            up = F.interpolate(scores[None].float(), size=gt.shape, mode="bilinear", align_corners=False)[0]
            up = up.numpy()
            pred = up.argmax(0)
            a["cm"] += np.bincount(gt[valid].astype(np.int64) * n + pred[valid], minlength=n * n).reshape(n, n)
            order = np.argsort(-up, axis=0)
            for t, c in enumerate(thin_idx):
                on = gt == c
                if on.any():
                    rank = np.argmax(order[:, on] == c, axis=0)
                    a["rank"][t] += np.bincount(rank, minlength=n)
                    other = np.delete(up[:, on], c, axis=0).max(0)
                    a["margin"][t].append(up[c, on] - other)
                others = np.delete(up, c, axis=0).max(0)
                for b, bias in enumerate(BIASES):
                    hit = (up[c] + bias) > others
                    a["bias_hits"][t, b] += [np.sum(hit & on), np.sum(hit & valid & ~on), np.sum(on & ~hit)]
    out = {}
    for name, a in acc.items():
        cm = a["cm"]
        per = {}
        for t, (cls, c) in enumerate(zip(THIN, thin_idx)):
            row = cm[c]
            tp, fp, fn = cm[c, c], cm[:, c].sum() - cm[c, c], row.sum() - cm[c, c]
            hits = a["bias_hits"][t]
            ious = hits[:, 0] / np.maximum(hits.sum(1), 1)
            best = int(np.argmax(ious))
            conf = [j for j in np.argsort(-row) if j != c][0]
            # IoU of the class within its own pixels and those given to its main confuser only
            pair_iou = cm[c, c] / max(1, cm[c, c] + cm[c, conf] + cm[conf, c])
            margins = np.concatenate(a["margin"][t]) if a["margin"][t] else np.zeros(0)
            per[cls] = {
                "iou_pct": round(100 * tp / max(1, tp + fp + fn), 2),
                "predicted_as_pct": {classes[j]: round(100 * row[j] / max(1, row.sum()), 1)
                                     for j in np.argsort(-row)[:4]},
                "precision_pct": round(100 * tp / max(1, tp + fp), 1),
                # where the class's false positives lie (ground truth of the pixels it wrongly takes)
                "false_positives_from_pct": {classes[j]: round(100 * cm[j, c] / max(1, fp), 1)
                                             for j in np.argsort(-cm[:, c]) if j != c and cm[j, c]}
                if fp else {},
                "rank1_pct": round(100 * a["rank"][t, 0] / max(1, a["rank"][t].sum()), 1),
                "rank_le2_pct": round(100 * a["rank"][t, :2].sum() / max(1, a["rank"][t].sum()), 1),
                "median_margin": round(float(np.median(margins)), 4) if margins.size else None,
                "p90_margin": round(float(np.percentile(margins, 90)), 4) if margins.size else None,
                "best_bias": float(BIASES[best]), "iou_at_best_bias_pct": round(100 * float(ious[best]), 2),
                "main_confuser": classes[conf],
                "iou_vs_main_confuser_only_pct": round(100 * float(pair_iou), 2),
            }
        ious = np.diag(cm) / np.maximum(cm.sum(0) + cm.sum(1) - np.diag(cm), 1)
        out[name] = {"miou_pct": round(100 * float(ious.mean()), 2), "classes": per}
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=str(DEFAULT_MODEL_DIR))
    p.add_argument("--data-root", default=None)
    p.add_argument("--size", type=int, default=None, help="short side (default: the model's input size)")
    p.add_argument("--limit", type=int, default=None, help="first N val images only")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--means-images", type=int, default=60,
                   help="CamVid train images (evenly spaced) for the class-means rows; 0: skip them")
    p.add_argument("--json", default="docs/results/thin_structures.json")
    args = p.parse_args(argv)

    import torch

    from prolab.data.readers import read_source
    from prolab.evaluate import class_indices, load_mapping
    from prolab.model import PropertySegmenter

    torch.set_num_threads(args.threads)
    t0 = time.time()
    model = PropertySegmenter.from_pretrained(args.model).eval()
    model.source_dir = args.model
    mapping = load_mapping(args.model)
    val = read_source("camvid", args.data_root, "val", teacher=False)
    train = read_source("camvid", args.data_root, "train", teacher=False)
    rows = dict(zip(val.classes, class_indices(model.label_space.class_names, val.classes, val.label_key, mapping)))
    result = {"model": args.model, "size": args.size or model.config.input_size,
              "label_space": label_space_overlap(model.label_space, rows),
              "camvid_train_labels": label_statistics(train),
              "camvid_val_labels": label_statistics(val)}
    means = None
    if args.means_images:
        from tools.ground_class_rows import class_property_means

        step = max(1, len(train.samples) // args.means_images)
        train.samples = train.samples[::step][:args.means_images]
        per_class = class_property_means(model, train, dict.fromkeys(val.classes), size=result["size"])
        means = np.stack([per_class[c] for c in val.classes])
        result["means_images"] = len(train.samples)
    with torch.no_grad():
        result["camvid_val"] = model_diagnosis(model, val, result["size"], args.limit, means)
    result["seconds"] = round(time.time() - t0, 1)
    _print(result)
    if args.json:
        write_json(args.json, result)
    return result


def _fmt(d: dict, n: int = 4) -> str:
    return ", ".join(f"{k} {v}" for k, v in list(d.items())[:n])


def _print(r: dict) -> None:
    print("1. label space (multi-hot cosines, model's union space)")
    for cls, d in r["label_space"].items():
        print(f"  {cls} -> {d['union_class']}: {d['properties']} properties; nearest {d['nearest_union']}; "
              f"max containment {d['max_containment']}")
        print(f"     CamVid cosines {d['camvid_cosines']}")
        print(f"     classes sharing each property {list(d['property_sharers'].values())}")
    print("2. labels (CamVid train / val): pixel share %, images, pixels a stride-4 label grid keeps %")
    for cls in THIN:
        a, b = r["camvid_train_labels"][cls], r["camvid_val_labels"][cls]
        print(f"  {cls}: train {a['pixel_share_pct']} % of pixels, {a['images_with_class']}/{a['images']} images, "
              f"stride-4 grid keeps {a['stride4_kept_pct']} %; val {b['pixel_share_pct']} %")
    for name, d in r["camvid_val"].items():
        print(f"3./4. CamVid val, {name}: mIoU {d['miou_pct']}")
        for cls, c in d["classes"].items():
            print(f"  {cls}: IoU {c['iou_pct']} (precision {c['precision_pct']} %); its pixels predicted as "
                  f"{_fmt(c['predicted_as_pct'])}; its false positives on {_fmt(c['false_positives_from_pct'], 3)}")
            print(f"     own score first on "
                  f"{c['rank1_pct']} %, top-2 {c['rank_le2_pct']} %; median margin {c['median_margin']}; "
                  f"+{c['best_bias']} -> IoU {c['iou_at_best_bias_pct']}; vs {c['main_confuser']} only "
                  f"{c['iou_vs_main_confuser_only_pct']}")
    print(f"({r['seconds']} s)")


if __name__ == "__main__":
    main()
