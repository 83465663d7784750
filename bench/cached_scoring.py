"""Label spaces scored on a labelled set's forward passes, each run once: the outputs (and the ImageNet
sentence maps of the open-set credit) are computed for every image first, then every label space is
re-scored from them (bench.unseen_categories, bench.novel_prior_calibration)."""
from __future__ import annotations

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
