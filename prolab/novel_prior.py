"""Open-set credit: give description-only classes a chance against the classes a model was trained on.

Why (measured in bench/unseen_categories.py, ``unseen_animals`` model, MSRC-v2 val): a class added from
its descriptions alone (:meth:`prolab.labelspace.LabelSpace.extended`) almost never wins a pixel. Its
properties were never positive targets together, so on its own pixels the network activates the
property pattern of some trained class instead: its margin to the best trained class there is
-0.4 to -0.7, and no scoring choice (temperature, soft or top-k
sentence assignment, direct cosine with the mean sentence) lifted the six unseen animals above 0.5 IoU.
Two facts survive, though: (1) on pixels of a class it never trained on the best trained score is low
(median 0.65, against 0.9997 on trained classes' pixels), so *that* something unknown is there is
visible; (2) *what* it is, the segmentation head has discarded, but the pretrained encoder's own
ImageNet classifier still knows (a cow is an "ox", a sheep a "ram").

So a class ``j`` whose sentences the trained classes do not explain (its *novelty* ``nu_j`` in [0, 1],
decided from sentences alone by :class:`prolab.alignment.Alignment`) gets, on top of its score, a credit

    x_j = weight * nu_j * (1 - max over the model's trained classes of score(x)) * w_j(x)
    score_j(x) <- score_j(x) + (1 - score_j(x)) * (1 - exp(-x_j))

where ``w_j(x)`` is a softmax, over every class of the label space, of the cosine between the class's
mean sentence embedding and the pixel's *ImageNet sentence embedding*: the probability-weighted sum of
the sentence embeddings of the ImageNet classifier's ``top`` classes at that location (ConSE, Norouzi
et al., ICLR 2014), computed by the unmodified ImageNet-pretrained EfficientNet-Lite at stride 32.
Known classes' scores (novelty 0) are not changed; where the trained classes explain a pixel (score ~1) the
credit vanishes, and credited scores stay below 1. The ImageNet network saw ImageNet's labels (including its animals) in pre-training;
the segmentation training never did. ``weight`` and ``temperature`` were chosen on COCO128 (the ten
COCO animals, never on MSRC-v2); see docs/RESULTS.md.
"""
from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources

import numpy as np
import torch
import torch.nn.functional as F

from prolab.caches import CACHE_SIZES
from prolab.encoder import TextEncoder
from prolab.errors import ProLabError
from prolab.images import load_image
from prolab.input_shape import resized_shape
from prolab.model.efficientnet import EfficientNetLite, load_pretrained

#: ImageNet-1k class names, one per line in classifier order ("imagenet-simple-labels", MIT licence).
IMAGENET_CLASSES_FILE = "imagenet_classes.txt"


@dataclass(frozen=True)
class PriorSettings:
    """How much credit description-only classes get (see the module docstring)."""

    weight: float = 16.0
    temperature: float = 0.01  # of the softmax over classes of cos(class text, ImageNet sentence map)
    top: int = 10  # ImageNet classes averaged per location
    short_side: int = 352  # input short side of the ImageNet network

    def __post_init__(self):
        if not (self.weight >= 0 and self.temperature > 0 and self.top >= 1 and self.short_side >= 32):
            raise ProLabError(f"Invalid open-set credit settings: {self}.")


def imagenet_class_names() -> list[str]:
    """The 1000 ImageNet class names in the classifier's order."""
    text = resources.files("prolab.resources").joinpath(IMAGENET_CLASSES_FILE).read_text(encoding="utf-8")
    names = [line.strip() for line in text.splitlines() if line.strip()]
    if len(names) != 1000:
        raise ProLabError(f"{IMAGENET_CLASSES_FILE} lists {len(names)} classes, expected 1000.")
    return names


