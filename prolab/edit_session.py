"""One user's editing session over a model: the label set in use, the edits kept for each label set, novel
categories, the properties scored with and the speed/quality step.

Everything changes through :meth:`EditSession.apply`, one transaction: switch the label set when asked,
apply the changes, re-score the result on screen from the cached embeddings (a forward pass only when the
network changed), check that a label space can be derived, then commit (the edits are remembered for that
label set). A change that fails at any step leaves the session exactly as it was.

    session = EditSession(model, encoder, "camvid_11")
    session.segment("street.jpg")                                # one forward pass per image
    session.apply(EditClass("sky", ["a blue expanse above"]))     # re-scored, no forward pass
    session.apply(on=LabelSetChoice("ade20k_150"))                # another label set ...
    session.apply(on=LabelSetChoice("camvid_11"))                 # ... and back: the sky edit is still there

A change is a small object with an ``apply_to(session)`` method (:class:`EditClass`, :class:`ResetClass`,
:class:`UseDescriptions`, :class:`SetNovel`, :class:`Rebuild`, :class:`SwitchModel`, ...).

Which properties a label set is scored with (``mode``):

- ``"model"`` (default): the label set's sentences are assigned to the nearest of the model's own
  training properties (:meth:`LabelSpace.edited` without re-clustering). The model was trained to
  activate exactly these K properties, so this is the sound choice for any label set.
- ``"own"``: K-Means over the label set's own sentences (:func:`own_space`). The pixel embeddings live
  in the same sentence space, so these centres can be scored too, but the model never saw them;
  useful to explore K, less accurate.

Novel categories are always projected onto the properties in use (:meth:`LabelSpace.extended`).
"""
from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import numpy as np
from cachetools import LRUCache

from prolab import labelsets
from prolab.alignment import Alignment, SimilarityMemo
from prolab.caches import CACHE_SIZES, CacheSizes
from prolab.class_scorer import ClassScorer
from prolab.colorize import make_palette
from prolab.descriptions import DescriptionChange, DescriptionSet, description_changes
from prolab.encoder import TextEncoder
from prolab.errors import ProLabError, check_threshold
from prolab.labelsets import MODEL_KEY, LabelSet
from prolab.labelspace import LabelSpace
from prolab.model import PropertySegmenter
from prolab.novel_prior import PriorSettings
from prolab.onnx_backend import OnnxPool, with_backend
from prolab.quality import DEFAULT_QUALITY, Quality, get_quality
from prolab.workbench import Network, Segmentation, Workbench

# ---------------------------------------------------------------------------- the label state
MODES = ("model", "own")
ProgressFn = Callable[[float, str], None]


@dataclass(frozen=True)
class LabelState:
    """The label side of a session, replaced whole by every change (so a snapshot is one reference)."""

    label_set: LabelSet
    descriptions: DescriptionSet  # the label set's, or this session's edit of them
    novel: DescriptionSet = field(default_factory=lambda: DescriptionSet({}))
    mode: str = "model"
    own: LabelSpace | None = None  # the K-Means space of mode "own" (built from ``descriptions``)

    @property
    def is_edited(self) -> bool:
        return self.descriptions is not self.label_set.descriptions

    @property
    def own_k(self) -> int | None:
        return None if self.own is None else self.own.k


class SpaceStore(Protocol):
    """Where unedited label sets' derived spaces may be shared between sessions (the app keeps one for
    every user; a notebook needs none)."""

    def get_or_build(self, model, descriptions: DescriptionSet, build: Callable[[], LabelSpace]) -> LabelSpace:
        ...


def own_space(descriptions: DescriptionSet, encoder: TextEncoder, k: int, embed_dim: int,
              progress: ProgressFn | None = None) -> LabelSpace:
    """K-Means over ``descriptions``' sentences with ``k`` properties, checked against the model's ``embed_dim``."""
    if progress:
        progress(0.1, f"Encoding {descriptions.num_sentences} sentences")
    encoder.encode([s for c in descriptions for s in descriptions[c]])
    if progress:
        progress(0.5, f"K-Means with K={k}")
    space = LabelSpace.build(descriptions, encoder, k=int(k))
    if space.dim != embed_dim:
        raise ProLabError(f"The encoder gives {space.dim}-d sentences but the model outputs {embed_dim}-d pixels.")
    return space


