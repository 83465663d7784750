"""One user's image side: the current image, the network's output for it and what scoring derives from that
output alone (:class:`~prolab.class_scorer.ImageCache`), plus the result on screen.

The network runs once per (image, network) (:meth:`Workbench.forward`); every later change of the label
side (held by :class:`~prolab.edit_session.EditSession`) only re-scores the cached output through
:meth:`~prolab.class_scorer.ClassScorer.score`, which is what makes interactive editing cheap. The
workbench holds no label state.
"""
from __future__ import annotations

import hashlib
import os
import time
from dataclasses import dataclass, field

import numpy as np

from prolab.class_scorer import ClassScorer, ImageCache
from prolab.errors import ProLabError
from prolab.images import load_image, resize_for_work
from prolab.inference import LowRankFactors, embed_image_factored, segment
from prolab.labelspace import LabelSpace
from prolab.quality import default_guided


@dataclass(frozen=True)
class Network:
    """What the network output depends on besides the image: the network (or its ONNX backend), the input's
    short side (None: the model's) and more :func:`~prolab.inference.embed_image_factored` options (sorted
    (name, value) pairs: flip, scales)."""

    model: object
    size: int | None = None
    options: tuple = ()


@dataclass
class Segmentation:
    """One scored image: plain arrays and names."""

    space: LabelSpace | None  # None for a category-supervised model
    class_names: list[str]
    palette: np.ndarray  # (C, 3) uint8, one colour per class of ``class_names``
    labels: np.ndarray  # (H, W) int16 (int32 beyond 32k classes) at the working image size, -1 = unknown
    activations: np.ndarray | None  # (K, h, w) float32 property activations; None for a category model
    grid_shape: tuple[int, int]  # (h, w) of the score maps (the output's resolution)
    seconds: dict[str, float] = field(default_factory=dict)
    num_novel: int = 0

    @property
    def property_names(self) -> list[str]:
        return list(self.space.property_names) if self.space is not None else []


