"""Measure a label space while you edit it: one forward pass per image, then cheap re-evaluations.

:class:`EvalCache` runs the model once over a labelled set and keeps, per image, the decoder's last
features (the :class:`~prolab.inference.LowRankFactors` of the output, in half precision) and the
ground truth. :meth:`EvalCache.rescore` then scores any label space over the model's properties
(edited descriptions, added or removed classes) against that ground truth without the network:
the same metrics :func:`prolab.evaluate.evaluate` computes (``miou``, ``pixel_accuracy``,
``per_class_iou``, ...) plus the confusion matrix.

    cache = EvalCache.build(model, read_shared(root, "msrc_v2", "val"), mapping=load_mapping(model_dir))
    before = cache.rescore()                                  # the model's own classes
    space = model.label_space.edited(new_descriptions, encoder)  # what the app's workbench scores with
    after = cache.rescore(space)
    for row in compare(before, after).rows: ...               # per-class deltas (prolab.eval_report)
    confused_pairs(after, cache.scorer(space).space)          # most confused pairs + shared properties

Equality: :meth:`EvalCache.rescore` runs :func:`~prolab.evaluate.evaluate`'s own steps on the cached
features: the same restricted label space (:func:`~prolab.evaluate.restrict_space`; ``descriptions``
are projected as ``evaluate(..., descriptions=...)`` projects them), the same low-rank scoring
(:class:`~prolab.class_scorer.ClassScorer`), the same upsampling and argmax at the ground truth's size
(:func:`~prolab.inference.segment`; guided by the image, kept for it, when the default quality step upsamples
that way) and the same confusion counting. With ``half=False`` the numbers
are identical; with the default half-precision features only a pixel whose two best classes tie to
within that rounding can change (on MSRC-v2 val with the shipped model: mIoU equal to 1e-5).

Memory: per image, ``F x h/4 x w/4`` features (F = the decoder's channels, 64 for the shipped model;
2 bytes each in half precision) and the ground truth at its own size (1 byte a pixel). ``nbytes``
reports the total (with guided upsampling also the image at the ground truth's size, 3 bytes a pixel);
:meth:`EvalCache.build` computes it from the image headers before any forward pass and refuses a set
larger than ``max_bytes`` (default 512 MiB). MSRC-v2 val (59 images at the default 352 px) takes 88 MB
without guides.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from prolab.class_scorer import ClassScorer
from prolab.errors import ProLabError
from prolab.evaluate import ConfusionMatrix, label_guide, model_outputs, restrict_space
from prolab.inference import LowRankFactors, check_inference_options, final_projection, resized_shape, segment
from prolab.model.segmenter import OUTPUT_STRIDE
from prolab.novel_prior import PriorSettings, sentence_mapper
from prolab.quality import default_guided

#: Default bound of one cache's memory (:meth:`EvalCache.build`'s ``max_bytes``).
DEFAULT_MAX_BYTES = 512 * 2 ** 20
ProgressFn = Callable[[float, str], None]


@dataclass(frozen=True)
class CachedImage:
    """One evaluation image: the decoder's features, the ground truth and, when the dataset has classes
    the model never trained on, the ImageNet sentence map their open-set credit reads."""

    stem: str
    features: torch.Tensor  # (F, h, w) float16 (float32 with half=False): the output's low-rank factor
    label: np.ndarray  # (H, W) uint8 class indices at the label file's size, 255 = ignore
    sentence_map: torch.Tensor | None = None  # (D, h/32, w/32), same precision as the features
    guide: np.ndarray | None = None  # (H, W, 3) uint8 image the class scores are upsampled with (None: bilinear)

    @property
    def nbytes(self) -> int:
        maps = 0 if self.sentence_map is None else self.sentence_map.element_size() * self.sentence_map.nelement()
        guide = 0 if self.guide is None else self.guide.nbytes
        return self.features.element_size() * self.features.nelement() + self.label.nbytes + maps + guide


class EvalCache:
    """The model outputs of a labelled set, kept compactly so that label spaces can be re-evaluated
    without the network. Build with :meth:`build`; read-only afterwards, so one cache may serve
    several threads."""

    def __init__(self, model, images: list[CachedImage], weight: torch.Tensor, bias: torch.Tensor,
                 classes: list[str], *, name: str, split: str, label_key: str | None, mapping: dict | None,
                 size: int, flip: bool, prior: PriorSettings | None = None, guided: bool = False):
        self.model = model  # for its label space, temperature and scoring rule; never run again
        self.images = images
        self.weight, self.bias = weight, bias  # the head's last 1x1 conv: embeddings = weight @ f + bias
        self.classes = list(classes)
        self.name, self.split, self.label_key = name, split, label_key
        self.mapping = mapping or {}
        self.size, self.flip = size, flip
        self.prior = prior  # PriorSettings of the open-set credit (None: plain ProLab scores)
        self.guided = guided  # images keep their guide (CachedImage.guide) and are upsampled with it
        self.build_seconds = 0.0

    # ------------------------------------------------------------------ construction
    @classmethod
    def build(cls, model, source, size: int | None = None, flip: bool = False, mapping: dict | None = None,
              limit: int | None = None, max_bytes: int | None = DEFAULT_MAX_BYTES, half: bool = True,
              progress: ProgressFn | None = None,
              prior: PriorSettings | None = PriorSettings(), guided: bool | None = None) -> "EvalCache":
        """Run ``model`` (a property model) once over ``source`` (a :class:`~prolab.data.SegSource` with
        ground truth) at ``size`` (short side; default the model's) in whole-image mode, ``flip``
        averaging the mirrored image as :func:`~prolab.evaluate.evaluate` does.

        ``mapping`` maps the dataset's classes to the model's (:func:`~prolab.evaluate.load_mapping`);
        ``limit`` keeps the first N images. The memory the cache will take is computed from the image
        headers first: more than ``max_bytes`` (None: no bound) is a :class:`ProLabError` before any
        forward pass. ``progress(fraction, message)`` is called after each image.

        ``prior`` (:class:`~prolab.novel_prior.PriorSettings`) gives classes whose sentences the trained
        classes do not explain the open-set credit, as :func:`~prolab.evaluate.evaluate` does: each image's
        ImageNet sentence map is kept too (one ImageNet forward pass per image), since any later edit may
        make a class novel. None: no credit, no maps.

        ``guided``: upsample the class scores with the image as guide, as :func:`~prolab.evaluate.evaluate`
        does (each image is kept at its label's size for it; an image whose label has another size is
        upsampled plainly); None: as the default quality step (:func:`prolab.quality.default_guided`).
        """
        if model.config.supervision != "property" or model.label_space is None:
            raise ProLabError("Evaluating label spaces needs a property (ProLab) model with a label space; "
                              "a category model only has its fixed classes (use evaluate).")
        size = model.config.input_size if size is None else size
        check_inference_options(size)
        guided = default_guided(guided)
        samples = [s for s in (source.samples[:limit] if limit else source.samples) if s.label is not None]
        if not samples:
            raise ProLabError(f"{source.name} has no labelled images to evaluate.")
        key = source.label_key or source.name
        need = estimate_nbytes(model, samples, size, half, prior, guided)
        if max_bytes is not None and need > max_bytes:
            raise ProLabError(
                f"Caching {len(samples)} images of {source.name} at {size} px takes {need / 2 ** 20:.1f} MB, more "
                f"than the limit of {max_bytes / 2 ** 20:.1f} MB; evaluate fewer images or a smaller size.")
        offset = int(source.meta.get("offset", 0))
        t0 = time.perf_counter()
        mapper = None
        if prior is not None:
            mapper = sentence_mapper(model, prior)
        images, factors = [], None
        for i, out in enumerate(model_outputs(model, samples, source.classes, offset, size=size, flip=flip)):
            factors = out.factors
            features = factors.features.half() if half else factors.features
            smap = None if mapper is None else mapper(out.image)
            if smap is not None and half:
                smap = smap.half()
            images.append(CachedImage(out.sample.stem, features, out.label, smap,
                                      label_guide(out.image, out.label.shape, guided)))
            if progress is not None:
                progress((i + 1) / len(samples), f"{source.name}: {i + 1}/{len(samples)} images")
        cache = cls(model, images, factors.weight, factors.bias, source.classes, name=source.name,
                    split=source.split, label_key=key, mapping=mapping, size=size, flip=flip, prior=prior,
                    guided=guided)
        cache.build_seconds = time.perf_counter() - t0
        return cache

    # ------------------------------------------------------------------ facts
    def __len__(self) -> int:
        return len(self.images)

    @property
    def nbytes(self) -> int:
        """Bytes held (the model aside, which is shared): features, ground truth and the head's weights."""
        head = sum(t.element_size() * t.nelement() for t in (self.weight, self.bias))
        return sum(im.nbytes for im in self.images) + head

    def scorer(self, label_space=None, descriptions=None, encoder=None, allow_missing: bool = False):
        """The :class:`~prolab.class_scorer.ClassScorer` a rescore scores with: ``label_space`` (default: the
        model's) cut down to the dataset's classes, or ``descriptions`` given for them
        (:func:`prolab.evaluate.restrict_space`; ``mapping`` of :meth:`build` matches names), with the
        open-set credit of the cache's ``prior`` for classes the trained classes do not explain."""
        space = self.model.label_space if label_space is None else label_space
        if space.dim != self.weight.shape[0]:
            raise ProLabError(f"The label space is {space.dim}-dimensional but the model outputs "
                              f"{self.weight.shape[0]}-d pixels (was it built with the model's encoder?).")
        restricted = restrict_space(space, self.classes, self.label_key, self.mapping, descriptions, encoder,
                                    allow_missing)
        return ClassScorer(self.model, restricted, prior=self.prior, encoder=encoder)

    def rescore(self, label_space=None, *, descriptions=None, encoder=None,
                allow_missing: bool = False) -> dict:
        """Metrics of a label space on the cached images, without the network.

        ``label_space``: any space in the model's sentence space, e.g. ``model.label_space.edited(
        descriptions, encoder)`` (what the app's workbench segments with) or a re-clustered one, restricted
        to the dataset's classes by name or ``mapping``; default the model's own. ``descriptions``: the dataset's classes
        given by their sentences instead, exactly as ``evaluate(..., descriptions=...)`` does.
        ``allow_missing``: classes the space lacks are never predicted (IoU 0) rather than an error.

        Returns :func:`~prolab.evaluate.evaluate`'s JSON-ready dict (``miou``, ``pixel_accuracy``,
        ``mean_accuracy``, ``per_class_iou``, ``per_class_pixels``, ...) plus ``classes`` (the dataset's,
        in confusion-matrix order), ``confusion`` (rows = ground truth, columns = prediction, as
        lists) and ``rescore_seconds``.
        """
        return self.score(self.scorer(label_space, descriptions, encoder, allow_missing))

    def score(self, scorer, remap: "Remap | None" = None) -> dict:
        """:meth:`rescore` with a :class:`~prolab.class_scorer.ClassScorer` over the dataset's classes
        (:meth:`scorer`): :func:`~prolab.evaluate.evaluate`'s scoring on the cached features. With ``remap``
        the scorer may have other classes: its predictions and the ground truth are mapped onto
        ``remap.classes`` first (another label set scored by name)."""
        if remap is None and scorer.class_names != self.classes:
            raise ProLabError("score() takes a scorer over the dataset's classes; use rescore().")
        if remap is not None and (len(remap.predicted) != scorer.num_classes or len(remap.truth) != len(self.classes)):
            raise ProLabError("The remap does not match the scorer's and the dataset's classes.")
        if not np.asarray(scorer.space.class_matrix).any():
            raise ProLabError(f"None of {self.name}'s classes is in the label space.")
        t0 = time.perf_counter()
        if scorer.needs_prior_map and any(im.sentence_map is None for im in self.images):
            raise ProLabError("This cache was built without the open-set credit's ImageNet maps (prior=None).")
        classes = self.classes if remap is None else remap.classes
        cm = ConfusionMatrix(len(classes))
        for im in self.images:
            smap = im.sentence_map.float() if scorer.needs_prior_map else None
            pred = segment(scorer(LowRankFactors(im.features, self.weight, self.bias), smap), im.label.shape,
                           guide=im.guide)
            if remap is None:
                cm.update(pred, im.label)
            else:
                cm.update(remap.predictions(pred), remap.ground_truth(im.label))
        result = {"dataset": self.name, "split": self.split, "images": len(self.images), "mode": "whole",
                  "size": self.size, "supervision": "property", "flip": self.flip, "guided_upsampling": self.guided,
                  **cm.metrics(classes), "classes": list(classes), "confusion": cm.matrix.tolist()}
        result["rescore_seconds"] = time.perf_counter() - t0
        return result


@dataclass(frozen=True)
class Remap:
    """Scores a label set against a dataset by name: each predicted class counts as one of ``classes``
    (``predicted[i]``, -1: a miss wherever it is predicted) and each dataset class is scored as one of
    ``classes`` (``truth[j]``: several dataset classes may merge into one)."""

    classes: list[str]
    predicted: np.ndarray  # (C_label,) int64 index into classes, -1 = counts as a miss
    truth: np.ndarray  # (C_dataset,) int64 index into classes

    @classmethod
    def by_name(cls, label_classes: list[str], dataset_classes: list[str], to_dataset: dict[str, str],
                merge: dict[str, list[str]] | None = None) -> "Remap":
        """``to_dataset``: label-set class -> dataset class or merged class; ``merge``: merged class -> the
        dataset classes it stands for."""
        merge = merge or {}
        owner = {c: m for m, members in merge.items() for c in members}
        classes = list(dict.fromkeys(owner.get(c, c) for c in dataset_classes))
        where = {c: i for i, c in enumerate(classes)}
        unknown = sorted(set(to_dataset.values()) - set(where))
        if unknown:
            raise ProLabError(f"The name table points at classes the dataset does not have: {', '.join(unknown)}.")
        predicted = np.array([where.get(to_dataset.get(c, ""), -1) for c in label_classes], np.int64)
        truth = np.array([where[owner.get(c, c)] for c in dataset_classes], np.int64)
        return cls(classes, predicted, truth)

    def predictions(self, labels: np.ndarray) -> np.ndarray:
        """Label-set class indices (-1 unknown) -> indices into :attr:`classes` (-1: a miss)."""
        lut = np.append(self.predicted, -1)
        return lut[np.where(labels < 0, len(self.predicted), labels)]

    def ground_truth(self, label: np.ndarray) -> np.ndarray:
        """Dataset class indices (255 = ignore) -> indices into :attr:`classes` (255 kept)."""
        lut = np.full(256, 255, np.int64)
        lut[:len(self.truth)] = self.truth
        return lut[label]


def estimate_nbytes(model, samples: Sequence, size: int | None = None, half: bool = True,
                    prior: PriorSettings | None = None, guided: bool = False) -> int:
    """Bytes an :class:`EvalCache` of ``model``'s outputs on ``samples`` takes (its
    :attr:`~EvalCache.nbytes`), from the image and label headers, without decoding: features, ground
    truth, the head's weights, with ``prior`` (open-set credit settings) the ImageNet sentence maps and, with
    ``guided``, the images kept as guides (those whose label has the image's size)."""
    conv = final_projection(model)
    if conv is None:
        raise ProLabError("This model's head does not end in a 1x1 convolution; its outputs cannot be cached "
                          "(use evaluate).")
    size = model.config.input_size if size is None else size
    total = 4 * conv.out_channels * (conv.in_channels + 1)  # the head's weight and bias, float32
    for s in samples:
        try:
            with Image.open(s.image) as im:
                w, h = im.size
            with Image.open(s.label) as lab:
                lw, lh = lab.size
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise ProLabError(f"Cannot read {s.stem}: {exc}") from None
        rh, rw = resized_shape(h, w, size)
        cells = (rh // OUTPUT_STRIDE) * (rw // OUTPUT_STRIDE)
        total += cells * conv.in_channels * (2 if half else 4) + lw * lh
        if guided and (lw, lh) == (w, h):
            total += 3 * lw * lh
        if prior is not None:  # the ImageNet network's stride-32 grid (each stride-2 step rounds up)
            ph, pw = resized_shape(h, w, prior.short_side)
            total += model.label_space.dim * math.ceil(ph / 32) * math.ceil(pw / 32) * (2 if half else 4)
    return total


def cache_subset(cache: EvalCache, indices: Sequence[int]) -> EvalCache:
    """An :class:`EvalCache` over some of ``cache``'s images (``indices``, in that order), sharing their cached
    outputs (no copy, no forward pass): e.g. the search and guard halves of :mod:`prolab.description_search`."""
    picked = [cache.images[int(i)] for i in indices]
    if not picked:
        raise ProLabError("A part of an evaluation set needs at least one image.")
    part = EvalCache(cache.model, picked, cache.weight, cache.bias, cache.classes, name=cache.name,
                     split=cache.split, label_key=cache.label_key, mapping=cache.mapping, size=cache.size,
                     flip=cache.flip, prior=cache.prior, guided=cache.guided)
    part.build_seconds = cache.build_seconds * len(picked) / max(1, len(cache))
    return part