class LabelSpaces:
    """The label spaces, class scorers and colours of :class:`LabelState` s over one model: derived once and
    kept for the recent ones. Entries are matched by the identity of the objects they were derived from (kept
    in the entry, so a reused ``id()`` can never hit a stale one). Not thread-safe (one user's).

    Args:
        model: the (PyTorch) model whose properties and trained classes the spaces are scored against.
        encoder: the text encoder of its label space (None for a category model).
        shared: a :class:`SpaceStore` for unedited label sets' spaces, held once per process.
        prior: open-set credit settings (:mod:`prolab.novel_prior`); None: off.
        sizes: how many recent spaces (``recent_spaces``) and similarity rows (``similarity_rows``) to keep.
    """

    def __init__(self, model: PropertySegmenter, encoder: TextEncoder | None, shared: SpaceStore | None = None,
                 prior: PriorSettings | None = PriorSettings(), sizes: CacheSizes = CACHE_SIZES):
        self.model, self.encoder, self.shared, self.prior = model, encoder, shared, prior
        recent = sizes.recent_spaces
        self._bases: LRUCache = LRUCache(recent)  # (mode, id ds, id own) -> (ds, own, space)
        self._full: LRUCache = LRUCache(recent)  # (id base, id novel) -> (base, novel, space)
        self._scorers: LRUCache = LRUCache(recent)  # id space -> (space, ClassScorer)
        self._palettes: LRUCache = LRUCache(recent)  # (id label set, names) -> (label set, palette)
        self._memo = SimilarityMemo(model.label_space, sizes.similarity_rows) \
            if model.label_space is not None else None

    # ------------------------------------------------------------------ model facts
    @property
    def is_property_model(self) -> bool:
        return self.model.config.supervision == "property"

    @property
    def has_model_space(self) -> bool:
        return self.is_property_model and self.model.label_space is not None

    def need_property_model(self, what: str) -> None:
        """Raise a clear error when ``what`` needs a property model with a text encoder."""
        if not self.is_property_model:
            raise ProLabError(f"This model is category-supervised: it only knows its {len(self.model.class_names)} "
                              f"training classes, so {what} is not possible. Load a property (ProLab) model.")
        if self.encoder is None:
            raise ProLabError(f"{what} needs a text encoder, and none is loaded.")

    # ------------------------------------------------------------------ derived
    def base(self, state: LabelState) -> LabelSpace:
        """The label set (with edits) over the properties in use, without novel categories."""
        self.need_property_model("scoring a label set")
        ds, own = state.descriptions, state.own
        key = (state.mode, id(ds), id(own))
        hit = self._bases.get(key)
        if hit is not None and hit[0] is ds and hit[1] is own:
            return hit[2]
        if state.mode == "model":
            ms = self.model.label_space
            if _built_from(ms, ds):
                space = ms
            elif self.shared is not None and not state.is_edited:
                # an unedited shipped label set: every user gets the same derived space
                space = self.shared.get_or_build(self.model, ds, lambda: ms.edited(ds, self.encoder))
            else:
                space = ms.edited(ds, self.encoder)
        else:
            if own is None:
                raise ProLabError("No label space of its own has been built for this label set yet; "
                                  "rebuild it with a K first.")
            space = own if _built_from(own, ds) else own.edited(ds, self.encoder)
        self._bases[key] = (ds, own, space)
        return space

    def space(self, state: LabelState) -> LabelSpace | None:
        """The label space segmentation uses: :meth:`base` plus the novel categories (None for a category
        model)."""
        if not self.is_property_model:
            return None
        base, novel = self.base(state), state.novel
        hit = self._full.get((id(base), id(novel)))
        if hit is not None and hit[0] is base and hit[1] is novel:
            return hit[2]
        full = base.extended(novel, self.encoder) if len(novel) else base
        self._full[(id(base), id(novel))] = (base, novel, full)
        return full

    def scorer(self, space: LabelSpace | None) -> ClassScorer:
        """The :class:`~prolab.class_scorer.ClassScorer` of ``space`` (None: a category model's own classes),
        built once per space: its alignment with the trained classes is computed from the sentences."""
        hit = self._scorers.get(id(space))
        if hit is None or hit[0] is not space:
            scorer = ClassScorer(self.model) if space is None else \
                ClassScorer(self.model, space, prior=self.prior, encoder=self.encoder, memo=self._memo)
            hit = self._scorers[id(space)] = (space, scorer)
        return hit[1]

    def class_names(self, state: LabelState) -> list[str]:
        space = self.space(state)
        return list(space.class_names) if space is not None else list(self.model.class_names)

    def palette(self, label_set: LabelSet, class_names: list[str]) -> np.ndarray:
        """Label-set colours for its classes (by name), generated colours for the others."""
        key = (id(label_set), tuple(class_names))
        hit = self._palettes.get(key)
        if hit is None or hit[0] is not label_set:
            base = {n.casefold(): c for n, c in zip(label_set.class_names, label_set.palette)}
            extra = make_palette(len(base) + len(class_names))[len(base):]
            out = np.zeros((len(class_names), 3), np.uint8)
            for i, n in enumerate(class_names):
                out[i] = base.get(n.casefold(), extra[i])
            hit = self._palettes[key] = (label_set, out)
        return hit[1]