class ImageNetPrior:
    """The ImageNet-pretrained EfficientNet-Lite with its classifier, read-only and re-entrant.

    ``sentence_map`` turns an image into per-location sentence embeddings (D, h, w) at stride 32.
    """

    def __init__(self, variant: str = "efficientnet-lite0"):
        self.variant = variant
        self.net = load_pretrained(EfficientNetLite(variant, classifier=True)).eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.names = imagenet_class_names()
        self._label_embeddings: dict[tuple[str, str], torch.Tensor] = {}

    def label_embeddings(self, encoder) -> torch.Tensor:
        """(1000, D) unit sentence embeddings of the ImageNet class names (encoded once per encoder)."""
        key = (encoder.id, encoder.template)
        if key not in self._label_embeddings:
            self._label_embeddings[key] = F.normalize(
                torch.as_tensor(encoder.encode(self.names), dtype=torch.float32), dim=1)
        return self._label_embeddings[key]

    def probabilities(self, image: np.ndarray, short_side: int) -> torch.Tensor:
        """ImageNet class probabilities (1000, h, w) at stride 32 (the classifier applied per location)."""
        image = load_image(image)
        h, w = resized_shape(image.shape[0], image.shape[1], short_side)
        x = torch.from_numpy(image).permute(2, 0, 1)[None].float().div_(255.0)
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
        x = (x - 0.5) / 0.5  # the packaged weights were trained on inputs in [-1, 1]
        with torch.no_grad():
            feats = self.net.head(self.net(x)[-1])[0]  # (1280, h/32, w/32)
            c, fh, fw = feats.shape
            logits = self.net.classifier(feats.reshape(c, -1).T)  # (h*w, 1000)
            return logits.softmax(1).T.reshape(-1, fh, fw)

    def sentence_map(self, image: np.ndarray, encoder, settings: PriorSettings = PriorSettings()) -> torch.Tensor:
        """(D, h, w) unit vectors: per location, the probability-weighted mean of the sentence embeddings of
        the ``top`` most likely ImageNet classes."""
        probs = self.probabilities(image, settings.short_side)
        labels = self.label_embeddings(encoder)
        top = probs.topk(min(settings.top, probs.shape[0]), dim=0)  # (T, h, w)
        emb = torch.einsum("thw,thwd->dhw", top.values, labels[top.indices])
        return F.normalize(emb, dim=0)


@functools.lru_cache(maxsize=CACHE_SIZES.imagenet_priors)
def load_prior(variant: str = "efficientnet-lite0") -> ImageNetPrior:
    """The shared read-only :class:`ImageNetPrior` (weights loaded once per process and variant)."""
    return ImageNetPrior(variant)


def prior_variant(model) -> str:
    """The EfficientNet-Lite variant whose ImageNet classifier serves ``model`` (its own backbone's
    variant when it is one, else Lite0)."""
    backbone = str(getattr(model.config, "backbone", ""))
    return backbone if backbone.startswith("efficientnet-lite") else "efficientnet-lite0"


def sentence_mapper(model, settings: PriorSettings = PriorSettings(), encoder=None):
    """``image -> (D, h, w)`` ImageNet sentence map for a property ``model`` (its label space's encoder
    unless ``encoder`` is given); loads the ImageNet network once."""
    space = model.label_space
    encoder = encoder or TextEncoder(space.encoder_id, template=space.template)
    prior = load_prior(prior_variant(model))
    prior.label_embeddings(encoder)
    return functools.partial(prior.sentence_map, encoder=encoder, settings=settings)


def class_text_embeddings(space) -> torch.Tensor:
    """(C, D) unit mean sentence embedding of each class of a :class:`~prolab.labelspace.LabelSpace`."""
    emb = torch.as_tensor(space.sentence_embeddings, dtype=torch.float32)
    owner = torch.as_tensor(space.sentence_class, dtype=torch.int64)
    sums = torch.zeros(space.num_classes, emb.shape[1]).index_add_(0, owner, emb)
    return F.normalize(sums, dim=1)


def credit_shares(class_text: torch.Tensor, novel: np.ndarray, sentence_map: torch.Tensor,
                  size: tuple[int, int], settings: PriorSettings = PriorSettings()) -> torch.Tensor:
    """(N, h, w): for each of the N ``novel`` classes ((C,) bool), its softmax share (over all C classes
    of ``class_text``, (C, D)) of the cosine with ``sentence_map`` (D, h', w'), resized to ``size``."""
    with torch.no_grad():
        sm = F.interpolate(sentence_map[None].float(), size=tuple(size), mode="bilinear", align_corners=False)[0]
        cos = torch.einsum("cd,dhw->chw", class_text, F.normalize(sm, dim=0))
        return (cos / settings.temperature).softmax(0)[torch.as_tensor(novel, dtype=torch.bool)]


def apply_credit(scores: torch.Tensor, novelty: np.ndarray, shares: torch.Tensor, explained: torch.Tensor,
                 settings: PriorSettings = PriorSettings()) -> torch.Tensor:
    """``scores`` (C, h, w) with the rows of novel classes raised towards 1: ``s + (1 - s) * (1 - exp(-x))``
    with ``x = weight * novelty * (1 - explained) * share``. ``novelty`` is (C,) in [0, 1] (rows with 0 are
    unchanged; ``shares`` has one map per row with novelty > 0), ``explained`` the (h, w) best trained-class
    score. Scores stay cosines in [0, 1] (so an unknown threshold keeps its meaning) and the order among
    equally novel classes follows their shares."""
    novelty = np.asarray(novelty, np.float32)
    rows = torch.as_tensor(np.flatnonzero(novelty > 0), dtype=torch.int64)
    with torch.no_grad():
        unexplained = 1.0 - explained.clamp(0.0, 1.0)
        nu = torch.as_tensor(novelty[novelty > 0], dtype=scores.dtype)[:, None, None]
        gain = -torch.expm1(-settings.weight * nu * unexplained * shares)  # 1 - exp(-x), exact for small x
        out = scores.clone()
        s = out.index_select(0, rows)
        out[rows] = s + (1.0 - s).clamp(min=0.0) * gain
    return out


