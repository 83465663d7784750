"""The one class scorer: a model's pixel output plus a label set -> class scores.

``prolab predict``, ``prolab evaluate``, :class:`~prolab.eval_cache.EvalCache`, the frame segmenter and the
app's :class:`~prolab.edit_session.EditSession` all score through :meth:`ClassScorer.score` (activations ->
trained-class scores -> open-set credit -> class scores), so the same model, image and descriptions give the
same mask everywhere. A caller that re-scores one image many times (the app) passes an :class:`ImageCache`:
what depends on the image alone is then computed once.

For a property model and a label space over its properties (every class given by sentences: the model's
own training classes, another label set, edited or novel classes), a class ``c`` scores at pixel ``x``

    s_c(x) = max(property_c(x), aligned_c(x))          then the open-set credit

- ``property_c``: ProLab's ``cos(property activations, multi-hot of c)`` (:mod:`prolab.scoring`);
- ``aligned_c``: ``max_t weight[c, t] * score_t(x)`` over the model's *trained* classes ``t``, where the
  weights come from how well the sentences of ``c`` match those of ``t``
  (:class:`~prolab.alignment.Alignment`): a class that means a trained class under another name scores
  like it, and a trained class missing from the label set lends its pixels to its nearest class;
- the open-set credit (:mod:`prolab.novel_prior`) raises classes in proportion to their *novelty* (how
  little the trained classes explain their sentences) where no trained class explains the pixel;
- then the model's score offset (:mod:`prolab.calibration`, ``model.score_offsets``) of the trained class
  ``c`` means (its most similar mutual best match ``t``), times ``1 - novelty[c]``: a trained class and the
  same class in other words get the same correction, a novel class none.

What counts as trained is decided once, here, from sentences alone (never from class names). A category
model scores a fixed list of its logits (softmax over the kept rows).
"""
from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from prolab.alignment import Alignment, AlignmentSettings, SimilarityMemo
from prolab.calibration import offset_values
from prolab.errors import ProLabError
from prolab.images import load_image
from prolab.inference import (LowRankFactors, centres_key, embed_image, embedding_activations, inverse_norms,
                              rescore_activations, segment)
from prolab.labelspace import LabelSpace
from prolab.model import PropertySegmenter
from prolab.novel_prior import ImageCredit, OpenSetCredit, PriorSettings, class_text_embeddings
from prolab.quality import default_guided


def _raise(values: torch.Tensor, power: float) -> None:
    """``values ** power`` in place (by repeated squaring when ``power`` is a power of two)."""
    if power >= 1 and float(power).is_integer() and (int(power) & (int(power) - 1)) == 0:
        for _ in range(int(power).bit_length() - 1):
            values.mul_(values)
    else:
        values.pow_(power)


#: Pixels per block of :func:`transport_scores`: the block's (pairs x pixels) values stay in the CPU cache
#: (several times faster than one pass over a 128 x 128 map with ~350 pairs).
TRANSPORT_BLOCK = 4096
#: ... and at most this many bytes per block: a large label set can have tens of thousands of pairs, whose
#: (pairs x 4096) block alone would take gigabytes (300 classes: 1.5 GB transient before this cap).
TRANSPORT_BLOCK_BYTES = 8 * 2 ** 20