def _built_from(space: LabelSpace, descriptions: DescriptionSet) -> bool:
    """Whether ``space`` holds exactly these classes and sentences (in order), checked in O(S)."""
    if space.class_names != descriptions.categories:
        return False
    sentences = [s for c in descriptions for s in descriptions[c]]
    owner = [i for i, c in enumerate(descriptions) for _ in descriptions[c]]
    return space.sentences == sentences and space.sentence_class.tolist() == owner


# ---------------------------------------------------------------------------- the session
CUSTOM_KEY = "custom"
#: ``threshold=KEEP``: score with the unknown threshold used last.
KEEP = object()


@dataclass(frozen=True)
class LabelSetChoice:
    """Which label set: a shipped set's key, ``"model"`` (the model's training classes) or ``"custom"`` with
    the descriptions JSON it is read from (``custom_path=None``: the custom set already in use)."""

    key: str
    custom_path: str | None = None

    def __post_init__(self):
        if self.key != CUSTOM_KEY and self.custom_path is not None:
            object.__setattr__(self, "custom_path", None)  # only a custom set has a file

    def to_data(self) -> dict:
        """As JSON-able data (a custom set in a session is named by content: :func:`custom_id`)."""
        return {"key": self.key, **({"custom": self.custom_path} if self.key == CUSTOM_KEY else {})}

    @classmethod
    def from_data(cls, data) -> LabelSetChoice:
        """Read :meth:`to_data`'s data back (anything else is a :class:`ProLabError`)."""
        if not isinstance(data, dict) or not isinstance(data.get("key"), str) or \
                not isinstance(data.get("custom"), (str, type(None))):
            raise ProLabError("The saved work names a label set in a form this version cannot read.")
        return cls(data["key"], data.get("custom"))


class Change(Protocol):
    """One step of a transaction (:meth:`EditSession.apply`)."""

    def apply_to(self, session: EditSession) -> None:
        ...


@dataclass(frozen=True)
class EditClass:
    """Replace (or add) one class's sentences (blank ones dropped)."""

    name: str
    sentences: Sequence[str]

    def apply_to(self, session: EditSession) -> None:
        name = " ".join(self.name.split())
        if not name:
            raise ProLabError("Pick or type a class name first.")
        ds = session.descriptions
        session.use_descriptions(ds.with_category(name, [s for s in self.sentences if s.strip()]))


@dataclass(frozen=True)
class ResetClass:
    """Put back one class's shipped sentences (a class added by hand is removed)."""

    name: str

    def apply_to(self, session: EditSession) -> None:
        ds, original = session.descriptions, session.label_set.descriptions
        found = ds.find(self.name or "")
        if found is None:
            raise ProLabError("Pick a class to reset.")
        shipped = original.find(found)
        session.use_descriptions(ds.with_category(found, original[shipped]) if shipped else ds.without([found]))


@dataclass(frozen=True)
class UseDescriptions:
    """Replace the label set's descriptions (an imported JSON, an earlier version)."""

    descriptions: DescriptionSet

    def apply_to(self, session: EditSession) -> None:
        session.use_descriptions(self.descriptions)


@dataclass(frozen=True)
class ResetDescriptions:
    """Put back every shipped description of the label set."""

    def apply_to(self, session: EditSession) -> None:
        session.use_descriptions(session.label_set.descriptions)


@dataclass(frozen=True)
class SetNovel:
    """Novel categories on top of the label set (an empty set removes them)."""

    novel: DescriptionSet = field(default_factory=lambda: DescriptionSet({}))

    def apply_to(self, session: EditSession) -> None:
        session.set_novel(self.novel)


@dataclass(frozen=True)
class Rebuild:
    """K-Means over the label set's own sentences with ``k`` properties."""

    k: int
    progress: ProgressFn | None = field(default=None, compare=False)

    def apply_to(self, session: EditSession) -> None:
        session.rebuild(self.k, progress=self.progress)


@dataclass(frozen=True)
class UseModelProperties:
    """Score with the model's training properties again (after :class:`Rebuild`)."""

    def apply_to(self, session: EditSession) -> None:
        session.use_model_properties()


@dataclass(frozen=True)
class SetQuality:
    """A step of the speed/quality dial (:mod:`prolab.quality`): backend, input size, test-time augmentation,
    guided upsampling."""

    name: str | None

    def apply_to(self, session: EditSession) -> None:
        session.set_quality(self.name)