def credit_scores(scores: torch.Tensor, novelty: np.ndarray, class_text: torch.Tensor,
                  sentence_map: torch.Tensor, explained: torch.Tensor,
                  settings: PriorSettings = PriorSettings()) -> torch.Tensor:
    """Class scores (C, h, w) with the open-set credit added in proportion to ``novelty`` (C,).

    ``class_text`` is the (C, D) of :func:`class_text_embeddings` for the same classes, ``sentence_map``
    the (D, h', w') of :meth:`ImageNetPrior.sentence_map` (resized here to the scores' resolution),
    ``explained`` the (h, w) best score of the model's trained classes. Pure.
    """
    novelty = np.asarray(novelty, np.float32)
    if scores.dim() != 3 or novelty.shape[0] != scores.shape[0] or class_text.shape[0] != scores.shape[0]:
        raise ProLabError(f"credit_scores: {tuple(scores.shape)} scores, {novelty.shape[0]} novelty values and "
                          f"{class_text.shape[0]} class embeddings do not match.")
    if not (novelty > 0).any() or settings.weight == 0:
        return scores
    shares = credit_shares(class_text, novelty > 0, sentence_map, scores.shape[-2:], settings)
    return apply_credit(scores, novelty, shares, explained, settings)


@dataclass(frozen=True, eq=False)
class OpenSetCredit:
    """The open-set credit for one list of classes: how novel each is, their class texts, the settings and
    the ImageNet sentence mapper. Built by :class:`prolab.class_scorer.ClassScorer`, the one place that
    decides (from sentences, :class:`prolab.alignment.Alignment`) how novel a class is.

    ``credit(scores, sentence_map, explained)`` credits one image's (C, h, w) scores; :meth:`shares` and
    :meth:`apply` split that in two for callers that re-score one image many times (the app).
    """

    novelty: np.ndarray  # (C,) float32 in [0, 1]
    class_text: torch.Tensor  # (C, D) unit mean sentence embeddings
    settings: PriorSettings
    sentence_map: Callable[[np.ndarray], torch.Tensor]  # image -> (D, h, w), see ImageNetPrior.sentence_map

    @classmethod
    def for_novelty(cls, model, novelty: np.ndarray, class_text: torch.Tensor | Callable[[], torch.Tensor],
                    settings: PriorSettings | None = PriorSettings(), encoder=None) -> "OpenSetCredit | None":
        """The credit for classes of the given ``novelty`` scored by a property ``model``; None when nothing
        needs it (``settings`` None or weight 0, or no class with novelty > 0). ``class_text`` may be a
        callable, so its sentences are encoded only when the credit is needed."""
        novelty = np.asarray(novelty, np.float32)
        if settings is None or settings.weight == 0 or getattr(model, "label_space", None) is None:
            return None
        if not (novelty > 0).any():
            return None
        text = class_text() if callable(class_text) else class_text
        if text.shape[0] != novelty.shape[0]:
            raise ProLabError(f"{text.shape[0]} class texts for {novelty.shape[0]} classes.")
        return cls(novelty, text, settings, sentence_mapper(model, settings, encoder))

    @property
    def novel(self) -> np.ndarray:
        """(C,) bool: the classes that get some credit."""
        return self.novelty > 0

    def shares(self, sentence_map: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """(N, h, w) shares of the novel classes (:func:`credit_shares`) for one image's sentence map."""
        return credit_shares(self.class_text, self.novel, sentence_map, size, self.settings)

    def apply(self, scores: torch.Tensor, shares: torch.Tensor, explained: torch.Tensor) -> torch.Tensor:
        """``scores`` with the credit of precomputed ``shares`` (:func:`apply_credit`)."""
        return apply_credit(scores, self.novelty, shares, explained, self.settings)

    def __call__(self, scores: torch.Tensor, sentence_map: torch.Tensor, explained: torch.Tensor) -> torch.Tensor:
        return credit_scores(scores, self.novelty, self.class_text, sentence_map, explained, self.settings)


@dataclass(frozen=True, eq=False)
class ImageCredit:
    """An :class:`OpenSetCredit` with one image's shares: re-scoring that image needs no ImageNet pass."""

    credit: OpenSetCredit
    shares: torch.Tensor

    def apply(self, scores: torch.Tensor, explained: torch.Tensor) -> torch.Tensor:
        return self.credit.apply(scores, self.shares, explained)

    @property
    def nbytes(self) -> int:
        return self.shares.element_size() * self.shares.nelement()
