"""One user's interactive working set: a model, a label set (editable), novel categories and the
cached pixel embeddings of the current image.

The network runs once per image (:meth:`Workbench.forward`); every later change (label set,
edited descriptions, novel categories, a rebuilt label space, the unknown threshold) only re-scores
the cached embeddings (:meth:`Workbench.segment`), which is what makes interactive editing cheap.

Which properties a label set is scored with:

- ``"model"`` (default): the label set's sentences are assigned to the nearest of the model's own
  training properties (:meth:`LabelSpace.edited` without re-clustering). The model was trained to
  activate exactly these K properties, so this is the sound choice for any label set.
- ``"own"``: K-Means over the label set's own sentences (:meth:`rebuild`). The pixel embeddings live
  in the same sentence space, so these centres can be scored too, but the model never saw them;
  useful to explore K, less accurate.

Novel categories are always projected onto the properties in use (:meth:`LabelSpace.extended`).
"""
from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
import torch
from PIL import Image

from prolab.alignment import Alignment, SimilarityMemo
from prolab.class_scorer import ClassScorer
from prolab.colorize import make_palette
from prolab.descriptions import DescriptionSet
from prolab.encoder import TextEncoder
from prolab.errors import ProLabError, finite_number
from prolab.images import MIN_SIDE, load_image
from prolab.inference import (LowRankFactors, centres_key, embed_image_factored, embedding_activations,
                              inverse_norms, segment)
from prolab.labelsets import LabelSet
from prolab.labelspace import LabelSpace
from prolab.model import PropertySegmenter, SegmenterConfig
from prolab.novel_prior import ImageCredit, PriorSettings

#: Working images are downscaled to at most this many pixels on the long side: the label map,
#: overlays and exports are made at this size (the network input has its own size).
MAX_SIDE = 1024
MODES = ("model", "own")
ProgressFn = Callable[[float, str], None]


@dataclass
class Segmentation:
    """The result of scoring the cached embeddings with one label space."""

    space: LabelSpace | None  # None for a category-supervised model
    class_names: list[str]
    palette: np.ndarray  # (C, 3) uint8, one colour per class of ``class_names``
    labels: np.ndarray  # (H, W) int16 (int32 beyond 32k classes) at the working image size, -1 = unknown
    scores: np.ndarray | None  # (C, h, w) float32 class scores, kept only for a category model
    activations: np.ndarray | None  # (K, h, w) float32; None for a category model
    seconds: dict[str, float] = field(default_factory=dict)
    num_novel: int = 0
    inv_norm: torch.Tensor | None = None  # inverse activation norms, to re-derive the class scores
    scorer: ClassScorer | None = None  # what turned the activations into class scores (property model)
    credit: ImageCredit | None = None  # the open-set credit in the scores (prolab.novel_prior)
    trained: torch.Tensor | None = None  # (T, h, w) trained-class scores (the workbench's cached tensor, not a copy)
    threshold: float | None = None  # the unknown threshold it was made with
    forward_key: tuple | None = field(default=None, repr=False)  # the network output it scored

    @property
    def property_names(self) -> list[str]:
        return list(self.space.property_names) if self.space is not None else []

    @property
    def grid_shape(self) -> tuple[int, int]:
        """(h, w) of the score maps (the embedding resolution)."""
        kept = self.scores if self.scores is not None else self.activations
        return int(kept.shape[1]), int(kept.shape[2])

    @property
    def class_scores(self) -> np.ndarray:
        """(C, h, w) float32 class scores. For a property model they are re-derived from the kept
        activations when asked for (the same computation, so the same values): not keeping them saves
        a third of the memory each user's result takes."""
        if self.scores is not None:
            return self.scores
        act = torch.from_numpy(self.activations)
        return self.scorer.score_activations(act, self.trained, self.inv_norm, self.credit).numpy()


@dataclass(frozen=True)
class DescriptionChange:
    """How one class's sentences differ between two description sets."""

    name: str
    added: list[str]
    removed: list[str]
    status: str  # "edited", "added" or "removed"


