"""Copy a property model with some classes' ungrounded sentences dropped from its label space.

    python -m tools.ground_class_rows --model assets/models/default --dataset camvid --classes pole \
        --threshold 0.2 --out runs/default_pole_grounded

A sentence lands on its nearest K-Means property; when that property's other classes are unrelated objects
(CamVid "pole": "Straight, thin cylindrical shape" on a property of rugs, forks and vases), the network
learns the property from those objects and never activates it on the class's own pixels, and the class's
multi-hot target cannot be met (``bench/thin_structures.py``). This tool measures, on the training split of
``--dataset``, each property's mean activation on each listed class's pixels (stride-4 grid, nearest-sampled
labels) and drops the class's sentences whose property stays below ``--threshold``; the centres are kept
(:meth:`prolab.labelspace.LabelSpace.edited`), so the copy scores like the original for every other class
and can be fine-tuned (``init_from``) towards the reachable targets.
"""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import numpy as np

from prolab.calibration import OFFSETS_FILE


def class_property_means(model, source, classes, limit: int | None = None,
                         size: int | None = None) -> dict[str, np.ndarray]:
    """Mean property activation (K,) over the labelled pixels of each of ``classes`` (``source``'s class
    names) in ``source``, at the short side ``size`` (default the model's input size)."""
    import torch
    import torch.nn.functional as F

    from prolab.data.dataset import read_index_png
    from prolab.images import load_image
    from prolab.inference import embed_image
    from prolab.scoring import property_activations

    centers = torch.as_tensor(model.label_space.centers)
    index = {c: source.classes.index(c) for c in classes}
    sums = {c: np.zeros(len(centers)) for c in index}
    counts = dict.fromkeys(index, 0)
    with torch.no_grad():
        for s in source.samples[:limit] if limit else source.samples:
            emb = embed_image(model, load_image(s.image), size=size)
            act = property_activations(emb[None] if emb.dim() == 3 else emb, centers, model.config.temperature)[0]
            gt = torch.from_numpy(read_index_png(s.label))[None, None].float()
            gt = F.interpolate(gt, size=act.shape[-2:], mode="nearest")[0, 0].long().numpy().ravel()
            flat = act.reshape(act.shape[0], -1).numpy()
            for c, i in index.items():
                on = gt == i
                sums[c] += flat[:, on].sum(1)
                counts[c] += int(on.sum())
    return {c: sums[c] / max(1, counts[c]) for c in index}


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", required=True)
    p.add_argument("--dataset", default="camvid")
    p.add_argument("--data-root", default=None)
    p.add_argument("--classes", nargs="+", required=True, help="dataset class names whose rows to ground")
    p.add_argument("--threshold", type=float, default=0.2)
    p.add_argument("--limit", type=int, default=None, help="first N training images only")
    p.add_argument("--out", required=True)
    args = p.parse_args(argv)

    from prolab.data.readers import read_source
    from prolab.encoder import TextEncoder
    from prolab.evaluate import class_indices, load_mapping
    from prolab.model import PropertySegmenter

    model = PropertySegmenter.from_pretrained(args.model).eval()
    space = model.label_space
    source = read_source(args.dataset, args.data_root, "train", teacher=False)
    union = class_indices(space.class_names, args.classes, source.label_key, load_mapping(args.model))
    means = class_property_means(model, source, args.classes, args.limit)
    descriptions = {c: list(v) for c, v in space.descriptions().items()}
    report = {}
    for cls, row in zip(args.classes, union):
        name = space.class_names[row]
        kept, dropped = [], []
        for i in np.flatnonzero(space.sentence_class == row):
            prop = int(space.sentence_property[i])
            (kept if means[cls][prop] >= args.threshold else dropped).append(
                (space.sentences[i], prop, round(float(means[cls][prop]), 3)))
        if not kept:
            raise SystemExit(f"Every sentence of {cls} is below the threshold {args.threshold}; lower it.")
        descriptions[name] = [s for s, _, _ in kept]
        report[cls] = {"union_class": name, "kept": kept, "dropped": dropped}
        print(f"{cls} ({name}): kept {len(kept)}, dropped {len(dropped)}: " + "; ".join(
            f"{s!r} (property {p}, mean activation {a})" for s, p, a in dropped))
    encoder = TextEncoder(space.encoder_id, template=space.template)
    out = Path(args.out)
    shutil.copytree(args.model, out, dirs_exist_ok=True)
    shutil.rmtree(out / "labelspace")
    (out / OFFSETS_FILE).unlink(missing_ok=True)  # fitted for the rows this edits
    space.edited(descriptions, encoder).save(out / "labelspace")
    (out / "grounded_rows.json").write_text(json.dumps(
        {"model": args.model, "dataset": args.dataset, "threshold": args.threshold, "classes": report}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
