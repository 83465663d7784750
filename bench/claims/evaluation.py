"""Scoring the models bench.paper_claims trains: the evaluation sets, their metrics, and part 3's held-out
classes added back from their descriptions (vs random-sentence controls, with and without the open-set
credit), which bench.heldout_rescore re-runs on a saved model."""
from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.claims.plan import EVAL_SETS, HELD_OUT, LEAK_WORDS, removed_union_classes


def eval_sources(data_root: str, limit: int | None, with_train: bool = False):
    """The evaluation sets by key (``msrc_v2_val``, ``camvid_val``; ``msrc_v2_train`` too with ``with_train``)."""
    from prolab.data import read_shared

    out = {f"{name}_{split}": read_shared(data_root, name, split, teacher=False) for name, split in EVAL_SETS}
    if with_train:
        out["msrc_v2_train"] = read_shared(data_root, "msrc_v2", "train", teacher=False)
    return out


def score(model, source, mapping, size, limit) -> dict:
    """:func:`metrics` of :func:`prolab.evaluate.evaluate` of ``model`` on ``source``."""
    from prolab.evaluate import evaluate

    return metrics(evaluate(model, source, size=size, mapping=mapping, limit=limit))


def metrics(r: dict) -> dict:
    """The metrics a result keeps of an evaluation (no confusion matrix)."""
    return {"miou": r["miou"], "pixel_accuracy": r["pixel_accuracy"], "per_class_iou": r["per_class_iou"],
            "per_class_pixels": r["per_class_pixels"], "labelled_pixels": r["labelled_pixels"],
            "images": r["images"]}


def score_arms(model, source, spaces: dict, mapping: dict, prior, size: int,
               limit: int | None) -> dict:
    """Score ``source`` under several label spaces ({name: LabelSpace}), each with the open-set credit
    (``prior``, :class:`prolab.novel_prior.PriorSettings`) and without it, from one forward pass (and
    one ImageNet sentence map) per image: {name: {"credit": metrics, "plain": metrics}}.

    Scorers come from :func:`prolab.evaluate.make_scorer` with the classes picked from each space; the
    model's own space is what counts as trained (a class added from descriptions is novel as far as its
    sentences are unlike the trained classes'); "plain" is the same without the credit.
    """
    import numpy as np

    from prolab.data.dataset import read_index_png
    from prolab.evaluate import IGNORE, ConfusionMatrix, label_guide, make_scorer
    from prolab.images import load_image
    from prolab.inference import embed_image, segment
    key = source.label_key or source.name
    scorers = {}
    for name, space in spaces.items():
        for mode, settings in (("credit", prior), ("plain", None)):
            scorers[name, mode] = make_scorer(model, source.classes, key, mapping, prior=settings, space=space)
    mapper = next((sc.credit.sentence_map for sc in scorers.values() if sc.credit is not None), None)
    cms = {k: ConfusionMatrix(len(source.classes)) for k in scorers}
    offset = int(source.meta.get("offset", 0))
    samples = source.samples[:limit] if limit else source.samples
    for sample in samples:
        if sample.label is None:
            continue
        image = load_image(sample.image)
        output = embed_image(model, image, size=size)
        prior_map = mapper(image) if mapper is not None else None
        gt = read_index_png(sample.label).astype(np.int64)
        if offset:
            gt = np.where(gt == 0, IGNORE, gt - offset)
        guide = label_guide(image, gt.shape)
        for k, scorer in scorers.items():
            cms[k].update(segment(scorer(output, prior_map), gt.shape, guide=guide), gt)
    out: dict[str, dict] = {}
    for (name, mode), cm in cms.items():
        out.setdefault(name, {})[mode] = metrics({**cm.metrics(list(source.classes)), "images": len(samples)})
    return out


def heldout_evaluation(model, out: Path, job: dict) -> dict:
    """Held-out classes added back from their descriptions (projection) vs random-sentence controls,
    each scored with the open-set credit of :mod:`prolab.novel_prior` (the library's default for
    description-only classes) and without it (plain ProLab scores)."""
    import dataclasses

    import numpy as np

    from prolab.data.union import load_union
    from prolab.descriptions import DescriptionSet
    from prolab.encoder import TextEncoder
    from prolab.novel_prior import PriorSettings

    union = load_union(job.get("union_dir"))
    space = model.label_space
    removed = removed_union_classes(union)
    leaked = sorted(c for c in removed if c in space.class_names)
    if leaked:
        raise RuntimeError(f"held-out classes present in the training label space: {leaked}")
    targets = [union.mapping["msrc_23"][c] for c in HELD_OUT]
    real = DescriptionSet({t: union.descriptions[t] for t in targets})
    encoder = TextEncoder(space.encoder_id, template=space.template)
    prior = PriorSettings()
    pool = list(space.sentences)
    spaces = {"projected": space.extended(real, encoder)}
    for draw in range(job["control_draws"]):
        rng = np.random.default_rng(1000 + draw)
        fake = DescriptionSet({t: [pool[i] for i in rng.choice(len(pool), size=len(real[t]), replace=False)]
                               for t in targets})
        spaces[f"control_{draw}"] = space.extended(fake, encoder)
    sources = eval_sources(job["config"]["data_root"], job["eval_limit"], job.get("heldout_eval_train", False))
    sources.pop("camvid_val")
    scored = {}
    for key, src in sources.items():
        # Extra control draws only on val: the train images take most of the evaluation time.
        arms = {n: sp for n, sp in spaces.items() if key == "msrc_v2_val" or n in ("projected", "control_0")}
        scored[key] = score_arms(model, src, arms, union.mapping, prior,
                                 job["size"], job["eval_limit"])
    result: dict[str, Any] = {}
    for mode in ("credit", "plain"):
        result[f"projected_{mode}"] = {key: arms["projected"][mode] for key, arms in scored.items()}
        result[f"control_{mode}"] = [{key: arms[f"control_{d}"][mode] for key, arms in scored.items()
                                      if f"control_{d}" in arms} for d in range(job["control_draws"])]
    leaks = [s for s in space.sentences if LEAK_WORDS.search(s)]
    return {"classes": list(HELD_OUT), "union_classes_removed": sorted(removed),
            "training_label_space_classes": space.num_classes,
            "training_sentences_mentioning_heldout_words": len(leaks), "examples": leaks[:5],
            "open_set_credit": dataclasses.asdict(prior), **result}