@dataclass(frozen=True)
class SwitchModel:
    """Another model: label set, edits, novel categories, quality and image are kept (a category model
    only has its own classes)."""

    model: PropertySegmenter
    encoder: TextEncoder | None
    model_dir: Path | None = None

    def apply_to(self, session: EditSession) -> None:
        session.switch_model(self.model, self.encoder, self.model_dir)


@dataclass(frozen=True)
class SessionState:
    """Everything a transaction may change, replaced whole (:func:`dataclasses.replace`): the snapshot a
    failed change is undone to is this one reference."""

    choice: LabelSetChoice
    labels: LabelState
    spaces: LabelSpaces  # derived spaces and scorers of ``model`` (a new model, a new one)
    model: PropertySegmenter
    model_dir: Path | None
    quality: Quality  # the speed/quality step
    network: Network
    threshold: float | None = None


class EditSession:
    """One user's label set, edits and image over one model; not thread-safe (one lock per user). The app
    talks to this object only: it owns the label state (:class:`~LabelState`) and
    hands the image side (:class:`~prolab.workbench.Workbench`) the scorer to use.

    Args:
        model: a :class:`~prolab.model.PropertySegmenter` (shared read-only between sessions).
        encoder: the text encoder of the model's label space (None for a category model).
        label_set: the key of the label set to start with (a category model always uses ``"model"``).
        label_sets: loads a shipped set by key (default :func:`prolab.labelsets.load`; the app passes its
            shared cache, so that every user scores the very same description objects).
        model_dir: the model's folder (the fast quality step caches its ONNX export there).
        inference_size: a fixed network input size overriding the quality steps' (None: theirs).
        shared_spaces: a :class:`SpaceStore` for unedited label sets' spaces.
        prior: open-set credit settings (:mod:`prolab.novel_prior`); None: off.
        backends: an :class:`~prolab.onnx_backend.OnnxPool` that keeps the fast step's ONNX sessions
            loaded (the app shares one between users); None: each switch to that step loads its own.
        cache_sizes: the sizes of this session's own caches (:class:`LabelSpaces`; the app passes its
            ``AppConfig.caches``).
    """

    def __init__(self, model: PropertySegmenter, encoder: TextEncoder | None = None, label_set: str = "ade20k_150", *,
                 label_sets: Callable[[str], LabelSet] = labelsets.load, model_dir: Path | None = None,
                 inference_size: int | None = None, shared_spaces: SpaceStore | None = None,
                 prior: PriorSettings | None = PriorSettings(), backends: OnnxPool | None = None,
                 cache_sizes: CacheSizes = CACHE_SIZES):
        self.size_override = inference_size
        self._backends, self._sizes = backends, cache_sizes
        self._label_sets, self._shared, self._prior = label_sets, shared_spaces, prior
        self._edits: dict[LabelSetChoice, DescriptionSet] = {}
        # custom label sets read in this session, by content (``custom:<digest>``), most recent last, and the
        # id each file read was found to hold: a restored session has the contents, never the files
        self._customs: LRUCache = LRUCache(cache_sizes.custom_sets)
        self._custom_files: LRUCache = LRUCache(cache_sizes.custom_sets)
        self._last_custom: str | None = None  # what "custom" without a file means
        self._revision = 0
        spaces = LabelSpaces(model, encoder, shared_spaces, prior, cache_sizes)
        choice = LabelSetChoice(MODEL_KEY if model.config.supervision == "category" else label_set)
        chosen = self._resolve(choice, model)
        # the quality step's settings are applied once another step is chosen
        self._state = SessionState(choice, LabelState(chosen, chosen.descriptions,
                                                      mode="model" if spaces.has_model_space else "own"),
                                   spaces, model, model_dir, get_quality(DEFAULT_QUALITY),
                                   Network(model, inference_size))
        self.workbench = Workbench()

    # ------------------------------------------------------------------ what is in use
    choice = property(lambda self: self._state.choice, doc="The label set chosen.")
    model = property(lambda self: self._state.model, doc="The (PyTorch) model.")
    model_dir = property(lambda self: self._state.model_dir)
    quality = property(lambda self: self._state.quality.name, doc="The speed/quality step's name.")
    threshold = property(lambda self: self._state.threshold, doc="The unknown threshold (None: off).")
    label_set = property(lambda self: self._state.labels.label_set)
    descriptions = property(lambda self: self._state.labels.descriptions,
                            doc="The label set's descriptions with this session's edits.")
    novel = property(lambda self: self._state.labels.novel, doc="Novel categories on top of the label set.")
    mode = property(lambda self: self._state.labels.mode, doc='"model" or "own" properties.')
    own_k = property(lambda self: self._state.labels.own_k)
    is_edited = property(lambda self: self._state.labels.is_edited)
    encoder = property(lambda self: self._state.spaces.encoder)
    prior = property(lambda self: self._state.spaces.prior)
    is_property_model = property(lambda self: self._state.spaces.is_property_model)
    cache_sizes = property(lambda self: self._sizes, doc="The sizes of this session's own caches.")
    network_in_use = property(lambda self: self._state.network,
                              doc="The :class:`~prolab.workbench.Network` the image is scored with (backend, size, options).")

    @property
    def name(self) -> str:
        """The label set's name, marked "(edited)" when it is."""
        return self.label_set.name + (" (edited)" if self.is_edited else "")

    @property
    def last(self) -> Segmentation | None:
        """The result on screen."""
        return self.workbench.last

    def space(self) -> LabelSpace | None:
        """The label space in use (edits and novel categories included); None for a category model."""
        return self._state.spaces.space(self._state.labels)

    def base_space(self) -> LabelSpace:
        """The label set as segmented, without novel categories."""
        return self._state.spaces.base(self._state.labels)

    def alignment(self, space: LabelSpace | None = None) -> Alignment | None:
        """How ``space`` (default :meth:`space`) borrows the model's trained classes (None without them)."""
        return self._state.spaces.scorer(self.space() if space is None else space).alignment

    def palette(self, class_names: list[str]) -> np.ndarray:
        """Label-set colours for its classes (by name), generated colours for the others."""
        return self._state.spaces.palette(self.label_set, class_names)

    def changes(self) -> list[DescriptionChange]:
        """What differs from the shipped descriptions, class by class."""
        return description_changes(self.label_set.descriptions, self.descriptions)

    def all_descriptions(self) -> DescriptionSet:
        """The descriptions in use, novel categories included (what an export writes)."""
        ds, novel = self.descriptions, self.novel
        return ds.merged(novel) if len(novel) else ds

    # ------------------------------------------------------------------ the image side, as plain results
    @property
    def image(self) -> np.ndarray | None:
        """The current working image (downscaled to :data:`prolab.images.MAX_SIDE`), None before one."""
        return self.workbench.image

    @property
    def image_name(self) -> str:
        return self.workbench.image_name

    @property
    def source_size(self) -> tuple[int, int] | None:
        """(width, height) the image had before it was downscaled (None when it was not)."""
        return self.workbench.source_size

    @property
    def forward_seconds(self) -> float:
        return self.workbench.forward_seconds

    def changed_fraction(self) -> float | None:
        """Share of pixels whose class changed between the last two results."""
        return self.workbench.changed_fraction()

    def class_scores(self) -> np.ndarray:
        """(C, h, w) class scores of the result on screen (re-derived from the cached activations)."""
        return self.workbench.class_scores()

    def nbytes(self) -> int:
        """Bytes of the per-image arrays held (image, network output, its cache, results)."""
        return self.workbench.nbytes()

    # ------------------------------------------------------------------ the transaction
    def apply(self, *changes: Change, on: LabelSetChoice | None = None, threshold=KEEP,
              progress: ProgressFn | None = None) -> Segmentation | None:
        """Switch to label set ``on`` (when given), apply ``changes`` and re-score the result on screen
        (cached embeddings; a forward pass only when the network changed), all or nothing. Returns that
        result, None when nothing is segmented yet."""
        thr = self._checked(threshold)
        had_result = self.workbench.last is not None
        with self._transaction():
            if on is not None:
                self._select(on)
            for change in changes:
                change.apply_to(self)
            self._state = replace(self._state, threshold=thr)
            return self._score(progress, again=False) if had_result else None

    def select(self, on: LabelSetChoice | None) -> None:
        """Switch to label set ``on`` without re-scoring the result on screen (for views that show the label
        set, not the result: the next re-segmentation uses it)."""
        if on is not None:
            with self._transaction():
                self._select(on)

    def segment(self, image=None, *, on: LabelSetChoice | None = None, threshold=KEEP, again: bool = True,
                progress: ProgressFn | None = None) -> Segmentation:
        """Segment ``image`` (default: the current one) with label set ``on`` (default: the one in use): a
        forward pass once per image, then the cached embeddings. ``again=False`` returns the result on
        screen when nothing it depends on changed."""
        thr = self._checked(threshold)
        self.select(on)
        self._state = replace(self._state, threshold=thr)
        if image is not None:
            self.open_image(image)
        if self.workbench.image is None:
            raise ProLabError("No image yet: upload one or pick an example.")
        return self._score(progress, again)

    def _checked(self, threshold) -> float | None:
        """The threshold argument of an entry point, checked here once (KEEP: the one in use)."""
        return self._state.threshold if threshold is KEEP else check_threshold(threshold)

    def open_image(self, image) -> bool:
        """Make ``image`` (a path or an array) the current one; a path already open is not read again.
        Returns whether the image changed."""
        wb = self.workbench
        if isinstance(image, (str, Path)) and str(image) == wb.image_name and wb.image is not None:
            return False
        wb.set_image(image)
        return True

    @contextmanager
    def _transaction(self):
        """Validate, then commit: on any error the session state (label state, choice, model, quality,
        threshold) is put back as it was (the result on screen, made before, stays)."""
        saved = self._state
        try:
            yield
            self.space()  # derivable (encoder, dimensions, non-empty): else nothing changes
        except BaseException:
            self._state = saved
            raise
        self._remember_edits()
        if (saved.choice, saved.labels.descriptions, saved.labels.novel) != (self.choice, self.descriptions,
                                                                               self.novel):
            self._revision += 1

    def _score(self, progress: ProgressFn | None, again: bool) -> Segmentation:
        """The image scored with what is in use now; without ``again``, the result on screen when nothing
        it depends on changed."""
        st, wb = self._state, self.workbench
        t = time.perf_counter()
        space = st.spaces.space(st.labels)
        guided = st.quality.guided
        if not again and wb.is_current(st.network, space, st.threshold, guided):
            return wb.last
        scorer = st.spaces.scorer(space)
        palette = st.spaces.palette(st.labels.label_set, scorer.class_names)
        if progress is not None:
            progress(*((0.3, "Forward pass (once per image)") if wb.needs_forward(st.network)
                       else (0.9, "Re-scoring the cached embeddings")))
        derived = time.perf_counter() - t
        seg = wb.score(st.network, scorer, st.threshold, palette, len(st.labels.novel) if space is not None else 0,
                       guided)
        seg.seconds["label_space"] = derived
        return seg

    # ------------------------------------------------------------------ what the changes call
    def _labels(self, **changes) -> None:
        self._state = replace(self._state, labels=replace(self._state.labels, **changes))

    def use_descriptions(self, descriptions: DescriptionSet) -> None:
        """Use ``descriptions`` for the label set; identical to the shipped ones, they are the shipped ones
        again (shown unedited, and the space shared with other users is reused)."""
        if len(descriptions) == 0:
            raise ProLabError("The label set needs at least one class.")
        shipped = self.label_set.descriptions
        self._labels(descriptions=shipped if descriptions.to_dict() == shipped.to_dict() else descriptions)

    def set_novel(self, novel: DescriptionSet) -> None:
        """Novel categories added on top of the label set (an empty set removes them)."""
        if len(novel):
            self._state.spaces.need_property_model("adding novel categories")
        self._labels(novel=novel)

    def rebuild(self, k: int, progress: ProgressFn | None = None) -> LabelSpace:
        """K-Means over the current descriptions with ``k`` properties; switches to ``"own"`` mode."""
        spaces = self._state.spaces
        spaces.need_property_model("rebuilding the label space")
        space = own_space(self.descriptions, spaces.encoder, k, self.model.config.embed_dim, progress)
        self._labels(own=space, mode="own")
        return space

    def use_model_properties(self) -> None:
        if not self._state.spaces.has_model_space:
            raise ProLabError("This model has no training label space; use the label set's own properties.")
        self._labels(mode="model")

    def network(self, quality: Quality | str | None = None) -> tuple[object, dict]:
        """The network (backend) and :func:`~prolab.inference.embed_image` options (size, scales, flip) of
        a quality step (a :class:`~prolab.quality.Quality` or its name), default the session's (the live tab
        segments frames with them)."""
        q = self._state.quality if quality is None else get_quality(quality)
        return with_backend(self.model, q.backend, self.model_dir, pool=self._backends), q.inference_kwargs(self.model.config.input_size)

    def set_quality(self, name: str | None) -> None:
        """Put the network on a quality step: backend, input size (a fixed ``inference_size`` wins),
        test-time augmentation; the label map's upsampling (guided or bilinear) follows the step too."""
        self._state = replace(self._state, quality=get_quality(name))
        self._configure_network()

    def _configure_network(self) -> None:
        model, options = self.network()
        size = self.size_override or options.pop("size")
        self._state = replace(self._state, network=Network(model, size, tuple(sorted(options.items()))))

    def switch_model(self, model: PropertySegmenter, encoder: TextEncoder | None,
                     model_dir: Path | None = None) -> None:
        """Score with ``model``: this session's label set, edits, novel categories and image are kept (a
        category model only has its own classes)."""
        old = self._state
        spaces = LabelSpaces(model, encoder, self._shared, self._prior, self._sizes)
        choice = LabelSetChoice(MODEL_KEY) if not spaces.is_property_model else old.choice
        label_set = self._resolve(choice, model) if choice.key == MODEL_KEY else old.labels.label_set
        labels = LabelState(label_set, label_set.descriptions, mode="model" if spaces.has_model_space else "own")
        if spaces.is_property_model:
            if old.labels.is_edited and choice.key != MODEL_KEY:
                labels = replace(labels, descriptions=old.labels.descriptions)
            if len(old.labels.novel):
                spaces.need_property_model("adding novel categories")
                labels = replace(labels, novel=old.labels.novel)
        self._state = replace(old, choice=choice, labels=labels, spaces=spaces, model=model, model_dir=model_dir,
                              network=Network(model, self.size_override))
        if self.quality != DEFAULT_QUALITY:  # the new model runs at the session's step too
            self._configure_network()

    def _select(self, choice: LabelSetChoice) -> None:
        """Switch to ``choice``, with the edits this session made to it before."""
        if choice.key == CUSTOM_KEY and choice.custom_path is None:
            if self.choice.key == CUSTOM_KEY:
                return
            if self._last_custom not in self._customs:
                raise ProLabError("A custom label set needs a descriptions JSON file: upload one "
                                  '({"class name": ["sentence", ...], ...}).')
            choice = LabelSetChoice(CUSTOM_KEY, self._last_custom)  # the one used last
        elif choice.key == CUSTOM_KEY:
            choice = self._custom_choice(choice.custom_path)
        if choice == self.choice:
            return
        spaces, label_set = self._state.spaces, self._resolve(choice, self.model)
        if not spaces.is_property_model and label_set.class_names != self.model.class_names:
            raise ProLabError(f"This model is category-supervised: it only segments its own "
                              f"{len(self.model.class_names)} training classes, not another label set. "
                              "Load a property (ProLab) model to use other label sets.")
        labels = self._state.labels
        # a K-Means space belongs to the descriptions it was built from
        mode = "model" if labels.mode == "own" and spaces.has_model_space else labels.mode
        own = None if labels.mode == "own" else labels.own
        saved = self._edits.get(choice)
        self._state = replace(self._state, choice=choice,
                              labels=replace(labels, label_set=label_set, mode=mode, own=own,
                                             descriptions=label_set.descriptions if saved is None else saved))

    def _custom_choice(self, source: str) -> LabelSetChoice:
        """The choice of the custom set read from file ``source`` (or kept as content id ``source``): named
        by its content, so that a set read again, or restored without its file, is the same one."""
        cid = self._custom_files.get(source, source if source in self._customs else None)
        if cid is None:
            path = Path(source)
            label_set = labelsets.custom(path, name=f"Custom ({path.name})")
            cid = custom_id(label_set)
            self._custom_files[source] = cid
            self._customs.setdefault(cid, label_set)
        self._customs.get(cid)  # now the most recently used
        self._last_custom = cid
        return LabelSetChoice(CUSTOM_KEY, cid)

    def _resolve(self, choice: LabelSetChoice, model: PropertySegmenter) -> LabelSet:
        if choice.key == CUSTOM_KEY:
            kept = self._customs.get(choice.custom_path)
            if kept is not None:
                return kept
            path = Path(choice.custom_path)
            return labelsets.custom(path, name=f"Custom ({path.name})")
        if choice.key == MODEL_KEY:
            return labelsets.for_model(model)
        return self._label_sets(choice.key)

    def _remember_edits(self) -> None:
        if self.is_edited:
            self._edits[self.choice] = self.descriptions
        else:
            self._edits.pop(self.choice, None)

    def edited_sets(self) -> dict[LabelSetChoice, DescriptionSet]:
        """The edited descriptions kept per label set (a copy)."""
        return dict(self._edits)

    def release(self) -> None:
        """Forget the image, everything computed from it and the edits (when a user's session expires)."""
        self.workbench.release()
        self._edits.clear()
        self._customs.clear()
        self._custom_files.clear()
        self._last_custom = None

    # ------------------------------------------------------------------ the label state as JSON
    @property
    def revision(self) -> int:
        """Goes up with every committed change of the label set in use, its descriptions or the novel
        categories (whoever keeps :meth:`export_state` writes it again when this moved)."""
        return self._revision

    def export_state(self) -> dict:
        """The label state as JSON-able data (:meth:`restore_state` reads it back): the label set in use,
        the edits kept per label set, the novel categories and the custom sets by content (never a file
        path). Neither the image nor anything computed from it is in it."""
        used = {c.custom_path for c in [self.choice, *self._edits] if c.key == CUSTOM_KEY}
        return {"schema": STATE_SCHEMA, "choice": self.choice.to_data(),
                "edits": [{"choice": c.to_data(), "descriptions": ds.to_dict()} for c, ds in self._edits.items()],
                "novel": self.novel.to_dict(),
                # every custom set kept (an evaluation may name one), those in use first
                "custom_sets": [{"id": cid, "name": ls.name, "descriptions": ls.descriptions.to_dict()}
                                for cid, ls in sorted(self._customs.items(), key=lambda kv: kv[0] not in used)]}

    def restore_state(self, data: dict) -> None:
        """Put back a label state written by :meth:`export_state`, in one transaction: data that is not
        such a state (another schema, a label set this server lacks, descriptions that do not validate) is a
        :class:`ProLabError` and leaves the session exactly as it was."""
        customs, edits, choice, novel = _read_state(data)
        kept = (dict(self._customs), dict(self._custom_files), dict(self._edits), self._revision, self._last_custom)
        try:
            for cid, label_set in customs.items():
                self._customs[cid] = label_set
            self._last_custom = choice.custom_path if choice.key == CUSTOM_KEY else next(iter(customs), None)
            with self._transaction():
                for c, ds in edits.items():  # each edited set must still be one this server has
                    if c.key != CUSTOM_KEY:
                        self._resolve(c, self.model)
                self._edits = dict(edits)
                if choice != self.choice:
                    self._select(choice)
                ds = edits.get(self.choice)
                self.use_descriptions(ds if ds is not None else self.label_set.descriptions)
                self.set_novel(novel)
        except BaseException:
            self._customs.clear()
            self._customs.update(kept[0])
            self._custom_files.clear()
            self._custom_files.update(kept[1])
            self._edits, self._revision, self._last_custom = kept[2], kept[3], kept[4]
            raise