class Workbench:
    """The image side of one user's session. Not thread-safe: callers serialise access (one lock per user)."""

    def __init__(self):
        self.image: np.ndarray | None = None
        self.image_name = ""  # the file the image came from ("" for an array)
        self.source_size: tuple[int, int] | None = None  # (width, height) before downscaling, when it was
        self._image_key: str | None = None
        self._output = None  # LowRankFactors or the (D or C, h, w) output map
        self._output_key: tuple | None = None  # (image key, Network) it was computed for
        self.cache: ImageCache | None = None  # what the scorers derived from that output
        self.forward_seconds = 0.0
        self.last: Segmentation | None = None  # the result on screen
        self.last_key: tuple | None = None  # (output key, ClassScorer, threshold, guided) it was made from
        self._previous: tuple[list[str], np.ndarray] | None = None  # class names and labels before it

    # ------------------------------------------------------------------ image
    def set_image(self, image) -> np.ndarray:
        """Load (any source :func:`prolab.images.load_image` accepts) and keep a working copy, downscaled
        to :data:`prolab.images.MAX_SIDE` (:attr:`source_size` keeps the size it had)."""
        name = str(image) if isinstance(image, (str, os.PathLike)) else "image"
        loaded = load_image(image)
        img = resize_for_work(loaded, name=name)
        key = hashlib.sha1(img.tobytes() + str(img.shape).encode()).hexdigest()
        if key != self._image_key:
            self.release()  # drop everything derived from the previous image at once (memory is per user)
            self.image, self._image_key = img, key
        self.image_name = name if isinstance(image, (str, os.PathLike)) else ""
        self.source_size = (loaded.shape[1], loaded.shape[0]) if loaded.shape != img.shape else None
        return img

    def forward(self, network: Network):
        """The network's output for the current image, computed once per (image, network): the
        :class:`~prolab.inference.LowRankFactors` of the embeddings when they are smaller (a sixth of the
        memory for a 64-channel decoder and D = 384, and faster to score), else the (D or C, h, w) map."""
        if self.image is None:
            raise ProLabError("No image yet: upload one or pick an example.")
        key = (self._image_key, network)
        if self._output_key != key:
            self._output = self._output_key = self.cache = None  # free the old output before computing the new one
            t = time.perf_counter()
            emb, factors = embed_image_factored(network.model, self.image, size=network.size, **dict(network.options))
            # the factors when they are the smaller form (decoder channels < D; true of every real model)
            compact = factors is not None and factors.features.shape[0] < factors.dim
            self._output = factors if compact else emb
            self.forward_seconds = time.perf_counter() - t
            self._output_key, self.cache = key, ImageCache(self.image)
        return self._output

    def needs_forward(self, network: Network) -> bool:
        """Whether scoring with ``network`` now runs it (a new image or network)."""
        return self._output is None or self._output_key != (self._image_key, network)

    # ------------------------------------------------------------------ scoring
    def score(self, network: Network, scorer: ClassScorer, threshold: float | None, palette: np.ndarray,
              num_novel: int = 0, guided: bool | None = None) -> Segmentation:
        """Score the current image with ``scorer`` (:meth:`~prolab.class_scorer.ClassScorer.score`, the cached
        output and :attr:`cache`), make the label map (pixels whose best score is below ``threshold`` are
        unknown, -1; ``guided``: the scores upsampled with the image as guide, None: as the default quality step)
        and keep it as :attr:`last`."""
        if guided is None:  # the session passes its step's choice; only direct callers need the default
            guided = default_guided()
        cached = not self.needs_forward(network)
        output = self.forward(network)
        t = time.perf_counter()
        scores, act = scorer.score(output, cache=self.cache)
        labels = segment(scores, self.image.shape[:2], threshold, guide=self.image if guided else None)
        if scorer.num_classes < np.iinfo(np.int16).max:  # half the memory of int32 for every label map kept
            labels = labels.astype(np.int16)
        seconds = {"forward": 0.0 if cached else self.forward_seconds, "rescore": time.perf_counter() - t}
        result = Segmentation(scorer.space, list(scorer.class_names), palette, labels,
                              None if act is None else act.numpy(), tuple(scores.shape[-2:]), seconds,
                              num_novel=num_novel)
        if self.last is not None:  # only what changed_fraction needs of the previous result
            self._previous = (self.last.class_names, self.last.labels)
        self.last, self.last_key = result, (self._output_key, scorer, threshold, guided)
        return result

    def class_scores(self) -> np.ndarray:
        """(C, h, w) class scores of :attr:`last`, derived again through its scorer from the cached output
        (no forward pass, no new activations): not keeping them saves a third of each user's memory."""
        if self.last is None:
            raise ProLabError("Segment an image first.")
        (_, network), scorer, _, _ = self.last_key
        return scorer.score(self.forward(network), cache=self.cache)[0].numpy()

    def is_current(self, network: Network, space: LabelSpace | None, threshold: float | None,
                   guided: bool | None = None) -> bool:
        """Whether :attr:`last` was made with this network, space, threshold and upsampling (None: the default
        quality step's): re-scoring would change nothing."""
        guided = default_guided(guided)
        if self.last is None:
            return False
        output_key, scorer, thr, was_guided = self.last_key
        return (output_key == (self._image_key, network) and scorer.space is space and thr == threshold
                and was_guided == guided)

    # ------------------------------------------------------------------ memory
    def nbytes(self) -> int:
        """Bytes of the per-image arrays this workbench holds (image, network output, its cache, results).
        Safe to read from another thread (the app's memory bound reads every user's without their lock):
        each field is read once, so what the owner replaces meanwhile is counted or not, never half-read."""
        out, cache, last, previous = self._output, self.cache, self.last, self._previous
        if isinstance(out, LowRankFactors):
            total = out.nbytes
        else:
            total = 0 if out is None else out.element_size() * out.nelement()
        if cache is not None:
            total += cache.nbytes
        arrays = [self.image]
        if last is not None:
            arrays.append(last.labels)
            act = last.activations
            cached = cache.activations if cache is not None else None
            if act is not None and (cached is None or not np.shares_memory(act, cached[1].numpy())):
                arrays.append(act)  # else counted with the cache
        if previous is not None:
            arrays.append(previous[1])
        return total + sum(a.nbytes for a in arrays if a is not None)

    def release(self) -> None:
        """Forget the image and everything computed from it."""
        self.image = self._image_key = self.source_size = None
        self.image_name = ""
        self.last = self.last_key = self._previous = self._output = self._output_key = self.cache = None

    def changed_fraction(self) -> float | None:
        """Share of pixels whose class (by name) changed between the last two segmentations."""
        if self._previous is None or self.last is None:
            return None
        (names_a, labels_a), b = self._previous, self.last
        if labels_a.shape != b.labels.shape:
            return None
        vocab = {n: i for i, n in enumerate(dict.fromkeys(names_a + b.class_names))}
        ia = np.array([vocab[n] for n in names_a] + [-1])
        ib = np.array([vocab[n] for n in b.class_names] + [-1])
        return float((ia[labels_a] != ib[b.labels]).mean())
