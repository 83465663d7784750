"""Reading evaluations: two results compared class by class, the pairs of classes a prediction mixes
up, and the per-class rows a chart shows.

Each function takes the JSON-ready dicts :func:`prolab.evaluate.evaluate` and
:meth:`prolab.eval_cache.EvalCache.rescore` return (``miou``, ``pixel_accuracy``, ``per_class_iou``,
``per_class_pixels``; a rescore adds ``classes`` and ``confusion``), so a result read back from a JSON file
works as well as a fresh one.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from prolab.errors import ProLabError


@dataclass(frozen=True)
class ClassDelta:
    """One class's IoU in two evaluations (None where the class has no IoU there)."""

    name: str
    a: float | None
    b: float | None
    pixels: int  # ground-truth pixels of the class (in b, else a)

    @property
    def delta(self) -> float | None:
        return None if self.a is None or self.b is None else self.b - self.a

    def to_dict(self) -> dict:
        return {"class": self.name, "a": self.a, "b": self.b, "delta": self.delta, "pixels": self.pixels}


@dataclass(frozen=True)
class Comparison:
    """Evaluation ``b`` against evaluation ``a``: mIoU, pixel accuracy and per-class IoU deltas."""

    miou: tuple[float, float]
    pixel_accuracy: tuple[float, float]
    rows: list[ClassDelta]  # largest |delta| first; classes without a delta last

    @property
    def miou_delta(self) -> float:
        return self.miou[1] - self.miou[0]

    def to_dict(self) -> dict:
        return {"miou": {"a": self.miou[0], "b": self.miou[1], "delta": self.miou_delta},
                "pixel_accuracy": {"a": self.pixel_accuracy[0], "b": self.pixel_accuracy[1],
                                   "delta": self.pixel_accuracy[1] - self.pixel_accuracy[0]},
                "per_class": [r.to_dict() for r in self.rows]}


def compare(a: dict, b: dict) -> Comparison:
    """Per-class IoU deltas of metrics ``b`` against ``a`` (two :meth:`~prolab.eval_cache.EvalCache.rescore` or
    :func:`~prolab.evaluate.evaluate` results on the same dataset), sorted by |delta|, largest first;
    ties and classes without an IoU on either side (no pixels, never predicted) by name."""
    for key in ("dataset", "split"):
        if a.get(key) != b.get(key):
            raise ProLabError(f"Cannot compare evaluations of different data: {key} {a.get(key)!r} vs "
                              f"{b.get(key)!r}.")
    for m in (a, b):
        if "per_class_iou" not in m:
            raise ProLabError("These results have no per-class IoU (no ground truth was evaluated).")
    ia, ib = a["per_class_iou"], b["per_class_iou"]
    pixels = {**a.get("per_class_pixels", {}), **b.get("per_class_pixels", {})}
    rows = [ClassDelta(n, ia.get(n), ib.get(n), int(pixels.get(n, 0))) for n in dict.fromkeys([*ia, *ib])]
    rows.sort(key=lambda r: (r.delta is None, -abs(r.delta or 0.0), r.name))
    return Comparison((a["miou"], b["miou"]), (a["pixel_accuracy"], b["pixel_accuracy"]), rows)


def format_comparison(comparison: Comparison, names: tuple[str, str] = ("A", "B"), top: int | None = None) -> str:
    """The comparison as a text table (IoU in percent; the ``top`` rows with the largest change, default
    all), then mIoU and pixel accuracy, then the classes with no IoU on either side."""
    def pct(x):
        return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:.2f}"

    def signed(x):
        return "-" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{100 * x:+.2f}"

    absent = [r.name for r in comparison.rows if r.a is None and r.b is None]
    shown = [r for r in comparison.rows if r.a is not None or r.b is not None]
    rows = shown[:top] if top else shown
    width = max([len("pixel accuracy")] + [len(r.name) for r in rows]) + 2
    head = f"{'class':<{width}}{names[0] + ' IoU':>10}{names[1] + ' IoU':>10}{'delta':>9}"
    lines = [head, "-" * len(head)]
    lines += [f"{r.name:<{width}}{pct(r.a):>10}{pct(r.b):>10}{signed(r.delta):>9}" for r in rows]
    if len(shown) > len(rows):
        lines.append(f"({len(shown) - len(rows)} more classes)")
    lines.append("-" * len(head))
    for label, (x, y) in (("mIoU", comparison.miou), ("pixel accuracy", comparison.pixel_accuracy)):
        lines.append(f"{label:<{width}}{pct(x):>10}{pct(y):>10}{signed(y - x):>9}")
    if absent:
        lines.append(f"no pixels and never predicted (no IoU): {', '.join(absent)}")
    return "\n".join(lines)


