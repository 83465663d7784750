"""Unseen categories from descriptions alone, on MSRC-v2 val.

    python -m bench.unseen_categories [--model assets/models/unseen_animals] [--reference assets/models/default]
                                      [--data-root DIR] [--draws 5] [--json docs/results/unseen_animals.json]

The model (trained without any animal) gets the six MSRC animals added back from
``assets/descriptions/msrc_23.json`` with :meth:`prolab.labelspace.LabelSpace.extended`, and is scored
over all 23 MSRC classes (whole image, no flip). Printed:

- per-animal IoU from the descriptions, and from *random-sentence controls* (each animal described by
  as many sentences drawn at random from the training label space; ``--draws`` draws);
- the known (non-animal) classes' mIoU, beside the reference model's on the same 23-class evaluation;
- diagnostics of why projected classes win or lose: on animal pixels, how often the true animal
  beats every trained class, the mean score margin, and how many of each animal's properties were
  targets of a class seen in training.

Every forward pass runs once; the label spaces are then re-scored from the cached outputs.
"""
from __future__ import annotations

import argparse
import dataclasses
import json

import numpy as np

from bench.cached_scoring import forward_all, prior_maps_for, score_space, scorer_for
from bench.common import default_data_root, write_json
from prolab.assets import DEFAULT_MODEL_DIR, DESCRIPTIONS_DIR, MODELS_DIR

ANIMALS = ("cow", "horse", "sheep", "bird", "cat", "dog")


def diagnostics(model, cached, classes: list[str], space, mapping) -> dict:
    """On GT pixels of each animal: does the animal's score beat the best trained class, and by how much."""
    import torch
    import torch.nn.functional as F

    scorer = scorer_for(model, classes, space, mapping)
    animal_idx = [classes.index(a) for a in ANIMALS]
    known_idx = [i for i in range(len(classes)) if i not in animal_idx]
    best_known_on = {"animal pixels": [], "known-class pixels": []}
    wins = {a: [0, 0] for a in ANIMALS}
    margin = {a: [] for a in ANIMALS}
    among = {a: [0, 0] for a in ANIMALS}
    for output, gt, _ in cached:
        scores = scorer(output)
        g = torch.from_numpy(gt)[None, None].float()
        g = F.interpolate(g, size=scores.shape[-2:], mode="nearest")[0, 0].long()
        best = scores[known_idx].max(0).values
        is_animal = torch.isin(g, torch.tensor(animal_idx))
        best_known_on["animal pixels"] += best[is_animal].tolist()
        best_known_on["known-class pixels"] += best[torch.isin(g, torch.tensor(known_idx))].tolist()
        for a, ai in zip(ANIMALS, animal_idx):
            mask = g == ai
            if not bool(mask.any()):
                continue
            s = scores[:, mask]  # C N
            best_known = s[known_idx].max(0).values
            wins[a][0] += int((s[ai] > best_known).sum())
            wins[a][1] += int(mask.sum())
            margin[a].extend((s[ai] - best_known).tolist())
            among[a][0] += int((s[animal_idx].argmax(0) == animal_idx.index(ai)).sum())
            among[a][1] += int(mask.sum())
    per_animal = {a: {"beats_all_trained": wins[a][0] / wins[a][1] if wins[a][1] else None,
                "mean_margin": float(np.mean(margin[a])) if margin[a] else None,
                "right_among_animals": among[a][0] / among[a][1] if among[a][1] else None}
                  for a in ANIMALS}
    # How well the best trained class explains a pixel: low on animals, ~1 on the classes it was trained on.
    fit = {k: {"median": float(np.median(v)), "q10": float(np.quantile(v, 0.1))} for k, v in best_known_on.items() if v}
    return {"per_animal": per_animal, "best_trained_score": fit}


def _rows(space, classes: list[str], mapping) -> list[int]:
    from prolab.evaluate import class_indices

    return class_indices(space.class_names, classes, "msrc_23", mapping)


def topk_rows(space, desc, encoder, k: int) -> np.ndarray:
    """Each sentence of each class assigned to its ``k`` nearest properties (instead of one)."""
    rows = np.zeros((len(desc), space.k), np.float32)
    for i, c in enumerate(desc):
        cos = encoder.encode(list(desc[c])) @ space.normalised_centers.T
        for r in np.argsort(-cos, axis=1)[:, :k]:
            rows[i, r] = 1.0
    return rows