def description_changes(before: DescriptionSet, after: DescriptionSet) -> list[DescriptionChange]:
    """Per-class differences, in the order of ``after`` then classes only in ``before``."""
    out = []
    for name in after:
        old = before.find(name)
        if old is None:
            out.append(DescriptionChange(name, after[name], [], "added"))
            continue
        a, b = after[name], before[old]
        added, removed = [s for s in a if s not in b], [s for s in b if s not in a]
        if added or removed:
            out.append(DescriptionChange(name, added, removed, "edited"))
    for name in before:
        if after.find(name) is None:
            out.append(DescriptionChange(name, [], before[name], "removed"))
    return out


def resize_for_work(image: np.ndarray, max_side: int = MAX_SIDE, name: str = "image") -> np.ndarray:
    """Downscale (never upscale) so that the long side is at most ``max_side``; an image so elongated
    that its short side would drop below :data:`prolab.images.MIN_SIDE` is refused here, at upload,
    rather than failing later at segmentation."""
    h, w = image.shape[:2]
    if max(h, w) <= max_side:
        return image
    s = max_side / max(h, w)
    if min(h, w) * s < MIN_SIDE:
        raise ProLabError(f"{name} is {w} x {h} pixels, too elongated: images need at least {MIN_SIDE} px on "
                          f"each side after scaling the long side to {max_side} (at most "
                          f"{max_side // MIN_SIDE}:1). Crop it first.")
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))


#: Derived base spaces a workbench keeps, so that switching back to a recent label set is instant.
MAX_RECENT_SPACES = 4


class SpaceStore(Protocol):
    """Where unedited label sets' derived spaces may be shared between workbenches (the app keeps one for
    every user; a notebook needs none)."""

    def get_or_build(self, model, descriptions: DescriptionSet, build: Callable[[], LabelSpace]) -> LabelSpace:
        ...


@dataclass(frozen=True)
class LabelState:
    """What a workbench scores with (everything but the image): taken before a change, put back when the
    change fails (:meth:`Workbench.label_state` / :meth:`Workbench.restore`)."""

    model: PropertySegmenter  # or its ONNX backend (prolab.onnx_backend.OnnxSegmenter)
    inference_size: int | None
    inference_options: tuple
    label_set: LabelSet
    descriptions: DescriptionSet
    novel: DescriptionSet
    mode: str
    own: LabelSpace | None
    own_k: int | None


