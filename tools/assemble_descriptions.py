"""Assemble ADE20K-150 descriptions from their parts and build the union description set.

Outputs (all under ``assets/descriptions/``):

- ``ade20k_150.json``: every ``parts/ade20k_150_*.json`` joined, in the class order of
  ``assets/datasets/ade20k_150.json`` (the parts stay the source of truth; re-run after editing one);
- ``union.json``: the categories of MSRC-v2-23, CamVid-11, COCO-80 and ADE20K-150 in one set, the
  same concept under one name (the ADE name where ADE has it);
- ``union_mapping.json``: ``{"<dataset key>": {"<dataset class>": "<union class>"}, "_notes": [...]}``.

Run ``python -m tools.assemble_descriptions`` (from the repository root) to write them, ``--check`` to only report whether the
committed files are up to date (exit 1 if not). Any inconsistency (a class missing from the parts,
two classes of one dataset mapped to one union class, ...) raises :class:`ProLabError`.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from prolab.assets import DATASETS_DIR
from prolab.assets import DESCRIPTIONS_DIR as DESC_DIR
from prolab.descriptions import DescriptionSet, load_descriptions, write_text_atomic
from prolab.errors import ProLabError
ADE_KEY = "ade20k_150"
#: Datasets of the union in priority order: union names and the union's category order come from
#: the first dataset that has the concept, and its sentences lead a merged category.
UNION_KEYS = (ADE_KEY, "coco_80", "msrc_23", "camvid_11")
MIN_SENTENCES, MAX_SENTENCES = 8, 15

#: Classes whose union name differs from their own name. Every other class keeps its name, so equal
#: names across datasets (e.g. "tree", "car", "cow") merge without an entry here.
RENAMES: dict[str, dict[str, str]] = {
    # The official ADE-150 name; the union keeps "television", the name the shipped models were trained
    # with (their label spaces name union classes, so renaming it would need retraining).
    ADE_KEY: {"television receiver": "television"},
    "msrc_23": {"aeroplane": "airplane", "sign": "signboard"},
    "camvid_11": {"pavement": "sidewalk", "pedestrian": "person", "sign symbol": "signboard"},
    "coco_80": {
        "motorcycle": "minibike",  # ADE "minibike, motorbike"
        "couch": "sofa",  # ADE "sofa, couch, lounge"
        "tv": "television",  # ADE "television receiver" (union name "television")
        "dining table": "table",
        "sports ball": "ball",
        "wine glass": "glass",  # ADE "glass, drinking glass" includes stemmed wine glasses
        "potted plant": "plant",  # ADE "plant" is described as the (often potted) house plant
    },
}

NOTES = [
    "Each dataset class maps to one union class; the union name is the ADE20K-150 name where ADE has "
    "the concept, else the COCO-80, then MSRC-v2-23, then CamVid-11 name. One exception: ADE "
    "'television receiver' (the official ADE-150 name) is the union's 'television', the name the "
    "shipped models were trained with.",
    "Merged: only true synonyms or the same visual concept named differently (aeroplane = airplane, "
    "pavement = sidewalk, pedestrian = person, motorcycle = minibike, couch = sofa, tv = television, "
    "dining table = table, sports ball = ball, wine glass = glass, potted plant = plant) and equal "
    "names across datasets (tree, building, sky, road, car, cow, ...).",
    "Signs: MSRC 'sign' and CamVid 'sign symbol' (mostly road signs and plates) map to ADE "
    "'signboard'; 'traffic light' (ADE, COCO) and COCO 'stop sign' stay separate classes because "
    "those datasets evaluate them; CamVid's few traffic-light pixels are thus trained as signboard.",
    "Kept separate: MSRC 'face' and 'body' (own union classes, neither is 'person'), CamVid "
    "'bicyclist' (rider with bicycle), and COCO classes that ADE only covers with a broader class "
    "(handbag/backpack vs bag, laptop vs computer, teddy bear vs plaything, animals vs animal, foods "
    "vs food, cup vs glass, stop sign vs signboard).",
    "A merged class takes the ADE sentences (else those of the dataset with the most), then adds "
    "the other datasets' sentences that are not near-repeats of kept ones, up to 15; no two "
    "classes of one dataset share a union class (checked by tools/assemble_descriptions.py).",
]

_STOP = frozenset(
    "a an the of and or in on at to for with by from is are it its as be often usually typically "
    "may can has have that this into onto than very".split())
_SPELLING = {"colour": "color", "grey": "gray", "kerb": "curb", "centre": "center", "tyre": "tire"}


# --------------------------------------------------------------------------------- class lists
def dataset_classes(key: str, datasets_dir: Path = DATASETS_DIR) -> list[str]:
    """The class names of ``assets/datasets/<key>.json`` in dataset order."""
    path = Path(datasets_dir) / f"{key}.json"
    try:
        classes = json.loads(path.read_text(encoding="utf-8"))["classes"]
    except FileNotFoundError:
        raise ProLabError(f"Class list not found: {path}") from None
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ProLabError(f"{path} is not a class list with a 'classes' entry: {exc}") from None
    if len(set(classes)) != len(classes):
        raise ProLabError(f"{path} lists a class twice.")
    return list(classes)


# --------------------------------------------------------------------------------- ADE parts
def assemble_ade(parts_dir: Path = DESC_DIR / "parts", classes: Sequence[str] | None = None
                 ) -> DescriptionSet:
    """Join ``parts_dir/ade20k_150_*.json`` in the dataset's class order.

    Each class must be in exactly one part, with exactly the dataset's spelling; classes missing
    from every part, classes in two parts and names the dataset does not have are errors.
    """
    classes = list(classes) if classes is not None else dataset_classes(ADE_KEY)
    parts = sorted(Path(parts_dir).glob(f"{ADE_KEY}_*.json"))
    if not parts:
        raise ProLabError(f"No {ADE_KEY}_*.json parts in {parts_dir}.")
    found: dict[str, tuple[list[str], str]] = {}
    for part in parts:
        for name, sentences in load_descriptions(part).items():
            if name in found:
                raise ProLabError(f"ADE class {name!r} is in both {found[name][1]} and {part.name}.")
            found[name] = (sentences, part.name)
    unknown = [n for n in found if n not in classes]
    if unknown:
        raise ProLabError(f"ADE parts name classes that {ADE_KEY} does not have: {unknown}")
    missing = [c for c in classes if c not in found]
    if missing:
        raise ProLabError(f"{len(missing)} ADE classes are in no part yet, e.g. {missing[:5]}")
    return DescriptionSet([(c, found[c][0]) for c in classes])


# --------------------------------------------------------------------------------- the union
def union_mapping(class_lists: Mapping[str, Sequence[str]],
                  renames: Mapping[str, Mapping[str, str]] = RENAMES) -> dict[str, dict[str, str]]:
    """Dataset class -> union class for every class of every dataset.

    Raises if a rename names a class the dataset lacks, or if two classes of one dataset would map
    to the same union class (the union could no longer tell them apart when evaluating).
    """
    mapping: dict[str, dict[str, str]] = {}
    for key, classes in class_lists.items():
        table = dict(renames.get(key, {}))
        stray = [c for c in table if c not in classes]
        if stray:
            raise ProLabError(f"Renames for {key} name classes it does not have: {stray}")
        mapping[key] = {c: table.get(c, c) for c in classes}
        by_target: dict[str, list[str]] = {}
        for c, t in mapping[key].items():
            by_target.setdefault(t.casefold(), []).append(c)
        clashes = [v for v in by_target.values() if len(v) > 1]
        if clashes:
            raise ProLabError(f"{key}: classes {clashes} would share one union class; "
                              "a dataset's classes must stay distinct in the union.")
    return mapping


def _tokens(sentence: str) -> frozenset[str]:
    words = re.findall(r"[a-z0-9]+", sentence.casefold())
    out = set()
    for w in words:
        w = _SPELLING.get(w, w)
        if w in _STOP:
            continue
        out.add(w[:-1] if len(w) > 3 and w.endswith("s") and not w.endswith("ss") else w)
    return frozenset(out)


def _redundant(candidate: str, kept: Sequence[str], threshold: float = 0.6) -> bool:
    """True if ``candidate`` repeats a kept sentence: most of the shorter one's content words shared."""
    c = _tokens(candidate)
    if not c:
        return True
    for s in kept:
        k = _tokens(s)
        if k and len(c & k) / min(len(c), len(k)) >= threshold:
            return True
    return False