def explore(model, cached, classes, space, desc, encoder, mapping, draws: int) -> list[dict]:
    """Score variants (assignment of sentences to properties, scoring temperature, direct cosine with
    the class's mean sentence embedding) on the cached outputs; every class scored the same way."""
    import dataclasses

    import torch
    import torch.nn.functional as F

    from prolab.descriptions import DescriptionSet
    from prolab.evaluate import ConfusionMatrix
    from prolab.inference import segment
    from prolab.scoring import property_class_scores

    pool = list(space.sentences)
    fakes = [DescriptionSet({a: [pool[i] for i in np.random.default_rng(1000 + d).choice(
        len(pool), size=len(desc[a]), replace=False)] for a in ANIMALS}) for d in range(draws)]

    def metrics(score_fn) -> dict:
        cm = ConfusionMatrix(len(classes))
        for output, gt, guide in cached:
            cm.update(segment(score_fn(output), gt.shape, guide=guide), gt)
        m = cm.metrics(classes)
        present = [a for a in ANIMALS if m["per_class_pixels"][a] > 0]
        known = [c for c in classes if c not in ANIMALS]
        return {"animals": float(np.mean([m["per_class_iou"][a] or 0.0 for a in present])),
                "known": float(np.nanmean([m["per_class_iou"][c] if m["per_class_iou"][c] is not None
                                           else np.nan for c in known]))}

    animal_idx = torch.tensor([classes.index(a) for a in ANIMALS])
    known_idx = torch.tensor([i for i, c in enumerate(classes) if c not in ANIMALS])

    def open_set(score_fn, lam: float):
        """Novel classes get credit for what the trained classes leave unexplained: + lam (1 - best
        trained score). On pixels a trained class fits (score ~1) nothing changes."""
        def run(o):
            s = score_fn(o).clone()
            s[animal_idx] += lam * (1 - s[known_idx].max(0).values)
            return s
        return run

    def property_variant(t: float, lam: float = 0.0, soft: bool = False, topk: int | None = None):
        """The animals' rows: nearest property per sentence (``soft``: soft rows; ``topk``: k nearest)."""
        def run(d):
            ext = space.extended(d, encoder, soft=soft)
            if topk:
                matrix = ext.class_matrix.copy()
                matrix[-len(ANIMALS):] = topk_rows(space, d, encoder, topk)
                ext = dataclasses.replace(ext, class_matrix=matrix)
            r = _rows(ext, classes, mapping)
            m = torch.as_tensor(ext.class_matrix[r])
            c = torch.as_tensor(ext.centers)
            return metrics(open_set(lambda o: property_class_scores(o[None], c, m, t)[0], lam))
        return run

    def embedding_variant(d):
        ext = space.extended(d, encoder)
        proto = np.zeros((ext.num_classes, ext.dim), np.float32)
        np.add.at(proto, ext.sentence_class, ext.sentence_embeddings)
        proto = F.normalize(torch.as_tensor(proto[_rows(ext, classes, mapping)]), dim=1)
        return metrics(lambda o: torch.einsum("cd,dhw->chw", proto, F.normalize(o, dim=0)))

    t0 = model.config.temperature
    variants = {f"nearest, T={t0}": property_variant(t0)}
    for t in (t0 / 2, t0 * 2, t0 * 4):
        variants[f"nearest, T={t:g}"] = property_variant(t)
    variants["soft rows"] = property_variant(t0, soft=True)
    for k in (2, 3):
        variants[f"top-{k} properties per sentence"] = property_variant(t0, topk=k)
    variants["cosine with mean sentence embedding"] = embedding_variant
    for lam in (0.5, 1.0):
        variants[f"nearest + open-set credit {lam:g} (1 - best trained)"] = property_variant(t0, lam)
        variants[f"soft rows + open-set credit {lam:g} (1 - best trained)"] = property_variant(t0, lam, soft=True)
    out = []
    for name, run in variants.items():
        real = run(desc)
        ctrl = [run(f) for f in fakes]
        out.append({"variant": name, "animals": real["animals"], "known": real["known"],
                    "control": float(np.mean([c["animals"] for c in ctrl]))})
        print(f"{name:45s} animals {100 * real['animals']:5.1f}  control {100 * out[-1]['control']:5.1f}"
              f"  known {100 * real['known']:5.1f}", flush=True)
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default=str(MODELS_DIR / "unseen_animals"))
    p.add_argument("--reference", default=str(DEFAULT_MODEL_DIR),
                   help="model trained with the animals, scored the same way ('' to skip)")
    p.add_argument("--data-root", default=default_data_root())
    p.add_argument("--descriptions", default=str(DESCRIPTIONS_DIR / "msrc_23.json"))
    p.add_argument("--draws", type=int, default=5, help="random-sentence control draws")
    p.add_argument("--soft", action="store_true", help="soft projected rows instead of multi-hot")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--explore", action="store_true", help="also compare scoring variants (see explore())")
    p.add_argument("--no-open-set-credit", action="store_true",
                   help="plain ProLab scores (default: the open-set credit of prolab.novel_prior)")
    p.add_argument("--score-offsets", metavar="JSON",
                   help='replace the model\'s score offsets, e.g. \'{"grass": 0.2}\' (how an offset on the class '
                        'under the animals moves them; prolab.calibration)')
    p.add_argument("--json", default=None, help="also write the result here")
    args = p.parse_args(argv)

    import torch

    from prolab.data import read_shared
    from prolab.descriptions import DescriptionSet, load_descriptions
    from prolab.encoder import TextEncoder
    from prolab.evaluate import load_mapping
    from prolab.model import PropertySegmenter

    torch.set_num_threads(args.threads)
    source = read_shared(args.data_root, "msrc_v2", "val", teacher=False)
    classes = list(source.classes)
    model = PropertySegmenter.from_pretrained(args.model)
    if args.score_offsets is not None:
        from prolab.calibration import check_offsets
        from prolab.errors import ProLabError

        try:
            model.score_offsets = check_offsets(json.loads(args.score_offsets), model.class_names, "--score-offsets")
        except (json.JSONDecodeError, ProLabError) as exc:
            raise SystemExit(f"error: --score-offsets {args.score_offsets!r}: {exc}") from None
    space = model.label_space
    leaked = [a for a in ANIMALS if a in space.class_names]
    if leaked:
        raise SystemExit(f"error: {args.model} was trained with {leaked}; it is not an unseen-animals model.")
    mapping = load_mapping(args.model)
    encoder = TextEncoder(space.encoder_id, template=space.template)
    desc = load_descriptions(args.descriptions).subset(list(ANIMALS))
    cached = forward_all(model, source)
    settings = maps = None
    if not args.no_open_set_credit:
        from prolab.novel_prior import PriorSettings

        settings, maps = PriorSettings(), prior_maps_for(model, source)

    projected_space = space.extended(desc, encoder, soft=args.soft)
    projected = score_space(model, cached, classes, projected_space, mapping, "msrc_23", settings, maps)
    controls, fakes = [], []
    pool = list(space.sentences)
    for draw in range(args.draws):
        rng = np.random.default_rng(1000 + draw)
        fake = DescriptionSet({a: [pool[i] for i in rng.choice(len(pool), size=len(desc[a]), replace=False)]
                               for a in ANIMALS})
        fakes.append(fake)
        controls.append(score_space(model, cached, classes, space.extended(fake, encoder, soft=args.soft), mapping,
                                    "msrc_23", settings, maps))

    added = projected_space.class_matrix[-len(ANIMALS):] > 0
    trained = space.class_matrix > 0
    present = [a for a in ANIMALS if projected["per_class_pixels"][a] > 0]

    def mean(values):
        values = [v for v in values if v is not None]
        return float(np.mean(values)) if values else None

    known = [c for c in classes if c not in ANIMALS]
    result = {
        "model": args.model, "score_offsets": dict(model.score_offsets), "images": len(cached),
        "projection": "soft" if args.soft else "multi-hot",
        "open_set_credit": None if settings is None else dataclasses.asdict(settings),
        "animals_present": present,
        "animal_iou": {a: projected["per_class_iou"][a] for a in present},
        "animal_mean_iou": mean(projected["per_class_iou"][a] for a in present),
        "control_mean_iou": mean(mean(c["per_class_iou"][a] for a in present) for c in controls),
        "control_iou": {a: mean(c["per_class_iou"][a] for c in controls) for a in present},
        "known_miou": mean(projected["per_class_iou"][c] for c in known),
        "miou_23": projected["miou"],
        # diagnostics are of the plain ProLab scores (why projected classes lose without the credit)
        "diagnostics": diagnostics(model, cached, classes, projected_space, mapping),
        # the trained class whose property row overlaps each animal's most (its likely stand-in)
        "animal_properties": {a: {"count": int(row.sum()),
                                  "closest_trained_class": space.class_names[int((trained & row).sum(1).argmax())],
                                  "shared_with_it": int((trained & row).sum(1).max())}
                              for a, row in zip(ANIMALS, added)},
    }
    if settings is not None:  # the same run without the credit, for comparison
        plain = score_space(model, cached, classes, projected_space, mapping)
        plain_controls = [score_space(model, cached, classes, space.extended(f, encoder, soft=args.soft), mapping)
                          for f in fakes]
        result["without_credit"] = {
            "animal_mean_iou": mean(plain["per_class_iou"][a] for a in present),
            "control_mean_iou": mean(mean(c["per_class_iou"][a] for a in present) for c in plain_controls),
            "known_miou": mean(plain["per_class_iou"][c] for c in known)}
    if args.explore:
        result["variants"] = explore(model, cached, classes, space, desc, encoder, mapping, max(1, args.draws))
    if args.reference:
        ref = PropertySegmenter.from_pretrained(args.reference)
        r = score_space(ref, forward_all(ref, source), classes, ref.label_space, load_mapping(args.reference))
        result["reference"] = {"model": args.reference, "known_miou": mean(r["per_class_iou"][c] for c in known),
                               "animal_iou": {a: r["per_class_iou"][a] for a in present},
                               "animal_mean_iou": mean(r["per_class_iou"][a] for a in present),
                               "miou_23": r["miou"]}
    print(json.dumps(result, indent=1))
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
