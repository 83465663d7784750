"""Choose the open-set credit's weight and temperature (prolab.novel_prior) on COCO128, never on MSRC-v2.

    python -m bench.novel_prior_calibration [--model assets/models/unseen_animals] [--data-root DIR]
                                            [--json docs/results/novel_prior_calibration.json]

The ``unseen_animals`` model never trained on COCO's ten animals; they are added back from
``assets/descriptions/coco_80.json`` and every COCO128 image is scored over the 80 COCO classes for a
grid of settings, beside a random-sentence control (each animal described by as many sentences drawn
from the training label space). The rule, fixed before looking: the setting with the largest
(animals' mean IoU - control's mean IoU) wins. Forward passes and ImageNet maps run once per image.
"""
from __future__ import annotations

import argparse
import itertools
import json

import numpy as np

from bench.cached_scoring import forward_all, prior_maps_for, score_space
from bench.common import default_data_root, write_json
from prolab.assets import DESCRIPTIONS_DIR, MODELS_DIR

COCO_ANIMALS = ("bird", "cat", "dog", "horse", "sheep", "cow", "elephant", "bear", "zebra", "giraffe")
WEIGHTS = (2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
TEMPERATURES = (0.01, 0.02, 0.05)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=str(MODELS_DIR / "unseen_animals"))
    p.add_argument("--data-root", default=default_data_root())
    p.add_argument("--descriptions", default=str(DESCRIPTIONS_DIR / "coco_80.json"))
    p.add_argument("--draws", type=int, default=3, help="random-sentence control draws")
    p.add_argument("--limit", type=int, default=None, help="first N images only")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)

    import torch

    from prolab.data import read_shared
    from prolab.descriptions import DescriptionSet, load_descriptions
    from prolab.encoder import TextEncoder
    from prolab.evaluate import load_mapping
    from prolab.model import PropertySegmenter
    from prolab.novel_prior import PriorSettings

    torch.set_num_threads(args.threads)
    source = read_shared(args.data_root, "coco128", "train", teacher=False)
    if args.limit:
        source.samples = source.samples[:args.limit]
    classes = list(source.classes)
    model = PropertySegmenter.from_pretrained(args.model)
    space, mapping = model.label_space, load_mapping(args.model)
    table = mapping.get("coco_80", {})
    leaked = [a for a in COCO_ANIMALS if table.get(a, a) in space.class_names]
    if leaked:
        raise SystemExit(f"error: {args.model} was trained with {leaked}.")
    encoder = TextEncoder(space.encoder_id, template=space.template)
    desc = load_descriptions(args.descriptions).subset(list(COCO_ANIMALS))
    cached = forward_all(model, source)
    maps = prior_maps_for(model, source)
    ext = space.extended(desc, encoder)
    pool = list(space.sentences)
    controls = []
    for draw in range(args.draws):
        rng = np.random.default_rng(1000 + draw)
        fake = DescriptionSet({a: [pool[i] for i in rng.choice(len(pool), size=len(desc[a]), replace=False)]
                               for a in COCO_ANIMALS})
        controls.append(space.extended(fake, encoder))

    def summary(metrics_list):
        present = [a for a in COCO_ANIMALS if metrics_list[0]["per_class_pixels"][a] > 0]
        known = [c for c in classes if c not in COCO_ANIMALS and metrics_list[0]["per_class_pixels"][c] > 0]
        animals = np.mean([np.mean([m["per_class_iou"][a] for a in present]) for m in metrics_list])
        return float(animals), float(np.mean([metrics_list[0]["per_class_iou"][c] for c in known])), present

    rows = []
    base = score_space(model, cached, classes, ext, mapping, "coco_80")
    a, k, present = summary([base])
    rows.append({"weight": 0.0, "temperature": None, "animals": a, "known": k,
                 "control": summary([score_space(model, cached, classes, c, mapping, "coco_80") for c in controls])[0]})
    print(f"no credit: animals {100 * a:.1f} known {100 * k:.1f} control {100 * rows[0]['control']:.1f}", flush=True)
    for w, t in itertools.product(WEIGHTS, TEMPERATURES):
        s = PriorSettings(weight=w, temperature=t)
        m = score_space(model, cached, classes, ext, mapping, "coco_80", s, maps)
        ctl = [score_space(model, cached, classes, c, mapping, "coco_80", s, maps) for c in controls]
        a, k, _ = summary([m])
        rows.append({"weight": w, "temperature": t, "animals": a, "known": k, "control": summary(ctl)[0]})
        r = rows[-1]
        print(f"weight {w:g} T {t:g}: animals {100 * a:.1f} known {100 * k:.1f} control {100 * r['control']:.1f}",
              flush=True)
    best = max(rows[1:], key=lambda r: r["animals"] - r["control"])
    result = {"model": args.model, "dataset": "coco128/train", "images": len(cached), "animals_present": present,
              "rule": "max(animals - control)", "grid": rows, "chosen": best}
    print(json.dumps(best))
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