def merge_sentences(lead: Sequence[str], others: Sequence[Sequence[str]],
                    cap: int = MAX_SENTENCES) -> list[str]:
    """``lead``'s sentences, then the others' non-redundant ones in order, at most ``cap``."""
    out: list[str] = []
    for s in lead:
        if s not in out:
            out.append(s)
    for sentences in others:
        for s in sentences:
            if len(out) >= cap:
                return out[:cap]
            if not _redundant(s, out):
                out.append(s)
    return out[:cap]


def build_union(sets: Mapping[str, Mapping[str, Sequence[str]]],
                mapping: Mapping[str, Mapping[str, str]]) -> DescriptionSet:
    """Union descriptions: categories in first-seen order over ``sets`` (iterated in order)."""
    members: dict[str, list[tuple[str, str]]] = {}  # union class -> [(dataset key, class)]
    for key, ds in sets.items():
        for c in ds:
            if c not in mapping[key]:
                raise ProLabError(f"{key} class {c!r} has no entry in the union mapping.")
            members.setdefault(mapping[key][c], []).append((key, c))
    for key, table in mapping.items():
        missing = [c for c in table if c not in sets[key]]
        if missing:
            raise ProLabError(f"{key}: classes without descriptions: {missing}")
    items = []
    for target, srcs in members.items():
        lists = [list(sets[k][c]) for k, c in srcs]
        # ADE (first in priority) leads where present; otherwise the most complete description.
        lead = 0 if srcs[0][0] == ADE_KEY else max(range(len(lists)), key=lambda i: (len(lists[i]), -i))
        sentences = merge_sentences(lists[lead], [x for i, x in enumerate(lists) if i != lead])
        if not MIN_SENTENCES <= len(sentences) <= MAX_SENTENCES:
            raise ProLabError(f"Union class {target!r} has {len(sentences)} sentences, "
                              f"needs {MIN_SENTENCES}..{MAX_SENTENCES}.")
        items.append((target, sentences))
    return DescriptionSet(items)


