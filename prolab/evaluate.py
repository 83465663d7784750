"""Evaluation: mIoU, per-class IoU and pixel accuracy of a segmenter on a dataset, as JSON.

The model's outputs are scored against the *dataset's own classes* by
:class:`~prolab.class_scorer.ClassScorer` (the scorer of ``predict`` and the app too): for a property
model the dataset's classes are the model's training classes they map to, or are given by their
descriptions (each sentence on its nearest training property, the class aligned with the training
classes by its sentences); for a category model the logits of those classes are kept. Optionally the same forward pass is also scored against
the ADE20K-150 teacher pseudo-labels ("pixel agreement with the teacher").

The per-image loop (:func:`model_outputs`: ground truth, image, network output) is the one
:class:`prolab.eval_cache.EvalCache` runs too; comparing and reporting results is :mod:`prolab.eval_report`.
Under torchrun each process evaluates its share of the images and the confusion counts are summed
(:mod:`prolab.distributed`).
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from tqdm import tqdm

from prolab.calibration import PixelSample, sample_pixels
from prolab.class_scorer import ClassScorer
from prolab.data.dataset import read_index_png
from prolab.data.readers import ADE_KEY, SegSample, ade_classes
from prolab.data.union import load_union
from prolab.descriptions import DescriptionSet
from prolab.distributed import DistInfo, all_reduce_sum, shard, together
from prolab.encoder import TextEncoder
from prolab.errors import ProLabError, name_list
from prolab.images import load_image
from prolab.inference import LowRankFactors, embed_image_factored, segment
from prolab.novel_prior import PriorSettings
from prolab.quality import default_guided

log = logging.getLogger(__name__)
IGNORE = 255


# ---------------------------------------------------------------------------- metrics
class ConfusionMatrix:
    """Accumulates an (N, N) confusion matrix (rows = ground truth, columns = prediction)."""

    def __init__(self, num_classes: int):
        self.n = int(num_classes)
        self.matrix = np.zeros((self.n, self.n), np.int64)
        self.missed = np.zeros(self.n, np.int64)  # per GT class: valid pixels predicted as unknown

    def update(self, pred: np.ndarray, gt: np.ndarray, ignore_index: int = IGNORE) -> None:
        """Add one image; ``gt == ignore_index`` and out-of-range predictions (unknown) are skipped
        for the matrix, but a valid GT pixel predicted as unknown still counts as a miss."""
        pred = np.asarray(pred).ravel().astype(np.int64)
        gt = np.asarray(gt).ravel().astype(np.int64)
        if pred.shape != gt.shape:
            raise ProLabError(f"Prediction and label sizes differ: {pred.shape} vs {gt.shape}.")
        valid = (gt != ignore_index) & (gt >= 0) & (gt < self.n)
        known = valid & (pred >= 0) & (pred < self.n)
        self.matrix += np.bincount(gt[known] * self.n + pred[known], minlength=self.n * self.n
                                   ).reshape(self.n, self.n)
        self.missed += np.bincount(gt[valid & ~known], minlength=self.n)

    def all_reduce(self, dist: DistInfo) -> None:
        """Sum the counts of every process of ``dist`` into each (integer counts: the sum is exact, so
        the metrics equal those of one process that saw every image)."""
        self.matrix = all_reduce_sum(self.matrix, dist)
        self.missed = all_reduce_sum(self.missed, dist)

    def metrics(self, class_names: list[str] | None = None) -> dict:
        """``miou`` (mean over classes present in GT or predictions), ``pixel_accuracy``, per class IoU.

        IoU = TP / (TP + FP + FN); classes that appear neither in the ground truth nor in the
        predictions have no IoU (``null``) and are left out of the mean.
        """
        m = self.matrix.astype(np.float64)
        missed = self.missed.astype(np.float64)
        tp = np.diag(m)
        gt_count = m.sum(1) + missed
        union = gt_count + m.sum(0) - tp
        with np.errstate(invalid="ignore", divide="ignore"):
            iou = np.where(union > 0, tp / union, np.nan)
            acc = np.where(gt_count > 0, tp / gt_count, np.nan)
        total = gt_count.sum()
        names = class_names or [str(i) for i in range(self.n)]
        return {
            "miou": float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
            "pixel_accuracy": float(tp.sum() / total) if total else float("nan"),
            "mean_accuracy": float(np.nanmean(acc)) if np.isfinite(acc).any() else float("nan"),
            "labelled_pixels": int(total),
            "per_class_iou": {n: (None if np.isnan(v) else float(v)) for n, v in zip(names, iou)},
            "per_class_pixels": {n: int(c) for n, c in zip(names, gt_count)},
        }


def ground_truth(label: np.ndarray, offset: int, num_classes: int, path) -> np.ndarray:
    """Class indices (uint8, 255 = ignore) of a label file; a value that is no class is an error."""
    label = label.astype(np.int64)
    if offset:
        label = np.where(label == 0, IGNORE, label - offset)
    bad = (label != IGNORE) & ((label < 0) | (label >= num_classes))
    if bad.any():
        raise ProLabError(f"{path}: value {int(label[bad][0])} is not a class index (the class list has "
                          f"{num_classes} classes; 255 = ignore).")
    return label.astype(np.uint8)


# ---------------------------------------------------------------------------- class restriction
def load_mapping(model_dir: str | Path | None) -> dict[str, dict[str, str]]:
    """The dataset -> model class mapping saved with a model, else the shipped union mapping."""
    if model_dir is not None and (Path(model_dir) / "dataset_mapping.json").is_file():
        return json.loads((Path(model_dir) / "dataset_mapping.json").read_text(encoding="utf-8"))
    try:
        return load_union().mapping
    except ProLabError:
        return {}


def class_indices(model_classes: list[str], dataset_classes: list[str], key: str | None,
                  mapping: dict[str, dict[str, str]], allow_missing: bool = False) -> list[int | None]:
    """Index in ``model_classes`` of every dataset class: through ``mapping[key]``, else by its own name
    (ignoring case). A class found neither way is an error, or None with ``allow_missing``."""
    lookup = {c.casefold(): i for i, c in enumerate(model_classes)}
    table = mapping.get(key or "", {})
    out, missing = [], []
    for c in dataset_classes:
        idx = lookup.get(str(table.get(c, c)).casefold())
        if idx is None:
            idx = lookup.get(c.casefold())
        if idx is None:
            missing.append(c)
        out.append(idx)
    if missing and not allow_missing:
        raise ProLabError(
            f"The model has no class for {name_list(missing)}; pass --descriptions to project them onto its "
            "properties.")
    return out


def make_scorer(model, dataset_classes: list[str], key: str | None, mapping: dict,
                descriptions=None, encoder=None, prior: PriorSettings | None = None,
                allow_missing: bool = False, space=None, calibrated: bool = True):
    """The :class:`~prolab.class_scorer.ClassScorer` over ``dataset_classes`` for ``model``.

    Property model: the model's training classes the dataset's classes map to (through ``mapping[key]``,
    else by name), or, with ``descriptions`` ({class: sentences} for the dataset's classes), those classes
    given by their sentences (see :func:`restrict_space`). Category model: the logits of the mapped classes.
    ``prior`` (:class:`prolab.novel_prior.PriorSettings`) turns on the open-set credit for classes whose
    sentences the model's training classes do not explain. ``space``: pick the classes from this label space
    over the model's properties instead of the model's own (e.g. one extended with described classes); the
    model's own space stays what counts as trained. ``calibrated``: add the model's score offsets
    (:mod:`prolab.calibration`; False: ProLab's scores as they are).
    """
    if model.config.supervision == "category":
        if descriptions is not None:
            raise ProLabError("A category model cannot score classes from descriptions.")
        return ClassScorer(model, rows=class_indices(model.class_names, dataset_classes, key, mapping),
                           class_names=list(dataset_classes), calibrated=calibrated)
    if model.label_space is None:
        raise ProLabError("This property model has no label space.")
    space = restrict_space(model.label_space if space is None else space, dataset_classes, key, mapping,
                           descriptions, encoder, allow_missing)
    return ClassScorer(model, space, prior=prior, encoder=encoder, calibrated=calibrated)


def restrict_space(space, dataset_classes: list[str], key: str | None = None, mapping: dict | None = None,
                   descriptions=None, encoder=None, allow_missing: bool = False):
    """``space`` (a :class:`~prolab.labelspace.LabelSpace`) cut down to ``dataset_classes``, in their
    order and with their names: the classes a dataset is scored against.

    Without ``descriptions`` each dataset class is its class in ``space`` (through ``mapping[key]``, else
    by name): its row and its sentences. With ``descriptions`` ({class: sentences} covering the dataset's
    classes) the classes are given by those sentences, each sentence on its nearest centre of ``space``
    (:meth:`LabelSpace.edited`). Centres and property names are kept, so activations computed for
    ``space`` stay valid. With ``allow_missing`` a class found neither way has no sentences and an
    all-zero row (it is never predicted) instead of being an error.
    """
    if descriptions is not None:
        ds = descriptions if isinstance(descriptions, DescriptionSet) else DescriptionSet(descriptions)
        missing = ds.missing(dataset_classes)
        if missing and not allow_missing:
            raise ProLabError(f"The descriptions have no entry for {name_list(missing)}.")
        present = [c for c in dataset_classes if c not in missing]
        if not present:
            raise ProLabError("The descriptions have no entry for any of the dataset's classes.")
        encoder = encoder or TextEncoder(space.encoder_id, template=space.template)
        given = space.edited(ds.subset(present), encoder)
        where = {c: i for i, c in enumerate(present)}
        return given.select([where.get(c) for c in dataset_classes], list(dataset_classes))
    index = class_indices(space.class_names, dataset_classes, key, mapping or {}, allow_missing)
    return space.select(index, list(dataset_classes))


# ---------------------------------------------------------------------------- evaluation loop
def label_guide(image: np.ndarray | None, label_shape: tuple[int, ...],
                guided: bool | None = None) -> np.ndarray | None:
    """The ``guide`` :func:`~prolab.inference.segment` takes when scoring labels of ``label_shape``: the image
    when upsampling is guided (None: as the default quality step, :func:`prolab.quality.default_guided`) and
    the image has the labels' size, else None (bilinear; a label file of another size has no image to follow).
    Every evaluation path picks its guide here, so that they all score alike."""
    if image is None or not default_guided(guided) or tuple(image.shape[:2]) != tuple(label_shape[:2]):
        return None
    return image


@dataclass(frozen=True)
class ImageOutput:
    """One evaluation image through the network: what :func:`model_outputs` yields."""

    sample: SegSample
    image: np.ndarray  # (H, W, 3) uint8, as loaded
    embeddings: torch.Tensor  # (D, h, w) the network's pixel embeddings (or logits)
    factors: LowRankFactors | None  # a property model's low-rank factors of ``embeddings``, else None
    label: np.ndarray | None  # (H, W) uint8 class indices (255 = ignore); None: not read or no label

    @property
    def output(self) -> torch.Tensor | LowRankFactors:
        """What a :class:`~prolab.class_scorer.ClassScorer` scores: the low-rank factors where there are
        some (several times faster, the same maths), else the embeddings."""
        return self.factors if self.factors is not None else self.embeddings


def model_outputs(model, samples: Sequence[SegSample], classes: list[str] | None = None, offset: int = 0, *,
                  size: int | None = None, mode: Literal["whole", "slide"] = "whole", crop: int = 512,
                  stride: int = 341, flip: bool = False, scales: tuple[float, ...] = (1.0,),
                  image_transform: Callable[[np.ndarray], np.ndarray] | None = None) -> Iterator[ImageOutput]:
    """The per-image loop of every evaluation (:func:`evaluate`, :meth:`prolab.eval_cache.EvalCache.build`):
    each sample's ground truth (with ``classes``, for samples with a label; read first, so that a mask
    with a value that is no class fails before the forward pass), its image and the network's output with
    :func:`~prolab.inference.embed_image_factored`'s options. ``image_transform`` maps each loaded
    (H, W, 3) uint8 image to the one the network sees (same size; e.g. another camera's rendering,
    :func:`prolab.data.transforms.render_uint8`)."""
    for s in samples:
        gt = None
        if classes is not None and s.label is not None:
            # a value that is no class is an error (as in the app), not silently ignored
            gt = ground_truth(read_index_png(s.label), offset, len(classes), s.label)
        image = load_image(s.image)
        if image_transform is not None:
            shape = image.shape
            image = image_transform(image)
            if image.shape != shape or image.dtype != np.uint8:
                raise ProLabError(f"image_transform must return a {shape} uint8 image (the labels' size), "
                                  f"got {image.dtype} {image.shape}.")
        emb, factors = embed_image_factored(model, image, size=size, mode=mode, crop=crop, stride=stride,
                                            flip=flip, scales=scales)
        yield ImageOutput(s, image, emb, factors, gt)


def evaluate(model, source, size: int | None = None, mode: Literal["whole", "slide"] = "whole",
             crop: int = 512, stride: int = 341, flip: bool = False, scales: tuple[float, ...] = (1.0,),
             mapping: dict | None = None, descriptions=None, prior: PriorSettings | None = PriorSettings(),
             teacher: bool = False, teacher_threshold: float = 0.0, limit: int | None = None,
             progress: bool = False, dist: DistInfo | None = None,
             image_transform: Callable[[np.ndarray], np.ndarray] | None = None, guided: bool | None = None) -> dict:
    """Evaluate ``model`` on a :class:`~prolab.data.SegSource`; returns a JSON-ready dict.

    With ``teacher`` the same forward pass is also scored against the source's ADE-150 teacher
    labels over the 150 ADE classes (pixels labelled "other" and, with ``teacher_threshold`` > 0,
    pixels less confident than that are skipped); the result goes under ``"teacher_ade150"``.
    ``prior`` gives classes projected from ``descriptions`` that the model never trained on the open-set
    credit of :mod:`prolab.novel_prior` (None: plain ProLab scores).

    ``dist`` (:func:`prolab.distributed.init_distributed`, under torchrun): this process runs its share
    of the images (:func:`~prolab.distributed.shard`) and the confusion counts of every process are
    summed, so each process returns exactly the numbers one process computes from all the images.
    ``image_transform``: see :func:`model_outputs` (the labels are unchanged). ``guided``: upsample the
    class scores with the image as guide (:func:`~prolab.inference.segment`; images whose labels have
    another size are upsampled plainly); None: as the default quality step does
    (:func:`prolab.quality.default_guided`).
    """
    dist = dist or DistInfo()
    guided = default_guided(guided)
    mapping = mapping if mapping is not None else {}
    samples = source.samples[:limit] if limit else source.samples
    if not samples:
        raise ProLabError(f"{source.name} has no images to evaluate.")
    has_gt = source.has_gt
    offset = int(source.meta.get("offset", 0))
    scorer = cm = None
    if has_gt:
        scorer = make_scorer(model, source.classes, source.label_key or source.name, mapping, descriptions,
                             prior=prior)
        cm = ConfusionMatrix(len(source.classes))
    t_scorer = t_cm = None
    if teacher:
        if not any(s.teacher for s in samples):
            raise ProLabError(f"{source.name} has no teacher labels.")
        t_scorer = make_scorer(model, ade_classes(), ADE_KEY, mapping)
        t_cm = ConfusionMatrix(150)
    if scorer is None and t_scorer is None:
        raise ProLabError(f"{source.name} has no labels to evaluate against.")
    mine = shard(samples, dist)
    outputs = model_outputs(model, mine, source.classes if scorer is not None else None, offset, size=size,
                            mode=mode, crop=crop, stride=stride, flip=flip, scales=scales,
                            image_transform=image_transform)
    if progress and dist.main:
        outputs = tqdm(outputs, total=len(mine), desc=f"eval {source.name}", dynamic_ncols=True)

    def score_my_share() -> None:
        for out in outputs:
            s = out.sample
            if scorer is not None and out.label is not None:
                pred = segment(scorer(out.output, scorer.prior_map(out.image)), out.label.shape,
                               guide=label_guide(out.image, out.label.shape, guided))
                cm.update(pred, out.label)
            if t_scorer is not None and s.teacher is not None:
                t = read_index_png(s.teacher).astype(np.int64)
                valid = t > 0
                if teacher_threshold > 0 and s.teacher_conf is not None:
                    valid &= read_index_png(s.teacher_conf) >= round(teacher_threshold * 255)
                t = np.where(valid, t - 1, IGNORE)
                t_cm.update(segment(t_scorer(out.output), t.shape, guide=label_guide(out.image, t.shape, guided)), t)

    together(score_my_share, dist)  # one process's bad image stops all of them (no wait in the sums)
    for matrix in (cm, t_cm):
        if matrix is not None:
            matrix.all_reduce(dist)
    result = {"dataset": source.name, "split": source.split, "images": len(samples),
              "mode": mode, "size": size or model.config.input_size,
              "supervision": model.config.supervision}
    if mode == "slide":
        result.update(crop=crop, stride=stride)
    result["flip"] = flip
    if tuple(scales) != (1.0,):
        result["scales"] = [float(x) for x in scales]
    result["backend"] = getattr(model, "backend", "torch")
    result["guided_upsampling"] = guided
    result["score_offsets"] = len(scorer.offsets.nonzero()) if scorer is not None and scorer.offsets is not None else 0
    if cm is not None:
        result.update(cm.metrics(source.classes))
    if t_cm is not None:
        tm = t_cm.metrics(ade_classes())
        result["teacher_ade150"] = {"pixel_agreement": tm["pixel_accuracy"], "miou": tm["miou"],
                                    "labelled_pixels": tm["labelled_pixels"],
                                    "confidence_threshold": teacher_threshold,
                                    "per_class_iou": tm["per_class_iou"]}
    return result


def collect_pixels(model, source, mapping: dict, fraction: float = 0.02, seed: int = 0,
                   limit: int | None = None, descriptions=None, prior: PriorSettings | None = None,
                   encoder=None, **inference) -> PixelSample:
    """A :class:`~prolab.calibration.PixelSample` (what :func:`~prolab.calibration.fit_offsets` fits) of one
    labelled :class:`~prolab.data.SegSource`: the model's class scores without offsets over the dataset's
    classes, as ``prolab evaluate`` scores them (its scorer and forward pass, ``inference`` =
    :func:`~prolab.evaluate.model_outputs`'s options; with ``descriptions`` the classes given by their
    sentences, classes the model never trained on with the open-set credit of ``prior``), ``fraction`` of
    each image's labelled pixels drawn with ``seed``. Each column takes the offset the scorer would give it
    (:meth:`~prolab.class_scorer.ClassScorer.offset_sources`), so a class the model never trained on is in
    the fit, competing for its pixels, without an offset of its own."""
    if not source.has_gt:
        raise ProLabError(f"{source.name} has no labels to fit score offsets on.")
    key = source.label_key or source.name
    scorer = make_scorer(model, source.classes, key, mapping, descriptions, encoder=encoder, prior=prior,
                         calibrated=False)
    sources = scorer.offset_sources()
    samples = [s for s in (source.samples[:limit] if limit else source.samples) if s.label is not None]
    rng = np.random.default_rng(seed)
    rows, labels = [], []
    for out in model_outputs(model, samples, source.classes, int(source.meta.get("offset", 0)), **inference):
        if out.label is None:
            continue
        s, lab = sample_pixels(scorer(out.output, scorer.prior_map(out.image)), out.label, fraction, rng)
        rows.append(s)
        labels.append(lab)
    if not rows:
        raise ProLabError(f"{source.name}: no labelled images to fit score offsets on.")
    return PixelSample(torch.cat(rows), torch.cat(labels), [t for t, _ in sources], source.name,
                       [w for _, w in sources])
