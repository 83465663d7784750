"""How far a fine-tune moved the property activations from a reference model, on val images.

    python -m bench.activation_drift --reference assets/models/default --model runs/A [--model runs/B ...]
                                     [--dataset camvid --dataset msrc_v2] [--limit 40] [--size 416]
                                     [--json docs/results/activation_drift.json]

Class scores of words a model never trained on are cosines with its property activations
(``sigmoid(<e, c_k/|c_k|> / T)``), so a fine-tune that turns those activation vectors keeps its trained
classes and loses the bridge (``bench.label_transfer`` measures the loss; it takes minutes). This prints
the cheap quantity behind it, per dataset: the mean over every output pixel of ``1 - cos(p_model, p_ref)``
(:func:`prolab.scoring.anchor_loss`, what ``anchor_weight`` trains against), its 90th percentile, and the
share of pixels whose strongest property changed (the argmax of the logits ``<e, c_k/|c_k|> / T``: the
sigmoid saturates to 1.0 in float32 for several properties of a confident pixel, and an argmax over
those ties takes the first index; files before 2026-12-07 name that older count ``top_property_changed``).
Both models run at the same short side (``--size``,
default the reference's ``input_size``) on the first ``--limit`` val images, in the reference's property
space (models fine-tuned from it share its centres).
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from bench.common import default_data_root, write_json


def compare(logits, reference):
    """Per-pixel ``1 - cos`` of two (1, K, h, w) property logit maps' activations (flattened NumPy), and how
    many pixels' strongest property (argmax of the logits) differs."""
    import torch

    from prolab.scoring import activation_distance

    distance = activation_distance(torch.sigmoid(logits), torch.sigmoid(reference)).clamp_min(0)
    return distance.flatten().numpy(), int(torch.count_nonzero(logits.argmax(1) != reference.argmax(1)))


def drift(models: dict, reference, images, size: int) -> dict:
    """Per model: mean / 90th-percentile ``1 - cos`` of the activations against the reference's, and the
    share of pixels whose strongest property changed (the reference runs once per image)."""
    import torch

    from prolab.inference import embed_image
    from prolab.scoring import property_logits

    centers = torch.as_tensor(reference.label_space.centers, dtype=torch.float32)
    temp = reference.config.temperature
    values = {name: [] for name in models}
    changed = dict.fromkeys(models, 0)
    pixels = 0
    for image in images:
        q = property_logits(embed_image(reference, image, size=size)[None], centers, temp)
        pixels += q[0, 0].numel()
        for name, model in models.items():
            distance, n_changed = compare(property_logits(embed_image(model, image, size=size)[None], centers, temp), q)
            values[name].append(distance)
            changed[name] += n_changed
    out = {}
    for name in models:
        v = np.concatenate(values[name])
        out[name] = {"mean_1_minus_cos": round(float(v.mean()), 5), "p90_1_minus_cos": round(float(np.quantile(v, 0.9)), 5),
                     "strongest_property_changed": round(changed[name] / max(1, pixels), 4), "images": len(images)}
    return out


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reference", required=True, help="the starting model (e.g. assets/models/default)")
    p.add_argument("--model", action="append", required=True, help="a fine-tuned model folder (repeatable)")
    p.add_argument("--dataset", action="append", default=None, help="shared dataset (default camvid, msrc_v2)")
    p.add_argument("--data-root", default=default_data_root())
    p.add_argument("--limit", type=int, default=40, help="first N val images of each dataset")
    p.add_argument("--size", type=int, default=None, help="short side (default: the reference's input_size)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    import prolab  # noqa: F401  (thread settings before torch work)
    from prolab.data.readers import read_source
    from prolab.images import load_image
    from prolab.model import PropertySegmenter

    reference = PropertySegmenter.from_pretrained(args.reference, score_offsets=False).eval()
    if reference.config.supervision != "property":
        sys.exit("activation_drift: the reference must be a property model.")
    size = args.size or reference.config.input_size
    result = {"reference": args.reference, "size": size, "models": {}}
    data = {}
    for name in args.dataset or ["camvid", "msrc_v2"]:
        samples = read_source(name, args.data_root, "val", teacher=False).samples[:args.limit]
        data[name] = [load_image(s.image) for s in samples]
    models = {}
    for path in args.model:
        model = PropertySegmenter.from_pretrained(path, score_offsets=False).eval()
        if model.config.supervision != "property" or model.config.embed_dim != reference.config.embed_dim:
            sys.exit(f"activation_drift: {path} is a {model.config.supervision} model with {model.config.embed_dim}-d "
                     f"outputs; the reference is a property model embedding in {reference.config.embed_dim} dimensions.")
        if not np.allclose(model.label_space.centers, reference.label_space.centers, atol=1e-6):
            print(f"note: {path} has property centres of its own; both are scored in the reference's properties")
        models[path] = model
    per_dataset = {name: drift(models, reference, images, size) for name, images in data.items()}
    for path in args.model:
        result["models"][path] = {name: per_dataset[name][path] for name in data}
        for name, r in result["models"][path].items():
            print(f"{path} on {name} val ({r['images']} images, short side {size}): 1 - cos mean "
                  f"{r['mean_1_minus_cos']:.4f}, p90 {r['p90_1_minus_cos']:.4f}; strongest property changed on "
                  f"{100 * r['strongest_property_changed']:.1f} % of pixels")
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
