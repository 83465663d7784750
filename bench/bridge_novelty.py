"""Novelty rule of the words-to-trained-classes bridge, on val: plain-words sets vs the trained classes.

    python -m bench.bridge_novelty [--snapshots DIR] [--every N] [--data-root DIR] [--json OUT.json]

Issue #27: a class in anyone's words must score like the class it means. Novelty (how much open-set
credit a class gets, :class:`prolab.alignment.Alignment`) used to read the F1 of sentence matching, which a
class of 3 plain sentences cannot reach against a trained class of 10-15 sentences (recall stays low), so
plain-words classes were treated as novel. It now reads the *size-matched* F1
(:func:`prolab.alignment.sentence_set_scores`). This bench scores, from one cached forward pass per image
(:func:`bench.cached_scoring.cached_outputs`, ``--snapshots`` to reuse them):

- CamVid and MSRC-v2 val: the trained classes, the plain-words sets (``bench/tables/plain_<set>.json``) and
  the shipped descriptions, each with novelty from the size-matched F1 (``new``) and from the plain F1 (``old``);
- MSRC-v2 val with ``assets/models/unseen_animals``: the animals' mean IoU (shipped animal sentences, the
  other classes by the model's own sentences), both rules: truly novel classes must stay novel.
"""
from __future__ import annotations

import argparse
from contextlib import contextmanager
from pathlib import Path

from bench.common import ROOT, write_json
from prolab.assets import DEFAULT_MODEL_DIR, MODELS_DIR

SETS = {"camvid": "camvid_11", "msrc_v2": "msrc_23"}
ANIMALS = ("cow", "horse", "sheep", "bird", "cat", "dog")


@contextmanager
def f1_novelty():
    """Inside: novelty reads the plain F1 again (the rule before issue #27's fix)."""
    import prolab.alignment as alignment

    full = alignment.sentence_set_scores

    def old(*args):
        f1, _ = full(*args)
        return f1, f1

    alignment.sentence_set_scores = old
    try:
        yield
    finally:
        alignment.sentence_set_scores = full


def pct(x):
    return None if x is None else round(100 * x, 2)


def both_rules(cache, descriptions, encoder) -> dict:
    """mIoU and per-class IoU (percent) of ``descriptions`` under the new and the old novelty rule."""
    out = {}
    for rule in ("new", "old"):
        if rule == "old":
            with f1_novelty():
                m = cache.rescore(descriptions=descriptions, encoder=encoder)
        else:
            m = cache.rescore(descriptions=descriptions, encoder=encoder)
        out[rule] = {"miou": pct(m["miou"]), "per_class_iou": {c: pct(v) for c, v in m["per_class_iou"].items()},
                     "present": [c for c, n in m["per_class_pixels"].items() if n]}
    return out


def main(argv: list[str] | None = None) -> dict:
    import torch

    from bench.cached_scoring import cached_outputs
    from prolab import labelsets
    from prolab.descriptions import DescriptionSet, load_descriptions
    from prolab.encoder import TextEncoder
    from prolab.eval_cache import cache_subset
    from prolab.evaluate import load_mapping
    from prolab.model import PropertySegmenter

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR)
    ap.add_argument("--animals-model", type=Path, default=MODELS_DIR / "unseen_animals")
    ap.add_argument("--data-root")
    ap.add_argument("--limit", type=int, help="at most this many images per dataset (when building)")
    ap.add_argument("--every", type=int, default=1, help="score every N-th cached image only")
    ap.add_argument("--snapshots", type=Path, help="folder of the caches' snapshots: read when there, else written")
    ap.add_argument("--datasets", nargs="+", default=list(SETS) + ["unseen animals"])
    ap.add_argument("--json", type=Path, default=ROOT / "docs" / "results" / "bridge_novelty.json")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    result = {"every": args.every, "runs": {}}
    model = PropertySegmenter.from_pretrained(args.model)
    encoder = TextEncoder(model.label_space.encoder_id, template=model.label_space.template)
    for name, key in SETS.items():
        if name not in args.datasets:
            continue
        cache = cached_outputs(model, Path(args.model), name, args)
        cache = cache_subset(cache, range(0, len(cache), args.every))
        trained = pct(cache.rescore()["miou"])
        run = {"images": len(cache), "trained": trained}
        for label, ds in (("plain", load_descriptions(ROOT / "bench" / "tables" / f"plain_{key}.json")),
                          ("shipped", labelsets.load(key).descriptions)):
            run[label] = both_rules(cache, ds.subset(cache.classes), encoder)
            print(f"{name} {len(cache)} images: trained {trained}  {label} new {run[label]['new']['miou']} "
                  f"old {run[label]['old']['miou']}", flush=True)
        result["runs"][name] = run
    if "unseen animals" in args.datasets:
        animals_model = PropertySegmenter.from_pretrained(args.animals_model)
        cache = cached_outputs(animals_model, Path(args.animals_model), "msrc_v2", args)
        cache = cache_subset(cache, range(0, len(cache), args.every))
        own = animals_model.label_space.descriptions()
        table = load_mapping(args.animals_model).get("msrc_23", {})
        shipped = labelsets.load("msrc_23").descriptions
        start = DescriptionSet({c: (shipped[c] if c in ANIMALS else own[table.get(c, c)]) for c in cache.classes})
        run = {"images": len(cache), **both_rules(cache, start, encoder)}
        for rule in ("new", "old"):
            vals = [run[rule]["per_class_iou"][c] or 0.0 for c in ANIMALS if c in run[rule]["present"]]
            run[rule]["animal_mean_iou"] = round(sum(vals) / len(vals), 2) if vals else None
        print(f"unseen animals {len(cache)} images: animal mean IoU new {run['new']['animal_mean_iou']} "
              f"old {run['old']['animal_mean_iou']}", flush=True)
        result["runs"]["unseen animals"] = run  # as bench/unseen_categories.py: the animals present
    write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
