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
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from prolab import labelsets
from prolab.alignment import Alignment
from prolab.descriptions import DescriptionSet
from prolab.encoder import TextEncoder
from prolab.errors import ProLabError
from prolab.labelsets import MODEL_KEY, LabelSet
from prolab.labelspace import LabelSpace
from prolab.model import PropertySegmenter
from prolab.novel_prior import PriorSettings
from prolab.onnx_backend import with_backend
from prolab.quality import DEFAULT_QUALITY, Quality, get_quality
from prolab.workbench import (DescriptionChange, ProgressFn, Segmentation, SpaceStore, Workbench, check_threshold,
                              description_changes)

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
        session.workbench.reset_descriptions()


@dataclass(frozen=True)
class SetNovel:
    """Novel categories on top of the label set (an empty set removes them)."""

    novel: DescriptionSet = field(default_factory=lambda: DescriptionSet({}))

    def apply_to(self, session: EditSession) -> None:
        session.workbench.set_novel(self.novel)


@dataclass(frozen=True)
class Rebuild:
    """K-Means over the label set's own sentences with ``k`` properties."""

    k: int
    progress: ProgressFn | None = field(default=None, compare=False)

    def apply_to(self, session: EditSession) -> None:
        session.workbench.rebuild(self.k, progress=self.progress)


@dataclass(frozen=True)
class UseModelProperties:
    """Score with the model's training properties again (after :class:`Rebuild`)."""

    def apply_to(self, session: EditSession) -> None:
        session.workbench.use_model_properties()


@dataclass(frozen=True)
class SetQuality:
    """A step of the speed/quality dial (:mod:`prolab.quality`): backend, input size, test-time augmentation."""

    name: str | None

    def apply_to(self, session: EditSession) -> None:
        session.quality = get_quality(self.name).name
        session.configure_network()


@dataclass(frozen=True)
class SwitchModel:
    """Another model: label set, edits, novel categories, quality and image are kept (a category model
    only has its own classes)."""

    model: PropertySegmenter
    encoder: TextEncoder | None
    model_dir: Path | None = None

    def apply_to(self, session: EditSession) -> None:
        session.switch_model(self.model, self.encoder, self.model_dir)