def transport_scores(trained_scores: torch.Tensor, num_classes: int,
                     pairs: tuple[torch.Tensor, ...]) -> torch.Tensor:
    """(C, N) label-set class scores from (T, N) trained class scores: ``max_t weight[c, t] * score_t **
    power[c, t]`` over the non-zero ``pairs`` of :meth:`Alignment.pairs` (a class that receives none scores 0)."""
    c, t, w, p = pairs
    n = trained_scores.shape[1]
    if len(c) == 0 or n == 0:
        return trained_scores.new_zeros((num_classes, n))
    order = torch.argsort(p, stable=True)  # pairs of one power side by side: raised in place, as one slice
    c, t, w, p = c[order], t[order], w[order].to(trained_scores.dtype)[:, None], p[order]
    powers, counts = torch.unique_consecutive(p, return_counts=True)
    bounds = torch.cumsum(counts, 0).tolist()
    groups = [(b - int(k), b, float(q)) for b, k, q in zip(bounds, counts.tolist(), powers.tolist()) if q != 1.0]
    index = c[:, None]
    step = max(64, min(TRANSPORT_BLOCK, TRANSPORT_BLOCK_BYTES // (len(c) * trained_scores.element_size())))
    step = min(step, n)
    # One output and two block buffers reused for every block: a fresh (pairs x step) block per step,
    # interleaved with the small blocks kept for the output, fragmented the heap (four 300-class sets at once:
    # +2.3 GB peak, +0.76 GB still resident after the call; bench.input_limits).
    out = trained_scores.new_empty((num_classes, n))
    values_buf = trained_scores.new_empty((len(c), step))
    block_buf = trained_scores.new_empty((num_classes, step))
    for start in range(0, n, step):
        width = min(step, n - start)
        values = values_buf if width == step else values_buf[:, :width].contiguous()
        torch.index_select(trained_scores[:, start:start + width], 0, t, out=values).clamp_(min=0.0)
        for lo, hi, q in groups:
            _raise(values[lo:hi], q)
        values.mul_(w)
        # into a contiguous block: scattering into a strided view of ``out`` is ten times slower
        block = block_buf if width == step else block_buf[:, :width].contiguous()
        block.zero_().scatter_reduce_(0, index.expand_as(values), values, "amax")
        out[:, start:start + width] = block
    return out


def _nbytes(t: torch.Tensor | None) -> int:
    return 0 if t is None else t.element_size() * t.nelement()


class ImageCache:
    """What :meth:`ClassScorer.score` derives from one network output and may reuse for the next label set:
    the activations (and their inverse norms) per set of centres, the trained classes' scores, the ImageNet
    sentence map of ``image`` and the open-set credit's shares per credit. One per (image, network output);
    a new output needs a new cache. Not thread-safe (one user's)."""

    def __init__(self, image: np.ndarray | None = None):
        self.image = image  # for the open-set credit's ImageNet map (None: no credit)
        self.activations: tuple | None = None  # (centres key, activations, inverse norms)
        self.trained: torch.Tensor | None = None  # (T, h, w) trained classes' scores: the output's alone
        self.prior_map: torch.Tensor | None = None
        self.credit: tuple | None = None  # (OpenSetCredit, size, ImageCredit): matched by identity

    @property
    def nbytes(self) -> int:
        """Bytes held. Safe to read from another thread (the app's memory bound reads every user's): each
        field is read once, so an entry its owner drops meanwhile is counted or not, never half-read."""
        activations, credit = self.activations, self.credit
        total = _nbytes(self.trained) + _nbytes(self.prior_map)
        if activations is not None:
            total += _nbytes(activations[1]) + _nbytes(activations[2])
        return total + (credit[2].nbytes if credit is not None else 0)


class ClassScorer:
    """Class scores of one label set for one model (read-only after construction; thread-safe).

    Property model: ``space`` is a :class:`~prolab.labelspace.LabelSpace` whose classes have their
    sentences (``model.label_space.edited(descriptions, encoder)`` or ``.extended(...)``; default the
    model's own). Category model: ``rows`` are the logit indices of the classes kept, ``class_names`` their
    names. ``prior``: open-set credit settings (None: off); ``alignment``: how classes borrow trained
    classes' scores (None: plain ProLab property scores); ``memo``: a
    :class:`~prolab.alignment.SimilarityMemo` of the model's space, for callers that score many edited
    versions of one label set. ``calibrated``: add the model's score offsets (False: ProLab's scores as they
    are, e.g. to fit new offsets).
    """

    def __init__(self, model, space=None, *, rows: list[int] | None = None, class_names: list[str] | None = None,
                 prior: PriorSettings | None = PriorSettings(),
                 alignment: AlignmentSettings | None = AlignmentSettings(), encoder=None,
                 memo: SimilarityMemo | None = None, calibrated: bool = True):
        self.model = model
        self.category = model.config.supervision == "category"
        self.temperature = float(model.config.temperature)
        self.rows = self.space = self.trained = self.alignment = self.credit = self.offsets = None
        self._pairs = None
        self._same_centres = True
        if self.category:
            if space is not None:
                raise ProLabError("A category model has a fixed set of classes; it cannot use a label space.")
            self.rows = list(range(len(model.class_names))) if rows is None else list(rows)
            self.class_names = list(model.class_names) if class_names is None else list(class_names)
            if len(self.rows) != len(self.class_names):
                raise ProLabError(f"{len(self.rows)} logit rows for {len(self.class_names)} classes.")
            self.offsets = self._offset_vector(model, calibrated)
            return
        space = model.label_space if space is None else space
        if space is None:
            raise ProLabError("This property model has no label space; pass one to score its embeddings.")
        self.space = space
        self.class_names = list(space.class_names)
        self._centres_key = centres_key(space.centers, self.temperature)  # which cached activations fit
        self.trained = model.label_space
        if alignment is not None and self.trained is not None and self.trained.dim == space.dim:
            self.alignment = Alignment.between(space, self.trained, alignment, memo)
            self._pairs = self.alignment.pairs()
            self._same_centres = (space.centers is self.trained.centers
                                  or np.array_equal(space.centers, self.trained.centers))
            if prior is not None:
                self.credit = OpenSetCredit.for_novelty(model, self.alignment.novelty,
                                                        lambda: class_text_embeddings(space), prior, encoder)
        self.offsets = self._offset_vector(model, calibrated)

    def _offset_vector(self, model, calibrated: bool) -> torch.Tensor | None:
        """(C,) offsets of the classes (:meth:`offset_sources` times the model's offsets); None when all 0."""
        table = getattr(model, "score_offsets", None) if calibrated else None
        if not table:
            return None
        values = offset_values(self.offset_sources(), table)
        return values if bool(values.any()) else None

    def offset_sources(self) -> list[tuple[str | None, float]]:
        """For each class, the trained class whose score offset it takes and the share it takes: a category
        model's kept logit rows take their own, fully; a property model's class takes the offset of the
        trained class it means (its most similar mutual best match) times how well the trained classes
        explain it (``1 - novelty``). Without an alignment nothing says which trained class a class means
        (names never do), so ``(None, 0)`` everywhere; likewise for a class with no mutual match or novelty
        1. What :func:`prolab.calibration.fit_offsets` fits through and what scoring adds are the same
        numbers."""
        if self.category:
            return [(self.model.class_names[r], 1.0) for r in self.rows]
        al = self.alignment
        if al is None:
            return [(None, 0.0)] * len(self.class_names)
        mutual = al.mutual if al.mutual is not None else al.weight > 0
        out: list[tuple[str | None, float]] = []
        for c in range(len(self.class_names)):
            if not mutual[c].any():
                out.append((None, 0.0))
                continue
            share = 1.0 - float(al.novelty[c])
            t = int(np.argmax(np.where(mutual[c], al.similarity[c], -np.inf)))
            out.append((al.trained_names[t], share) if share > 0 else (None, 0.0))
        return out

    # ------------------------------------------------------------------ facts
    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def needs_prior_map(self) -> bool:
        """Whether scoring an image needs its ImageNet sentence map (:meth:`prior_map`)."""
        return self.credit is not None

    def novel_classes(self) -> list[str]:
        """The classes the trained classes do not fully explain (novelty > 0): they get the open-set credit
        when it is on."""
        if self.alignment is None:
            return []
        return [c for c, n in zip(self.class_names, self.alignment.novelty) if n > 0]

    def prior_map(self, image: np.ndarray) -> torch.Tensor | None:
        """The image's ImageNet sentence map for the open-set credit (None when no class needs it)."""
        return None if self.credit is None else self.credit.sentence_map(image)

    # ------------------------------------------------------------------ scoring
    def activations(self, output) -> torch.Tensor:
        """Property activations (K, h, w) of an output map or its low-rank factors over ``space``'s centres."""
        return embedding_activations(output, self.space, self.temperature)

    def trained_scores(self, output, activations: torch.Tensor,
                       inv_norm: torch.Tensor | None = None) -> torch.Tensor | None:
        """(T, h, w) scores of the model's trained classes (None without an alignment); ``inv_norm``:
        :func:`~prolab.inference.inverse_norms` of ``activations``, when the caller has it."""
        if self.alignment is None:
            return None
        if self._same_centres:
            return rescore_activations(activations, self.trained, inv_norm)
        return rescore_activations(embedding_activations(output, self.trained, self.temperature), self.trained)

    def score_activations(self, activations: torch.Tensor, trained: torch.Tensor | None = None,
                          inv_norm: torch.Tensor | None = None, credit: ImageCredit | None = None) -> torch.Tensor:
        """Class scores (C, h, w) from cached ``activations`` (and ``inv_norm``, see
        :func:`~prolab.inference.inverse_norms`), the :meth:`trained_scores` and one image's ``credit``
        (:meth:`image_credit`)."""
        scores = rescore_activations(activations, self.space, inv_norm)
        if self.alignment is not None and trained is not None:
            c, h, w = scores.shape
            with torch.no_grad():
                aligned = transport_scores(trained.reshape(trained.shape[0], -1), c, self._pairs).reshape(c, h, w)
                scores = torch.maximum(scores, aligned) if self.alignment.settings.property_scores else aligned
                if credit is not None:
                    scores = credit.apply(scores, trained.max(0).values)
        return self._offset(scores)

    def _offset(self, scores: torch.Tensor) -> torch.Tensor:
        if self.offsets is None:
            return scores
        return scores + self.offsets.to(scores.dtype)[:, None, None]

    def image_credit(self, prior_map: torch.Tensor | None, size: tuple[int, int]) -> ImageCredit | None:
        """The open-set credit's shares for one image at the scores' ``size`` (None when off)."""
        if self.credit is None or prior_map is None:
            return None
        return ImageCredit(self.credit, self.credit.shares(prior_map, size))

    def score(self, output, prior_map: torch.Tensor | None = None,
              cache: ImageCache | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Class scores (C, h, w) of an :func:`~prolab.inference.embed_image` output map (or its
        :class:`~prolab.inference.LowRankFactors`) and, for a property model, the property activations
        (K, h, w) they came from (None for a category model). ``prior_map`` (:meth:`prior_map` of the
        image) adds the open-set credit; ``cache`` keeps what the output alone gives, for the next call
        (its ``image`` then gives the prior map)."""
        if self.category:
            return self._offset(torch.softmax(output[self.rows], dim=0)), None
        cache = ImageCache() if cache is None else cache
        key = self._centres_key
        if cache.activations is None or cache.activations[0] != key:
            cache.activations = None  # free the old ones first
            act = self.activations(output)
            cache.activations = (key, act, inverse_norms(act))  # the norms once, for every class set
        _, act, inv = cache.activations
        if cache.trained is None:
            cache.trained = self.trained_scores(output, act, inv)
        size = tuple(act.shape[-2:])
        credit = None
        if self.credit is not None:
            if cache.credit is None or cache.credit[0] is not self.credit or cache.credit[1] != size:
                if prior_map is None:
                    if cache.prior_map is None and cache.image is not None:
                        cache.prior_map = self.prior_map(cache.image)
                    prior_map = cache.prior_map
                cache.credit = (self.credit, size, self.image_credit(prior_map, size))
            credit = cache.credit[2]
        return self.score_activations(act, cache.trained, inv, credit), act

    def __call__(self, output, prior_map: torch.Tensor | None = None) -> torch.Tensor:
        """The class scores of :meth:`score`."""
        return self.score(output, prior_map)[0]


def model_class_scores(model: PropertySegmenter, output: torch.Tensor | LowRankFactors,
                       label_space: LabelSpace | None = None) -> torch.Tensor:
    """Class scores (C, h, w) from an :func:`embed_image` map (or its :class:`LowRankFactors`) through
    :class:`~prolab.class_scorer.ClassScorer` without the open-set credit: ProLab scores aligned with the
    trained classes for a property model (``label_space`` or the model's own), softmax probabilities for a
    category model."""
    return ClassScorer(model, label_space, prior=None)(output)


def predict(model: PropertySegmenter, image: np.ndarray, label_space: LabelSpace | None = None,
            size: int | None = None, mode: Literal["whole", "slide"] = "whole",
            unknown_threshold: float | None = None, crop: int = 512, stride: int = 341,
            flip: bool = False, prior=None, guided: bool | None = None) -> np.ndarray:
    """Convenience: image -> (H, W) int32 label map at the image's own size, scored as ``prolab predict``
    scores it (:class:`ClassScorer`); ``prior``: open-set credit settings
    (:class:`~prolab.novel_prior.PriorSettings`, which ``predict_images`` uses by default; None, the default
    here: off); ``guided``: upsampling with the image as guide (None: the default quality step's)."""
    image = load_image(image)
    output = embed_image(model, image, size=size, mode=mode, crop=crop, stride=stride, flip=flip)
    scorer = ClassScorer(model, label_space, prior=prior)
    return segment(scorer(output, scorer.prior_map(image)), image.shape[:2], unknown_threshold,
                   guide=image if default_guided(guided) else None)
