"""One image -> labels (and property activations) with a fixed label space: the per-frame step that
``predict``, video files and the app's webcam share.

A :class:`FrameSegmenter` is set up once per label space (its :class:`~prolab.class_scorer.ClassScorer`:
the alignment with the trained classes and the open-set credit are assembled there) and then called per
frame, for either backend: ``model`` may be a :class:`prolab.onnx_backend.OnnxSegmenter`.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from prolab.class_scorer import ClassScorer
from prolab.errors import ProLabError
from prolab.inference import check_inference_options, embed_image_factored, segment
from prolab.novel_prior import PriorSettings
from prolab.quality import default_guided


@dataclass
class FrameResult:
    labels: np.ndarray  # (H, W) int32 class indices at the frame's size, -1 = unknown
    activations: torch.Tensor | None  # (K, h, w) property activations (property models), stride 4


class FrameSegmenter:
    """Segment frames with ``model`` (either backend) and ``label_space`` (None: the model's own).

    ``options`` are :func:`prolab.inference.embed_image`'s keyword arguments (size, mode, flip,
    scales, ...). ``prior=None`` turns the open-set credit off; ``guided``: upsample with the frame as guide
    (None: as the default quality step, :func:`prolab.quality.default_guided`). Holds no per-frame state: one instance
    may serve a whole video, or one user's webcam stream.
    """

    def __init__(self, model, label_space=None, options: dict | None = None,
                 prior: PriorSettings | None = PriorSettings(), unknown_threshold: float | None = None,
                 encoder=None, guided: bool | None = None):
        self.model = model
        # segment(..., guide=image): boundaries follow the image's edges (None: as the default quality step)
        self.guided = default_guided(guided)
        self.options = dict(options or {})
        check_inference_options(self.options.get("size"), self.options.get("mode", "whole"),
                                self.options.get("crop", 512), self.options.get("stride", 341))
        if unknown_threshold is not None and not np.isfinite(unknown_threshold):
            raise ProLabError(f"The unknown threshold must be a number, got {unknown_threshold}.")
        self.unknown_threshold = unknown_threshold
        self.is_property = model.config.supervision == "property"
        space = label_space if label_space is not None else model.label_space
        if self.is_property and space is None:
            raise ProLabError("This property model has no label space; pass one.")
        self.space = space if self.is_property else None
        self.scorer = ClassScorer(model, self.space, prior=prior, encoder=encoder) if self.is_property \
            else ClassScorer(model)
        self.class_names = self.scorer.class_names

    def __call__(self, image: np.ndarray) -> FrameResult:
        """(H, W, 3) uint8 RGB -> :class:`FrameResult`."""
        emb, factors = embed_image_factored(self.model, image, **self.options)
        # the activations come back too (for any heatmap); prior_map is None unless a class needs the credit
        scores, act = self.scorer.score(factors if factors is not None else emb, self.scorer.prior_map(image))
        return FrameResult(segment(scores, image.shape[:2], self.unknown_threshold,
                                   guide=image if self.guided else None), act)


def class_shares(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """(num_classes + 1,) share of the pixels of each class; the last entry is unknown (-1)."""
    counts = np.bincount(np.where(labels < 0, num_classes, labels).ravel(), minlength=num_classes + 1)
    return counts[:num_classes + 1] / max(1, labels.size)