class EditSession:
    """One user's label set, edits and image over one model; not thread-safe (one lock per user).

    Args:
        model: a :class:`~prolab.model.PropertySegmenter` (shared read-only between sessions).
        encoder: the text encoder of the model's label space (None for a category model).
        label_set: the key of the label set to start with (a category model always uses ``"model"``).
        label_sets: loads a shipped set by key (default :func:`prolab.labelsets.load`; the app passes its
            shared cache, so that every user scores the very same description objects).
        model_dir: the model's folder (the fast quality step caches its ONNX export there).
        inference_size: a fixed network input size overriding the quality steps' (None: theirs).
        shared_spaces, prior: passed to the :class:`~prolab.workbench.Workbench`.
    """

    def __init__(self, model: PropertySegmenter, encoder: TextEncoder | None = None, label_set: str = "ade20k_150", *,
                 label_sets: Callable[[str], LabelSet] = labelsets.load, model_dir: Path | None = None,
                 inference_size: int | None = None, shared_spaces: SpaceStore | None = None,
                 prior: PriorSettings | None = PriorSettings()):
        self.model, self.model_dir = model, model_dir
        self.size_override = inference_size
        self.quality = DEFAULT_QUALITY  # the workbench's own settings until another step is chosen
        self.threshold: float | None = None
        self._label_sets, self._shared, self._prior = label_sets, shared_spaces, prior
        self._edits: dict[LabelSetChoice, DescriptionSet] = {}
        self.choice = LabelSetChoice(MODEL_KEY if model.config.supervision == "category" else label_set)
        self.workbench = Workbench(model, encoder, self._resolve(self.choice), inference_size,
                                   shared_spaces=shared_spaces, prior=prior)

    # ------------------------------------------------------------------ what is in use
    @property
    def label_set(self) -> LabelSet:
        return self.workbench.label_set

    @property
    def descriptions(self) -> DescriptionSet:
        """The label set's descriptions with this session's edits."""
        return self.workbench.descriptions

    @property
    def novel(self) -> DescriptionSet:
        return self.workbench.novel

    @property
    def is_edited(self) -> bool:
        return self.workbench.descriptions is not self.workbench.label_set.descriptions

    @property
    def name(self) -> str:
        """The label set's name, marked "(edited)" when it is."""
        return self.label_set.name + (" (edited)" if self.is_edited else "")

    @property
    def last(self) -> Segmentation | None:
        """The result on screen."""
        return self.workbench.last

    @property
    def is_property_model(self) -> bool:
        return self.workbench.is_property_model

    def space(self) -> LabelSpace | None:
        """The label space in use (edits and novel categories included); None for a category model."""
        return self.workbench.space() if self.is_property_model else None

    def base_space(self) -> LabelSpace:
        """The label set as segmented, without novel categories."""
        return self.workbench.base_space()

    def alignment(self, space: LabelSpace | None = None) -> Alignment | None:
        return self.workbench.alignment(space)

    def changes(self) -> list[DescriptionChange]:
        """What differs from the shipped descriptions, class by class."""
        return description_changes(self.label_set.descriptions, self.descriptions)

    def all_descriptions(self) -> DescriptionSet:
        """The descriptions in use, novel categories included (what an export writes)."""
        ds, novel = self.descriptions, self.novel
        return ds.merged(novel) if len(novel) else ds

    # ------------------------------------------------------------------ the transaction
    def apply(self, *changes: Change, on: LabelSetChoice | None = None, threshold=KEEP,
              progress: ProgressFn | None = None) -> Segmentation | None:
        """Switch to label set ``on`` (when given), apply ``changes`` and re-score the result on screen
        (cached embeddings; a forward pass only when the network changed), all or nothing. Returns that
        result, None when nothing is segmented yet."""
        had_result = self.workbench.last is not None
        with self._transaction():
            if on is not None:
                self._select(on)
            for change in changes:
                change.apply_to(self)
            self._set_threshold(threshold)
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
        self.select(on)
        self._set_threshold(threshold)
        if image is not None:
            self.open_image(image)
        if self.workbench.image is None:
            raise ProLabError("No image yet: upload one or pick an example.")
        return self._score(progress, again)

    def _set_threshold(self, threshold) -> None:
        if threshold is not KEEP:
            self.threshold = check_threshold(threshold)

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
        """Validate, then commit: on any error the workbench, label set choice, quality, threshold and
        edits are put back as they were (the result on screen, made before, stays)."""
        wb, state = self.workbench, self.workbench.label_state()
        saved = (self.choice, self.quality, self.threshold, self.model, self.model_dir, dict(self._edits))
        try:
            yield
            if self.workbench.is_property_model:
                self.workbench.space()  # derivable (encoder, dimensions, non-empty): else nothing changes
        except BaseException:
            self.workbench = wb
            wb.restore(state)
            self.choice, self.quality, self.threshold, self.model, self.model_dir, self._edits = saved
            raise
        self._remember_edits()

    def _score(self, progress: ProgressFn | None, again: bool) -> Segmentation:
        """The image scored with what is in use now; without ``again``, the result on screen when nothing
        it depends on changed."""
        wb = self.workbench
        if not again and wb.is_current(self.threshold):
            return wb.last
        if progress is not None and wb.needs_forward:
            progress(0.3, "Forward pass (once per image)")
        elif progress is not None:
            progress(0.9, "Re-scoring the cached embeddings")
        return wb.segment(self.threshold)

    # ------------------------------------------------------------------ what the changes call
    def use_descriptions(self, descriptions: DescriptionSet) -> None:
        """Use ``descriptions`` for the label set; identical to the shipped ones, they are the shipped ones
        again (shown unedited, and the space shared with other users is reused)."""
        if descriptions.to_dict() == self.label_set.descriptions.to_dict():
            self.workbench.reset_descriptions()
        else:
            self.workbench.set_descriptions(descriptions)

    def network(self, quality: str | None = None) -> tuple[object, dict]:
        """The network (backend) and :func:`~prolab.inference.embed_image` options (size, scales, flip) of
        a quality step, default the session's (the live tab segments frames with them)."""
        q: Quality = get_quality(self.quality if quality is None else quality)
        return with_backend(self.model, q.backend, self.model_dir), q.inference_kwargs(self.model.config.input_size)

    def configure_network(self) -> None:
        """Put the workbench's network on the quality step: backend, input size (a fixed
        ``inference_size`` wins), test-time augmentation."""
        wb = self.workbench
        wb.model, options = self.network()
        wb.inference_size = self.size_override or options.pop("size")
        wb.inference_options = options

    def switch_model(self, model: PropertySegmenter, encoder: TextEncoder | None,
                     model_dir: Path | None = None) -> None:
        """A workbench on ``model`` with this session's label set, edits, novel categories and image."""
        old = self.workbench
        category = model.config.supervision == "category"
        self.model, self.model_dir = model, model_dir
        if category:
            self.choice = LabelSetChoice(MODEL_KEY)
        label_set = self._resolve(self.choice) if category or self.choice.key == MODEL_KEY else old.label_set
        wb = Workbench(model, encoder, label_set, self.size_override, shared_spaces=self._shared, prior=self._prior)
        if wb.is_property_model:
            if old.descriptions is not old.label_set.descriptions and self.choice.key != MODEL_KEY:
                wb.set_descriptions(old.descriptions)
            wb.set_novel(old.novel)
        if old.image is not None:
            wb.set_image(old.image)
            wb.image_name, wb.source_size = old.image_name, old.source_size
        self.workbench = wb
        if self.quality != DEFAULT_QUALITY:  # the new model runs at the session's step too
            self.configure_network()

    def _select(self, choice: LabelSetChoice) -> None:
        """Switch to ``choice``, with the edits this session made to it before."""
        if choice.key == CUSTOM_KEY and choice.custom_path is None:
            if self.choice.key == CUSTOM_KEY:
                return
            raise ProLabError("A custom label set needs a descriptions JSON file: upload one "
                              '({"class name": ["sentence", ...], ...}).')
        if choice == self.choice:
            return
        self.workbench.set_label_set(self._resolve(choice))
        self.choice = choice
        saved = self._edits.get(choice)
        if saved is not None:
            self.workbench.set_descriptions(saved)

    def _resolve(self, choice: LabelSetChoice) -> LabelSet:
        if choice.key == CUSTOM_KEY:
            path = Path(choice.custom_path)
            return labelsets.custom(path, name=f"Custom ({path.name})")
        if choice.key == MODEL_KEY:
            return labelsets.for_model(self.model)
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


__all__ = ["CUSTOM_KEY", "KEEP", "Change", "EditClass", "EditSession", "LabelSetChoice", "Rebuild", "ResetClass",
           "ResetDescriptions", "SetNovel", "SetQuality", "SwitchModel", "UseDescriptions", "UseModelProperties"]