class Workbench:
    """Interactive state for one user. Not thread-safe: callers serialise access (one lock per user).

    Args:
        model: a :class:`~prolab.model.PropertySegmenter` (shared read-only between workbenches).
        encoder: the text encoder the model's label space was built with (None for a category model).
        label_set: the classes to segment with.
        inference_size: short side of the network input (default: the model's ``input_size``).
        shared_spaces: a :class:`SpaceStore` used by every user's workbench, so that an unedited
            label set's derived space is held once per process rather than once per user.
        prior: open-set credit settings for classes the model never trained on (novel categories,
            label-set classes outside its training classes), see :mod:`prolab.novel_prior`; None: off.
    """

    def __init__(self, model: PropertySegmenter, encoder: TextEncoder | None, label_set: LabelSet,
                 inference_size: int | None = None, shared_spaces: SpaceStore | None = None,
                 prior: PriorSettings | None = PriorSettings()):
        self.model = model
        self.encoder = encoder
        self.inference_size = inference_size
        # more embed_image_factored options (flip, scales: the speed/quality dial's test-time augmentation)
        self.inference_options: dict = {}
        self.mode = "model" if self.has_model_space else "own"
        self.label_set = label_set
        self.descriptions = label_set.descriptions
        self.novel = DescriptionSet({})
        self.own_k: int | None = None
        self._own: LabelSpace | None = None
        self.shared = shared_spaces
        self._bases: list[tuple] = []  # recent (mode, descriptions, own space, base space), oldest first
        self._full: tuple | None = None  # (base space, novel set, full space)
        # Per-image state, owned by this (one user's) workbench: never shared between users.
        self.image: np.ndarray | None = None
        self.image_name = ""  # the file the image came from ("" for an array)
        self.source_size: tuple[int, int] | None = None  # (width, height) before downscaling, when it was
        self._image_key: str | None = None
        self._output = None  # LowRankFactors or the (D or C, h, w) output map
        self._output_key: tuple | None = None
        self._scored: tuple | None = None  # (output and centres key, activations, inverse norms)
        self._trained: tuple | None = None  # (output key, the trained classes' scores): reused by every edit
        self.forward_seconds = 0.0
        self.last: Segmentation | None = None
        self._previous: tuple[list[str], np.ndarray] | None = None  # class names and labels
        self._palette: tuple | None = None
        self.prior = prior
        self._prior_map: tuple | None = None  # (image key, ImageNet sentence map)
        self._credit: tuple | None = None  # ((image key, size), space, ImageCredit or None)
        self._scorer: tuple | None = None  # (space, model, their ClassScorer)
        self._memo: SimilarityMemo | None = None  # each class's similarity to the trained classes

    # ------------------------------------------------------------------ model facts
    @property
    def is_property_model(self) -> bool:
        return self.model.config.supervision == "property"

    @property
    def has_model_space(self) -> bool:
        return self.is_property_model and self.model.label_space is not None

    @property
    def temperature(self) -> float:
        return float(self.model.config.temperature)

    def _need_property_model(self, what: str) -> None:
        if not self.is_property_model:
            raise ProLabError(f"This model is category-supervised: it only knows its {len(self.model.class_names)} "
                              f"training classes, so {what} is not possible. Load a property (ProLab) model.")
        if self.encoder is None:
            raise ProLabError(f"{what} needs a text encoder, and none is loaded.")

    # ------------------------------------------------------------------ label space
    def set_label_set(self, label_set: LabelSet) -> None:
        """Switch classes; edits of the previous set are dropped, novel categories are kept."""
        if not self.is_property_model and label_set.class_names != self.model.class_names:
            raise ProLabError(f"This model is category-supervised: it only segments its own "
                              f"{len(self.model.class_names)} training classes, not another label set. "
                              "Load a property (ProLab) model to use other label sets.")
        self.label_set = label_set
        self.descriptions = label_set.descriptions
        if self.mode == "own":
            self._own = None  # a K-Means space belongs to the descriptions it was built from
            if self.has_model_space:
                self.mode = "model"

    def set_descriptions(self, descriptions: DescriptionSet) -> None:
        """Replace the label set's descriptions (edited sentences, classes added or removed)."""
        if len(descriptions) == 0:
            raise ProLabError("The label set needs at least one class.")
        self.descriptions = descriptions

    def reset_descriptions(self) -> None:
        self.descriptions = self.label_set.descriptions

    def set_novel(self, novel: DescriptionSet) -> None:
        """Novel categories added on top of the label set (an empty set removes them)."""
        if len(novel):
            self._need_property_model("adding novel categories")
        self.novel = novel

    def use_model_properties(self) -> None:
        if not self.has_model_space:
            raise ProLabError("This model has no training label space; use the label set's own properties.")
        self.mode = "model"

    def rebuild(self, k: int, progress: ProgressFn | None = None) -> LabelSpace:
        """K-Means over the current descriptions with ``k`` properties; switches to ``"own"`` mode."""
        self._need_property_model("rebuilding the label space")
        if progress:
            progress(0.1, f"Encoding {self.descriptions.num_sentences} sentences")
        self.encoder.encode([s for c in self.descriptions for s in self.descriptions[c]])
        if progress:
            progress(0.5, f"K-Means with K={k}")
        space = LabelSpace.build(self.descriptions, self.encoder, k=int(k))
        if space.dim != self.model.config.embed_dim:
            raise ProLabError(f"The encoder gives {space.dim}-d sentences but the model outputs "
                              f"{self.model.config.embed_dim}-d pixels.")
        self._own, self.own_k, self.mode = space, int(k), "own"
        self._bases.clear()
        return space

    def base_space(self) -> LabelSpace:
        """The label set (with edits) over the properties in use, without novel categories."""
        self._need_property_model("scoring a label set")
        # Entries hold the objects they were derived from and are matched by identity, so a freed
        # object whose id() is reused can never hit a stale entry.
        for i, (mode, ds, own, space) in enumerate(self._bases):
            if mode == self.mode and ds is self.descriptions and own is self._own:
                self._bases.append(self._bases.pop(i))
                return space
        if self.mode == "model":
            ms = self.model.label_space
            if _built_from(ms, self.descriptions):
                space = ms
            elif self.shared is not None and self.descriptions is self.label_set.descriptions:
                # an unedited shipped label set: every user gets the same derived space
                space = self.shared.get_or_build(self.model, self.descriptions,
                                                 lambda: ms.edited(self.descriptions, self.encoder))
            else:
                space = ms.edited(self.descriptions, self.encoder)
        else:
            if self._own is None:
                raise ProLabError("No label space of its own has been built for this label set yet; "
                                  "rebuild it with a K first.")
            own = self._own
            space = own if _built_from(own, self.descriptions) else own.edited(self.descriptions, self.encoder)
        self._bases.append((self.mode, self.descriptions, self._own, space))
        del self._bases[:-MAX_RECENT_SPACES]  # switching back to a recent label set is instant
        return space

    def space(self) -> LabelSpace:
        """The label space segmentation uses: :meth:`base_space` plus the novel categories."""
        base = self.base_space()
        if self._full is not None and self._full[0] is base and self._full[1] is self.novel:
            return self._full[2]
        full = base.extended(self.novel, self.encoder) if len(self.novel) else base
        self._full = (base, self.novel, full)
        return full

    def palette(self, class_names: list[str]) -> np.ndarray:
        """Label-set colours for its classes (by name), generated colours for the others."""
        if self._palette is None or self._palette[0] is not self.label_set or self._palette[1] != class_names:
            self._palette = (self.label_set, list(class_names), self._make_palette(class_names))
        return self._palette[2]

    def _make_palette(self, class_names: list[str]) -> np.ndarray:
        base = {n.casefold(): c for n, c in zip(self.label_set.class_names, self.label_set.palette)}
        extra = make_palette(len(base) + len(class_names))[len(base):]
        out = np.zeros((len(class_names), 3), np.uint8)
        for i, n in enumerate(class_names):
            out[i] = base.get(n.casefold(), extra[i])
        return out

    # ------------------------------------------------------------------ image
    def set_image(self, image) -> np.ndarray:
        """Load (any source :func:`prolab.images.load_image` accepts) and keep a working copy, downscaled
        to :data:`MAX_SIDE` (:attr:`source_size` keeps the size it had)."""
        name = str(image) if isinstance(image, (str, os.PathLike)) else "image"
        loaded = load_image(image)
        img = resize_for_work(loaded, name=name)
        key = hashlib.sha1(img.tobytes() + str(img.shape).encode()).hexdigest()
        self.image_name = name if isinstance(image, (str, os.PathLike)) else ""
        self.source_size = (loaded.shape[1], loaded.shape[0]) if loaded.shape != img.shape else None
        if key != self._image_key:
            # drop everything derived from the previous image at once (memory is per user)
            self.image, self._image_key = img, key
            self.last, self._previous, self._output, self._output_key, self._scored = None, None, None, None, None
            self._trained = None
        return img

    def forward(self):
        """The network's output for the current image, computed once per (image, model, size): the
        :class:`~prolab.inference.LowRankFactors` of the embeddings when they are smaller (a sixth of the
        memory for a 64-channel decoder and D = 384, and faster to score), else the (D or C, h, w) map."""
        if self.image is None:
            raise ProLabError("No image yet: upload one or pick an example.")
        key = self._forward_key()
        if self._output_key != key:
            self._output = self._scored = self._trained = None  # free the old output before computing the new one
            t = time.perf_counter()
            emb, factors = embed_image_factored(self.model, self.image, size=self.inference_size,
                                                **self.inference_options)
            # the factors when they are the smaller form (decoder channels < D; true of every real model)
            compact = factors is not None and factors.features.shape[0] < factors.dim
            self._output = factors if compact else emb
            self.forward_seconds = time.perf_counter() - t
            self._output_key = key
        return self._output

    def _forward_key(self) -> tuple:
        """What the cached network output depends on: image, network (backend), size and options."""
        return (self._image_key, self.model, self.inference_size, tuple(sorted(self.inference_options.items())))

    @property
    def needs_forward(self) -> bool:
        """Whether segmenting now runs the network (a new image, model, size or option)."""
        return not (self.has_embeddings and self._output_key == self._forward_key())

    @property
    def has_embeddings(self) -> bool:
        return self._output is not None and self._output_key is not None and self._output_key[0] == self._image_key

    def segment(self, unknown_threshold: float | None = None) -> Segmentation:
        """Score the cached embeddings with the current label space and make the label map; pixels whose
        best class score is below ``unknown_threshold`` (None or 0: off) are unknown (-1)."""
        cached = not self.needs_forward
        output = self.forward()
        t0 = time.perf_counter()
        thr = check_threshold(unknown_threshold)
        trained = None
        if self.is_property_model:
            space = self.space()
            scorer = self._scorer_for(space)
            t1 = time.perf_counter()
            last = self.last
            if last is not None and last.space is space and cached:  # only the threshold changed
                act, inv, credit, trained = torch.from_numpy(last.activations), last.inv_norm, last.credit, last.trained
                scores = torch.from_numpy(last.class_scores)
            else:
                # Activations depend on the centres only: edited or added classes over the same
                # properties reuse them (and their norms), about a third of the full cost.
                key = (self._output_key, centres_key(space.centers, self.temperature))
                if self._scored is not None and self._scored[0] == key:
                    act, inv = self._scored[1], self._scored[2]
                else:
                    act = embedding_activations(output, space, self.temperature)
                    inv = inverse_norms(act)
                    self._scored = (key, act, inv)
                # the trained classes' scores depend on the network output only: once per image
                if self._trained is None or self._trained[0] != self._output_key:
                    self._trained = None
                    self._trained = (self._output_key, scorer.trained_scores(output, act, inv))
                trained = self._trained[1]
                credit = self._credit_for(scorer, space, tuple(act.shape[-2:]))
                scores = scorer.score_activations(act, trained, inv, credit)
            names, activations = list(space.class_names), act.numpy()
        else:
            space, scorer, t1, inv, credit = None, None, t0, None, None
            scores = ClassScorer(self.model)(output)
            names, activations = list(self.model.class_names), None
        labels = segment(scores, self.image.shape[:2], thr)
        if len(names) < np.iinfo(np.int16).max:  # half the memory of int32 for every label map kept
            labels = labels.astype(np.int16)
        t2 = time.perf_counter()
        seconds = {"forward": 0.0 if cached else self.forward_seconds, "label_space": t1 - t0,
                   "rescore": t2 - t1}
        result = Segmentation(space, names, self.palette(names), labels,
                              None if activations is not None else scores.numpy(), activations,
                              seconds, num_novel=len(self.novel) if space is not None else 0, inv_norm=inv,
                              scorer=scorer, credit=credit, trained=trained, threshold=thr,
                              forward_key=self._output_key)
        if self.last is not None:  # only what changed_fraction needs of the previous result
            self._previous = (self.last.class_names, self.last.labels)
        self.last = result
        return result

    def is_current(self, unknown_threshold: float | None) -> bool:
        """Whether :attr:`last` was scored with this threshold, the label space in use now and the network
        output the current settings give: re-scoring would then change nothing."""
        last = self.last
        if last is None or last.threshold != (unknown_threshold or None):
            return False
        if last.forward_key is None or last.forward_key != self._forward_key():
            return False
        return last.space is (self.space() if self.is_property_model else None)

    def label_state(self) -> LabelState:
        """What this workbench scores with now, for :meth:`restore`."""
        return LabelState(self.model, self.inference_size, tuple(self.inference_options.items()), self.label_set,
                          self.descriptions, self.novel, self.mode, self._own, self.own_k)

    def restore(self, state: LabelState) -> None:
        """Put back what :meth:`label_state` took (a change that failed is undone this way)."""
        self.model, self.inference_size = state.model, state.inference_size
        self.inference_options = dict(state.inference_options)
        self.label_set, self.descriptions, self.novel = state.label_set, state.descriptions, state.novel
        self.mode, self._own, self.own_k = state.mode, state.own, state.own_k

    def alignment(self, space: LabelSpace | None = None) -> Alignment | None:
        """The :class:`~prolab.alignment.Alignment` of ``space`` (default :meth:`space`) with the model's
        trained classes: what each class borrows from them and how novel it is (None without one)."""
        return self._scorer_for(self.space() if space is None else space).alignment

    def _scorer_for(self, space: LabelSpace) -> ClassScorer:
        """The :class:`~prolab.class_scorer.ClassScorer` of ``space`` (built once per space: its alignment
        with the trained classes is computed from the sentences)."""
        if self._scorer is None or self._scorer[0] is not space or self._scorer[1] is not self.model:
            if self._memo is None or self._memo.trained is not self.model.label_space:
                self._memo = SimilarityMemo(self.model.label_space)
            self._scorer = (space, self.model, ClassScorer(self.model, space, prior=self.prior, encoder=self.encoder,
                                                           memo=self._memo))
        return self._scorer[2]

    def _credit_for(self, scorer: ClassScorer, space: LabelSpace, size: tuple[int, int]) -> ImageCredit | None:
        """The open-set credit of ``scorer`` with this image's shares (None when no class needs it). The
        ImageNet map is kept per image, the shares per image and space."""
        if not scorer.needs_prior_map:
            return None
        key = (self._image_key, size)
        if self._credit is None or self._credit[0] != key or self._credit[1] is not space:
            if self._prior_map is None or self._prior_map[0] != self._image_key:
                self._prior_map = None  # free the old map first
                self._prior_map = (self._image_key, scorer.prior_map(self.image))
            self._credit = (key, space, scorer.image_credit(self._prior_map[1], size))
        return self._credit[2]

    def nbytes(self) -> int:
        """Bytes of the per-image arrays this workbench holds (image, network output, last result)."""
        arrays = [self.image]
        out = self._output
        if isinstance(out, LowRankFactors):
            total = out.nbytes
        else:
            total = 0 if out is None else out.element_size() * out.nelement()
        if self._trained is not None and self._trained[1] is not None:
            total += self._trained[1].element_size() * self._trained[1].nelement()
        if self._scored is not None:
            total += self._scored[2].element_size() * self._scored[2].nelement()
            act = self._scored[1].numpy()
            if self.last is None or self.last.activations is None or \
                    not np.shares_memory(self.last.activations, act):  # else counted with the result
                total += act.nbytes
        if self.last is not None:
            arrays += [self.last.labels, self.last.scores, self.last.activations]
        if self._previous is not None:
            arrays.append(self._previous[1])
        if self._prior_map is not None:
            total += self._prior_map[1].element_size() * self._prior_map[1].nelement()
        if self._credit is not None and self._credit[2] is not None:
            total += self._credit[2].nbytes
        return total + sum(a.nbytes for a in arrays if a is not None)

    def release(self) -> None:
        """Forget the image and everything computed from it (the label set and edits are kept)."""
        self.image = self._image_key = self.source_size = None
        self.image_name = ""
        self.last = self._previous = self._output = self._output_key = self._scored = self._trained = None
        self._prior_map = self._credit = None

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



