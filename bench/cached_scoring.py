"""Label spaces scored on a labelled set's forward passes, each run once: the outputs (and the ImageNet
sentence maps of the open-set credit) are computed for every image first, then every label space is
re-scored from them (bench.unseen_categories, bench.novel_prior_calibration); or an
:class:`~prolab.eval_cache.EvalCache` of a val set, kept as a snapshot (bench.description_search,
bench.bridge_novelty)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def forward_all(model, source, size=None) -> list:
    """(output map, GT label, guide) per image, the forward pass run once; the guide is what the evaluation
    upsamples with (:func:`prolab.evaluate.label_guide`: the image, or None for bilinear)."""
    from prolab.data.dataset import read_index_png
    from prolab.evaluate import label_guide
    from prolab.images import load_image
    from prolab.inference import embed_image

    out = []
    for s in source.samples:
        image = load_image(s.image)
        gt = read_index_png(s.label).astype(np.int64)
        out.append((embed_image(model, image, size=size), gt, label_guide(image, gt.shape)))
    return out


def prior_maps_for(model, source) -> list:
    """The ImageNet sentence map of every image (:mod:`prolab.novel_prior`), for the open-set credit."""
    from prolab.images import load_image
    from prolab.novel_prior import sentence_mapper

    mapper = sentence_mapper(model)
    return [mapper(load_image(s.image)) for s in source.samples]


def scorer_for(model, classes: list[str], space, mapping, key: str = "msrc_23", prior=None):
    """:func:`prolab.evaluate.make_scorer` over ``classes`` picked from ``space`` (the model's own space stays
    what counts as trained; ``prior``: open-set credit settings)."""
    from prolab.evaluate import make_scorer

    return make_scorer(model, classes, key, mapping, prior=prior, space=space)


def score_space(model, cached, classes: list[str], space, mapping, key: str = "msrc_23",
                prior=None, prior_maps=None) -> dict:
    """Confusion-matrix metrics of ``cached`` outputs against ``classes`` under ``space`` (with the
    open-set credit when ``prior`` settings and the images' ``prior_maps`` are given)."""
    from prolab.evaluate import ConfusionMatrix
    from prolab.inference import segment

    scorer = scorer_for(model, classes, space, mapping, key, prior if prior_maps is not None else None)
    cm = ConfusionMatrix(len(classes))
    for i, (output, gt, guide) in enumerate(cached):
        cm.update(segment(scorer(output, prior_maps[i] if prior_maps is not None else None), gt.shape, guide=guide),
                  gt)
    return cm.metrics(classes)


def cached_outputs(model, model_dir: Path, name: str, args):
    """The :class:`~prolab.eval_cache.EvalCache` of ``model`` on ``name`` val: built (one forward pass per image),
    or, with ``--snapshots DIR``, read from the snapshot an earlier run wrote there (tensors, names and numbers
    only, read with ``weights_only=True``; a snapshot made with other upsampling than the default quality step's
    is made again)."""
    import torch

    from prolab.data.readers import find_data_root, read_shared
    from prolab.eval_cache import CachedImage, EvalCache
    from prolab.evaluate import load_mapping
    from prolab.novel_prior import PriorSettings
    from prolab.quality import default_guided

    path = None if args.snapshots is None else Path(args.snapshots) / f"{model_dir.name}_{name}.pt"
    d = torch.load(path, weights_only=True) if path is not None and path.is_file() else None
    if d is not None and d.get("guided", False) == default_guided():
        images = [CachedImage(stem, f, label.numpy(), smap, None if guide is None else guide.numpy())
                  for stem, f, label, smap, guide in (tuple(e) + (None,) * (5 - len(e)) for e in d["images"])]
        return EvalCache(model, images, d["weight"], d["bias"], d["classes"], name=d["name"], split=d["split"],
                         label_key=d["key"], mapping=d["mapping"], size=d["size"], flip=False,
                         prior=PriorSettings(), guided=d.get("guided", False))
    root = find_data_root(args.data_root)
    if root is None:
        raise SystemExit("error: no datasets folder: pass --data-root or set PROLAB_DATA.")
    cache = EvalCache.build(model, read_shared(root, name, "val"), mapping=load_mapping(model_dir), max_bytes=None,
                            limit=args.limit)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"images": [(im.stem, im.features, torch.from_numpy(im.label), im.sentence_map,
                                None if im.guide is None else torch.from_numpy(im.guide)) for im in cache.images],
                    "weight": cache.weight, "bias": cache.bias, "classes": cache.classes, "key": cache.label_key,
                    "mapping": cache.mapping, "size": cache.size, "split": cache.split, "name": cache.name,
                    "guided": cache.guided}, path)
    return cache