#: The version of :meth:`EditSession.export_state`'s data (another one is refused, never guessed at).
STATE_SCHEMA = 1


def custom_id(label_set: LabelSet) -> str:
    """A custom label set's name by content (its name and descriptions), the same in every session."""
    text = json.dumps([label_set.name, label_set.descriptions.to_dict()], ensure_ascii=False, sort_keys=False)
    return "custom:" + hashlib.sha256(text.encode()).hexdigest()[:24]


def _read_choice(data, customs: dict) -> LabelSetChoice:
    choice = LabelSetChoice.from_data(data)
    if choice.key == CUSTOM_KEY and choice.custom_path not in customs:
        raise ProLabError("The saved work names a custom label set whose descriptions were not saved.")
    return choice


def _read_state(data) -> tuple[dict, dict, LabelSetChoice, DescriptionSet]:
    """``(custom sets, edits, choice, novel)`` of :meth:`EditSession.export_state`'s data, validated."""
    if not isinstance(data, dict) or data.get("schema") != STATE_SCHEMA:
        found = data.get("schema") if isinstance(data, dict) else None
        raise ProLabError(f"The saved work was written in another format (schema {found!r}, this version reads "
                          f"{STATE_SCHEMA}), so it was not restored.")
    try:
        customs = {}
        for item in data.get("custom_sets") or []:
            label_set = labelsets.custom(DescriptionSet(item["descriptions"]), name=str(item["name"]))
            if custom_id(label_set) != item["id"]:
                raise ProLabError("The saved work holds a custom label set that does not match its name.")
            customs[item["id"]] = label_set
        edits = {_read_choice(e["choice"], customs): DescriptionSet(e["descriptions"]) for e in data.get("edits") or []}
        return customs, edits, _read_choice(data["choice"], customs), DescriptionSet(data.get("novel") or {})
    except ProLabError as exc:
        raise ProLabError(f"The saved work could not be read back: {exc}") from None
    except (KeyError, TypeError, AttributeError, ValueError):
        raise ProLabError("The saved work is incomplete or in a form this version cannot read, so it was "
                          "not restored.") from None


__all__ = ["CUSTOM_KEY", "KEEP", "STATE_SCHEMA", "custom_id", "Change", "EditClass", "EditSession", "LabelSetChoice", "Rebuild", "ResetClass",
           "LabelSpaces", "LabelState", "ResetDescriptions", "Segmentation", "SessionState", "SpaceStore", "SetNovel", "SetQuality", "SwitchModel", "UseDescriptions", "UseModelProperties"]