def check_threshold(value) -> float | None:
    """The unknown threshold as a float (a number or its text); None, empty or 0 is off. Anything but a
    finite number is an error."""
    return finite_number(value, "The unknown threshold") or None


def _built_from(space: LabelSpace, descriptions: DescriptionSet) -> bool:
    """Whether ``space`` holds exactly these classes and sentences (in order), checked in O(S)."""
    if space.class_names != descriptions.categories:
        return False
    sentences = [s for c in descriptions for s in descriptions[c]]
    owner = [i for i, c in enumerate(descriptions) for _ in descriptions[c]]
    return space.sentences == sentences and space.sentence_class.tolist() == owner


def suggested_k(num_sentences: int) -> int:
    """About one property per 7 descriptions (the paper's best ratio), between 2 and 256."""
    return int(min(256, max(2, round(num_sentences / 7))))


def untrained_model(label_space: LabelSpace, seed: int = 0, input_size: int = 512):
    """A small randomly initialised compact-CNN property model over ``label_space``.

    Its predictions are meaningless; it exists so that the app and its tests work before a
    trained model is available.
    """
    torch.manual_seed(seed)
    config = SegmenterConfig(backbone="compact-cnn", backbone_options={"width": 0.5},
                             embed_dim=label_space.dim, decoder_channels=32, ppm=False, aux_head=False,
                             input_size=input_size)
    return PropertySegmenter(config, label_space).eval()
