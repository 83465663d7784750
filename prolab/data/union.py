"""One label space for several datasets: every dataset class maps to a class of a union set.

The union descriptions live in ``assets/descriptions/union.json`` and the mapping in
``assets/descriptions/union_mapping.json`` (``{"<dataset key>": {"<dataset class>": "<union class>"}}``
for ``msrc_23``, ``camvid_11``, ``coco_80``, ``ade20k_150``). When those files are absent a union
is built by merging the per-dataset description files by exact (case-insensitive) class name.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from prolab.data.readers import ADE_KEY, REPO_ASSETS, SegSource, ade_classes
from prolab.descriptions import DescriptionSet, load_descriptions
from prolab.errors import ProLabError

log = logging.getLogger(__name__)
DESCRIPTION_KEYS = ("msrc_23", "camvid_11", "coco_80", ADE_KEY)
IGNORE = 255
#: Look-up value of a class removed from training (:meth:`UnionSpace.without`): unlike a void pixel, the
#: teacher must not fill it in; :func:`prolab.data.dataset.fuse_labels` turns it into IGNORE at the end.
EXCLUDED = 254


@dataclass
class UnionSpace:
    """Target classes (with descriptions) and, per dataset key, dataset class -> target class."""

    descriptions: DescriptionSet
    mapping: dict[str, dict[str, str]]
    source: str = "built"
    #: target classes removed from training (casefolded): their pixels are ignored, GT and teacher alike
    excluded: frozenset[str] = field(default_factory=frozenset)

    @property
    def class_names(self) -> list[str]:
        return self.descriptions.categories

    @property
    def num_targets(self) -> int:
        return len(self.descriptions)

    def index(self, name: str) -> int | None:
        found = self.descriptions.find(name)
        return None if found is None else self.class_names.index(found)

    def without(self, names: list[str]) -> "UnionSpace":
        """This space with ``names`` removed from the targets; pixels of those classes (and of every
        dataset class mapped to them) become ignore instead of a label, never filled by the teacher."""
        found = [self.descriptions.find(n) for n in names]
        unknown = [n for n, f in zip(names, found) if f is None]
        if unknown:
            raise ProLabError(f"exclude_classes: not target classes: {', '.join(unknown)}.")
        return replace(self, descriptions=self.descriptions.without(found),
                       excluded=self.excluded | {f.casefold() for f in found})

    def _target(self, key: str, cls: str) -> str | None:
        table = self.mapping.get(key, {})
        return table.get(cls, cls if key not in self.mapping else None)

    def dataset_classes(self, key: str, classes: list[str]) -> list[int | None]:
        """Target index of every class of a dataset (None where a class has no mapping)."""
        out = []
        for c in classes:
            target = self._target(key, c)
            out.append(None if target is None else self.index(target))
        return out

    def excluded_classes(self, key: str, classes: list[str]) -> list[bool]:
        """Whether each class of a dataset maps to an excluded target class."""
        return [(t := self._target(key, c)) is not None and t.casefold() in self.excluded for c in classes]


def _ade_descriptions(desc_dir: Path) -> DescriptionSet | None:
    full = desc_dir / f"{ADE_KEY}.json"
    if full.is_file():
        return load_descriptions(full)
    parts = sorted((desc_dir / "parts").glob(f"{ADE_KEY}_*.json"))
    if not parts:
        return None
    ds = load_descriptions(parts[0])
    for p in parts[1:]:
        ds = ds.merged(load_descriptions(p))
    return ds


def build_union(desc_dir: str | Path | None = None) -> UnionSpace:
    """Merge the per-dataset description files by exact class name (first spelling wins)."""
    desc_dir = Path(desc_dir) if desc_dir else REPO_ASSETS / "descriptions"
    sets: dict[str, DescriptionSet] = {}
    for key in DESCRIPTION_KEYS:
        ds = _ade_descriptions(desc_dir) if key == ADE_KEY else (
            load_descriptions(desc_dir / f"{key}.json") if (desc_dir / f"{key}.json").is_file() else None)
        if ds is not None:
            sets[key] = ds
    if not sets:
        raise ProLabError(f"No dataset descriptions found in {desc_dir}.")
    union = DescriptionSet({})
    for ds in sets.values():
        union = union.merged(ds)
    mapping = {key: {c: union.find(c) for c in ds} for key, ds in sets.items()}
    return UnionSpace(union, mapping, source="built")


def load_union(desc_dir: str | Path | None = None) -> UnionSpace:
    """The shipped union (``union.json`` + ``union_mapping.json``), else :func:`build_union`."""
    desc_dir = Path(desc_dir) if desc_dir else REPO_ASSETS / "descriptions"
    u, m = desc_dir / "union.json", desc_dir / "union_mapping.json"
    if u.is_file() and m.is_file():
        ds = load_descriptions(u)
        try:
            mapping = json.loads(m.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise ProLabError(f"{m} is not valid JSON: {exc}") from None
        if isinstance(mapping, dict):  # "_notes" and other "_" keys document the file
            mapping = {k: v for k, v in mapping.items() if not k.startswith("_")}
        if not isinstance(mapping, dict) or not all(isinstance(v, dict) for v in mapping.values()):
            raise ProLabError(f"{m} must map dataset key -> {{dataset class: union class}}.")
        bad = [(k, c, t) for k, tab in mapping.items() for c, t in tab.items()
               if t is not None and ds.find(t) is None]
        if bad:
            raise ProLabError(f"{m}: target classes missing from union.json, e.g. {bad[:3]}")
        return UnionSpace(ds, mapping, source=str(u))
    return build_union(desc_dir)


def space_from_classes(classes: list[str], descriptions: DescriptionSet | None = None) -> UnionSpace:
    """A target space that is just one dataset's own class list (identity mapping by name)."""
    if descriptions is None:
        descriptions = DescriptionSet({c: [c] for c in classes})
    return UnionSpace(descriptions, {}, source="classes")


@dataclass(frozen=True)
class LabelMaps:
    """Look-up tables (256 entries, uint8) from raw label values to target indices."""

    gt: np.ndarray | None
    teacher: np.ndarray | None


def label_maps(source: SegSource, space: UnionSpace, use_teacher: bool = True) -> LabelMaps:
    """GT and teacher look-up tables for one source; unmapped classes become ignore (255)."""
    if space.num_targets > EXCLUDED:
        raise ProLabError(f"At most {EXCLUDED} target classes are supported, got {space.num_targets}.")
    gt = None
    if source.has_gt:
        gt = np.full(256, IGNORE, np.uint8)
        offset = int(source.meta.get("offset", 0))
        key = source.label_key or source.name
        targets = space.dataset_classes(key, source.classes)
        missing = [c for c, t in zip(source.classes, targets) if t is None]
        if missing:
            log.warning("%s: classes without a target class are ignored: %s", source.name,
                        ", ".join(missing[:10]))
        for i, t in enumerate(targets):
            if t is not None:
                gt[i + offset] = t
        for i, out in enumerate(space.excluded_classes(key, source.classes)):
            if out:
                gt[i + offset] = EXCLUDED
    teacher = None
    if use_teacher and source.has_teacher:
        teacher = np.full(256, IGNORE, np.uint8)
        for i, t in enumerate(space.dataset_classes(ADE_KEY, ade_classes())):
            if t is not None:
                teacher[i + 1] = t  # teacher files: 0 = other (ignored), k = ADE class k
        for i, out in enumerate(space.excluded_classes(ADE_KEY, ade_classes())):
            if out:
                teacher[i + 1] = EXCLUDED
    return LabelMaps(gt, teacher)
