"""Label spaces scored on a labelled set's forward passes, each run once: the outputs (and the ImageNet
sentence maps of the open-set credit) are computed for every image first, then every label space is
re-scored from them (bench.unseen_categories, bench.novel_prior_calibration); or an
:class:`~prolab.eval_cache.EvalCache` of a val set, kept as a snapshot (bench.description_search,
bench.bridge_novelty)."""
from __future__ import annotations

from pathlib import Path

import numpy as np


def forward_all(model, source, size=None) -> list:
    """(output map, GT label) per image, the forward pass run once."""
    from prolab.data.dataset import read_index_png
    from prolab.images import load_image
    from prolab.inference import embed_image

    return [(embed_image(model, load_image(s.image), size=size), read_index_png(s.label).astype(np.int64))
            for s in source.samples]


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
    for i, (output, gt) in enumerate(cached):
        cm.update(segment(scorer(output, prior_maps[i] if prior_maps is not None else None), gt.shape), gt)
    return cm.metrics(classes)


def cached_outputs(model, model_dir: Path, name: str, args):
    """The :class:`~prolab.eval_cache.EvalCache` of ``model`` on ``name`` val: built (one forward pass per image),
    or, with ``--snapshots DIR``, read from the snapshot an earlier run wrote there (tensors, names and numbers
    only, read with ``weights_only=True``)."""
    import torch

    from prolab.data.readers import find_data_root, read_shared
    from prolab.eval_cache import CachedImage, EvalCache
    from prolab.evaluate import load_mapping
    from prolab.novel_prior import PriorSettings

    path = None if args.snapshots is None else Path(args.snapshots) / f"{model_dir.name}_{name}.pt"
    if path is not None and path.is_file():
        d = torch.load(path, weights_only=True)
        images = [CachedImage(stem, f, label.numpy(), smap) for stem, f, label, smap in d["images"]]
        cache = EvalCache(model, images, d["weight"], d["bias"], d["classes"], name=d["name"], split=d["split"],
                          label_key=d["key"], mapping=d["mapping"], size=d["size"], flip=False,
                          prior=PriorSettings())
        return cache
    root = find_data_root(args.data_root)
    if root is None:
        raise SystemExit("error: no datasets folder: pass --data-root or set PROLAB_DATA.")
    cache = EvalCache.build(model, read_shared(root, name, "val"), mapping=load_mapping(model_dir), max_bytes=None,
                            limit=args.limit)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"images": [(im.stem, im.features, torch.from_numpy(im.label), im.sentence_map)
                               for im in cache.images],
                    "weight": cache.weight, "bias": cache.bias, "classes": cache.classes, "key": cache.label_key,
                    "mapping": cache.mapping, "size": cache.size, "split": cache.split, "name": cache.name}, path)
    return cache