def merges(mapping: Mapping[str, Mapping[str, str]]) -> dict[str, list[str]]:
    """Union classes that more than one dataset maps to: union class -> ["key:class", ...]."""
    out: dict[str, list[str]] = {}
    for key, table in mapping.items():
        for c, t in table.items():
            out.setdefault(t, []).append(f"{key}:{c}")
    return {t: v for t, v in out.items() if len(v) > 1}


def assemble(desc_dir: Path = DESC_DIR, datasets_dir: Path = DATASETS_DIR
             ) -> tuple[DescriptionSet, DescriptionSet, dict]:
    """In memory: (ADE descriptions, union descriptions, mapping file content)."""
    desc_dir, datasets_dir = Path(desc_dir), Path(datasets_dir)
    class_lists = {k: dataset_classes(k, datasets_dir) for k in UNION_KEYS}
    ade = assemble_ade(desc_dir / "parts", class_lists[ADE_KEY])
    sets = {k: (ade if k == ADE_KEY else load_descriptions(desc_dir / f"{k}.json")) for k in UNION_KEYS}
    for k, ds in sets.items():  # each set must follow its class list exactly
        if list(ds) != class_lists[k]:
            extra = [c for c in ds if c not in class_lists[k]]
            missing = [c for c in class_lists[k] if c not in ds]
            raise ProLabError(f"{k}.json does not match its class list (missing {missing[:5]}, "
                              f"extra {extra[:5]}).")
    mapping = union_mapping(class_lists)
    union = build_union(sets, mapping)
    file_mapping = {k: mapping[k] for k in ("msrc_23", "camvid_11", "coco_80", ADE_KEY)}
    file_mapping["_notes"] = NOTES
    return ade, union, file_mapping


def _json_text(obj) -> str:
    return json.dumps(obj, indent=1, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--desc-dir", type=Path, default=DESC_DIR)
    parser.add_argument("--datasets-dir", type=Path, default=DATASETS_DIR)
    parser.add_argument("--check", action="store_true",
                        help="only report whether the written files are up to date (exit 1 if not)")
    args = parser.parse_args(argv)
    try:
        ade, union, mapping = assemble(args.desc_dir, args.datasets_dir)
    except ProLabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    outputs = {
        args.desc_dir / f"{ADE_KEY}.json": _json_text(ade.to_dict()),
        args.desc_dir / "union.json": _json_text(union.to_dict()),
        args.desc_dir / "union_mapping.json": _json_text(mapping),
    }
    stale = [p for p, text in outputs.items()
             if not p.is_file() or p.read_text(encoding="utf-8") != text]
    if args.check:
        for p in stale:
            print(f"out of date: {p}")
        return 1 if stale else 0
    for p, text in outputs.items():
        write_text_atomic(p, text)
    merged = merges({k: v for k, v in mapping.items() if not k.startswith("_")})
    print(f"ADE: {len(ade)} classes, {ade.num_sentences} sentences; union: {len(union)} classes, "
          f"{union.num_sentences} sentences, {len(merged)} merged concepts; wrote {len(outputs)} files.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
