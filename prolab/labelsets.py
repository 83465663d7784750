"""The shipped label sets: class lists and palettes (``assets/datasets``) with their descriptions
(``assets/descriptions``), plus user-supplied ("custom") sets read from a descriptions JSON.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from prolab.assets import ASSETS_DIR
from prolab.colorize import make_palette
from prolab.descriptions import DescriptionSet, load_descriptions, parse_descriptions
from prolab.errors import ProLabError, name_list

ASSETS = ASSETS_DIR
#: Order in which the shipped sets are offered (ADE20K-150 first: the default).
PREFERRED_ORDER = ("ade20k_150", "coco_stuff_171", "pascal_context_59", "cityscapes_19", "msrc_23",
                   "camvid_11", "coco_80")


@dataclass(frozen=True)
class LabelSet:
    """A named list of classes with descriptions (in class order) and one colour per class."""

    key: str
    name: str
    descriptions: DescriptionSet
    palette: np.ndarray = field(repr=False)  # (C, 3) uint8
    source: str = ""

    @property
    def class_names(self) -> list[str]:
        return self.descriptions.categories


def available(assets: str | Path = ASSETS) -> list[tuple[str, str]]:
    """``(key, display name)`` of every shipped set that has both a class list and descriptions."""
    assets = Path(assets)
    found = {}
    for path in sorted((assets / "datasets").glob("*.json")):
        if (assets / "descriptions" / path.name).is_file():
            try:
                found[path.stem] = json.loads(path.read_text(encoding="utf-8")).get("name", path.stem)
            except (OSError, json.JSONDecodeError):
                continue
    order = [k for k in PREFERRED_ORDER if k in found] + sorted(k for k in found if k not in PREFERRED_ORDER)
    return [(k, found[k]) for k in order]


def load(key: str, assets: str | Path = ASSETS) -> LabelSet:
    """A shipped label set by key (e.g. ``"ade20k_150"``), descriptions ordered like the class list."""
    assets = Path(assets)
    meta_path = assets / "datasets" / f"{key}.json"
    desc_path = assets / "descriptions" / f"{key}.json"
    if not meta_path.is_file() or not desc_path.is_file():
        names = ", ".join(k for k, _ in available(assets)) or "none"
        raise ProLabError(f"Unknown label set {key!r}; available: {names}.")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise ProLabError(f"Cannot read {meta_path}: {exc}") from None
    raw = json.loads(desc_path.read_text(encoding="utf-8"))
    ds = DescriptionSet({k: v for k, v in raw.items() if not k.startswith("_")})
    classes = list(meta.get("classes") or ds.categories)
    missing = ds.missing(classes)
    if missing:
        raise ProLabError(f"{desc_path} has no descriptions for: {name_list(missing, 10)}.")
    ds = ds.subset(classes)
    return LabelSet(key, meta.get("name", key), ds, make_palette(len(ds), meta.get("palette")),
                    source=meta.get("source", ""))


def custom(descriptions: DescriptionSet | str | Path, name: str = "Custom") -> LabelSet:
    """A user label set from a :class:`DescriptionSet`, a descriptions JSON file or JSON text."""
    if isinstance(descriptions, DescriptionSet):
        ds = descriptions
    elif isinstance(descriptions, Path) or (isinstance(descriptions, str) and not descriptions.lstrip().startswith("{")):
        ds = load_descriptions(descriptions)
    else:
        ds = parse_descriptions(descriptions, source="custom label set")
    if len(ds) == 0:
        raise ProLabError("A custom label set needs at least one category with descriptions.")
    return LabelSet("custom", name, ds, make_palette(len(ds)), source="user descriptions")


def from_names(class_names: list[str], descriptions: DescriptionSet, key: str, name: str) -> LabelSet:
    """A label set over given classes (e.g. a model's training classes) with generated colours."""
    return LabelSet(key, name, descriptions.subset(class_names), make_palette(len(class_names)))


MODEL_KEY, MODEL_NAME = "model", "Model's training classes"


def for_model(model) -> LabelSet:
    """A model's own training classes as a label set (key ``"model"``): a property model's with the
    descriptions it was trained on; a category model's with each name standing in for its description."""
    if model.config.supervision == "category":
        names = model.class_names
        return from_names(names, DescriptionSet({n: [n] for n in names}), MODEL_KEY, MODEL_NAME)
    space = model.label_space
    if space is None:
        raise ProLabError("This model has no training label space; pick a label set instead.")
    return from_names(space.class_names, space.descriptions(), MODEL_KEY, MODEL_NAME)


def resolve(spec: str | Path, model=None, assets: str | Path = ASSETS) -> LabelSet:
    """A label set named the way users name one in the CLI's ``--descriptions``: a shipped key
    (``cityscapes_19``), ``model`` (``model``'s training classes) or a descriptions JSON file (the app's
    ``--label-set`` takes the first two only). An existing file of that name wins over a key."""
    text = str(spec).strip()
    path = Path(text).expanduser()
    if path.is_file():
        return custom(path, name=f"Custom ({path.name})")
    if text == MODEL_KEY and model is not None:
        return for_model(model)
    keys = [k for k, _ in available(assets)]
    if text in keys:
        return load(text, assets)
    if path.suffix.lower() == ".json" or len(path.parts) > 1:  # meant as a file
        return custom(path, name=f"Custom ({path.name})")  # says "Descriptions file not found: ..."
    shipped = ", ".join(keys + ([MODEL_KEY] if model is not None else []))
    raise ProLabError(f"{text!r} is neither a descriptions JSON file nor a shipped label set ({shipped}).")