@dataclass(frozen=True)
class ConfusedPair:
    """Two classes the prediction mixes up, and the properties their rows share."""

    a: str
    b: str
    a_as_b: int  # pixels of a (ground truth) predicted as b
    b_as_a: int
    shared_properties: list[str]

    @property
    def pixels(self) -> int:
        return self.a_as_b + self.b_as_a

    def to_dict(self) -> dict:
        return {"a": self.a, "b": self.b, "a_as_b": self.a_as_b, "b_as_a": self.b_as_a, "pixels": self.pixels,
                "shared_properties": list(self.shared_properties)}


def confused_pairs(metrics: dict, label_space=None, top: int = 5) -> list[ConfusedPair]:
    """The ``top`` class pairs with the most pixels confused (both directions together) in an
    :meth:`~prolab.eval_cache.EvalCache.rescore` result, each with the names of the properties both classes use in
    ``label_space`` (the space scored, e.g. ``EvalCache.scorer(space).space``; classes looked up by name,
    ignoring case; none given or a class not in it: no shared properties)."""
    if "confusion" not in metrics or "classes" not in metrics:
        raise ProLabError("These results have no confusion matrix (use EvalCache.rescore).")
    m = np.asarray(metrics["confusion"], np.int64)
    names = list(metrics["classes"])
    both = np.triu(m + m.T, k=1)
    order = np.argsort(-both, axis=None, kind="stable")[:max(0, int(top))]
    out = []
    for flat in order:
        i, j = divmod(int(flat), len(names))
        if both[i, j] <= 0:
            break
        out.append(ConfusedPair(names[i], names[j], int(m[i, j]), int(m[j, i]),
                                shared_properties(label_space, names[i], names[j])))
    return out


def shared_properties(label_space, a: str, b: str) -> list[str]:
    """Names of the properties classes ``a`` and ``b`` both use in ``label_space`` ([] if either is absent)."""
    if label_space is None:
        return []
    try:
        ia, ib = label_space.class_index(a), label_space.class_index(b)
    except ProLabError:
        return []
    mh = label_space.multihot
    return [label_space.property_names[k] for k in np.flatnonzero(mh[ia] & mh[ib])]


@dataclass(frozen=True)
class ClassIoU:
    """One class of an evaluation, as a chart shows it."""

    name: str
    iou: float | None  # None: no pixels and never predicted
    pixels: int  # ground-truth pixels
    scored: bool = True  # False: the label space lacks the class, so it is never predicted
    previous: float | None = None  # its IoU in the evaluation compared with (None: none or no IoU)


def class_ious(metrics: dict, label_space=None, previous: dict | None = None) -> list[ClassIoU]:
    """Per-class rows of an :meth:`~prolab.eval_cache.EvalCache.rescore` (or :func:`~prolab.evaluate.evaluate`) result, in
    the dataset's class order: IoU, ground-truth pixels, whether ``label_space`` (the space scored, e.g.
    ``EvalCache.scorer(space).space``; None: assume every class) can predict the class, and its IoU in the
    ``previous`` result."""
    if "per_class_iou" not in metrics:
        raise ProLabError("These results have no per-class IoU (no ground truth was evaluated).")
    iou, pixels = metrics["per_class_iou"], metrics.get("per_class_pixels", {})
    before = (previous or {}).get("per_class_iou", {})
    scored = set(metrics.get("classes") or iou)
    if label_space is not None:
        rows = np.asarray(label_space.class_matrix).any(axis=1)
        scored = {n for n, r in zip(label_space.class_names, rows) if r}
    return [ClassIoU(n, iou[n], int(pixels.get(n, 0)), n in scored, before.get(n)) for n in iou]


def json_ready(obj):
    """``obj`` with NaN and infinities as None: JSON has no NaN (a class absent from a labelled set has no IoU)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: json_ready(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [json_ready(v) for v in obj]
    return obj
