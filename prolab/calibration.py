"""Per-class score offsets of a model, fitted on labelled training images.

ProLab's class score ``cos(property activations, multi-hot)`` has a different reach for each class: a class
whose sentences landed on properties the network rarely fires on its pixels (CamVid's pole: a third of its
properties are shared with rugs, forks and bottles) never scores as high as a class whose properties all
fire (road). The argmax then never picks it, however well the pixel embedding separates it. A constant per
trained class, added to its score, corrects that reach without retraining.

The offsets are fitted once per model on the *train* splits (never val): the network's class scores are
upsampled to each sampled label pixel, and a coordinate ascent over a grid picks, class by class, the offset
that maximises the mean over the datasets of their mIoU (each dataset scored over its own classes). One
vector over the model's trained classes, shared by every label set: :class:`~prolab.class_scorer.ClassScorer`
gives a label set's class the offset of the trained class it means (its mutual best match, scaled by the
match's weight), so a class in other words is corrected like the class it means, and a novel class gets none.
A category model's offsets are added to its softmax probabilities, row by row.

The vector is ``score_offsets.json`` in the model folder (:func:`save_offsets`, :func:`load_offsets`),
made by ``python -m prolab calibrate``.
"""
from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from prolab.errors import ProLabError

OFFSETS_FILE = "score_offsets.json"
#: Offsets are searched on this grid (cosine scale; scores lie in [0, 1]). 0.02 steps: finer steps changed the
#: train mIoU of the shipped model by less than 0.05 points.
DEFAULT_GRID = tuple(round(x, 2) for x in np.arange(-0.5, 0.5001, 0.02))
#: An offset outside this range is refused on load: it would decide the argmax on its own.
MAX_ABS_OFFSET = 1.0


@dataclass
class PixelSample:
    """One dataset's sampled labelled pixels: (N, C) class scores, (N,) labels in 0..C-1, and the trained
    class each of the C columns is (its name in the model's label space)."""

    scores: torch.Tensor
    labels: torch.Tensor
    trained_names: list[str]
    name: str = ""


def sample_pixels(class_scores: torch.Tensor, label: np.ndarray, fraction: float, rng: np.random.Generator,
                  ignore_index: int = 255) -> tuple[torch.Tensor, torch.Tensor]:
    """A random ``fraction`` of an image's labelled pixels: the (C, h, w) scores upsampled bilinearly to the
    label's size, as :func:`~prolab.inference.segment` does, as (n, C) rows and their (n,) labels."""
    if not 0 < fraction <= 1:
        raise ProLabError(f"The pixel fraction must lie in (0, 1], got {fraction}.")
    c = class_scores.shape[0]
    height, width = label.shape
    up = F.interpolate(class_scores.detach().float()[None], size=(height, width), mode="bilinear",
                       align_corners=False)[0]
    flat = torch.from_numpy(label.reshape(-1).astype(np.int64))
    keep = (flat != ignore_index).numpy() & (rng.random(flat.numel()) < fraction)
    index = torch.from_numpy(np.flatnonzero(keep))
    return up.reshape(c, -1)[:, index].T.contiguous(), flat[index]


def sample_miou(sample: PixelSample, offsets: torch.Tensor) -> float:
    """mIoU of ``argmax(scores + offsets)`` on the sampled pixels, over the classes with sampled pixels."""
    c = sample.scores.shape[1]
    pred = (sample.scores + offsets).argmax(1)
    cm = torch.bincount(sample.labels * c + pred, minlength=c * c).reshape(c, c).double()
    inter = cm.diagonal()
    union = cm.sum(0) + cm.sum(1) - inter
    present = cm.sum(1) > 0
    return float((inter[present] / union[present]).mean()) if present.any() else 0.0


def own_pixel_means(sample: PixelSample) -> dict[str, float]:
    """Each class's mean score on its own sampled pixels (before offsets): how high it reaches where it is
    right. Classes without sampled pixels are left out."""
    out = {}
    for c, name in enumerate(sample.trained_names):
        mine = sample.labels == c
        if bool(mine.any()):
            out[name] = round(float(sample.scores[mine, c].mean()), 4)
    return out


def fit_offsets(samples: Sequence[PixelSample], grid: Sequence[float] = DEFAULT_GRID,
                sweeps: int = 3) -> tuple[dict[str, float], list[dict]]:
    """Offsets per trained class maximising the mean over ``samples`` (datasets) of their sampled mIoU.

    Coordinate ascent: each sweep visits the trained classes in name order and sets each one's offset to the
    grid value with the best objective (ties keep the current value, so a class that does not matter stays
    at 0); stops after ``sweeps`` sweeps or a sweep that changes nothing. Returns the non-zero offsets and one
    record per sweep (the objective and each dataset's mIoU)."""
    if not samples:
        raise ProLabError("Fitting score offsets needs at least one dataset's pixels.")
    names = sorted({n for s in samples for n in s.trained_names})
    offsets = dict.fromkeys(names, 0.0)

    def vectors(values: dict[str, float]) -> list[torch.Tensor]:
        return [torch.tensor([values[n] for n in s.trained_names]) for s in samples]

    def scores(values: dict[str, float]) -> list[float]:
        return [sample_miou(s, v) for s, v in zip(samples, vectors(values))]

    current = scores(offsets)
    history = [{"sweep": 0, "objective": float(np.mean(current)),
                "miou": {s.name: m for s, m in zip(samples, current)}}]
    for sweep in range(1, sweeps + 1):
        changed = False
        for name in names:
            users = [i for i, s in enumerate(samples) if name in s.trained_names]
            best_value, best_total = offsets[name], sum(current[i] for i in users)
            trial = dict(offsets)
            for value in grid:
                trial[name] = float(value)
                vec = vectors(trial)
                total = sum(sample_miou(samples[i], vec[i]) for i in users)
                if total > best_total + 1e-9:
                    best_value, best_total = float(value), total
            if best_value != offsets[name]:
                offsets[name], changed = best_value, True
                current = scores(offsets)
        history.append({"sweep": sweep, "objective": float(np.mean(current)),
                        "miou": {s.name: m for s, m in zip(samples, current)}})
        if not changed:
            break
    return {n: v for n, v in offsets.items() if v != 0.0}, history


def check_offsets(offsets: object, known: Iterable[str] | None = None, where: str = "score offsets") -> dict[str, float]:
    """``offsets`` as {trained class: float}, or a clear :class:`ProLabError` (not a mapping, a value that is
    not a finite number within +-MAX_ABS_OFFSET, a class the model does not have)."""
    if not isinstance(offsets, dict):
        raise ProLabError(f"{where}: expected an object {{class: offset}}, got {type(offsets).__name__}.")
    out = {}
    for name, value in offsets.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) \
                or abs(value) > MAX_ABS_OFFSET:
            raise ProLabError(f"{where}: the offset of {name!r} must be a number within +-{MAX_ABS_OFFSET}, "
                              f"got {value!r}.")
        out[str(name)] = float(value)
    if known is not None:
        unknown = sorted(set(out) - set(known))
        if unknown:
            raise ProLabError(f"{where}: {len(unknown)} classes the model was not trained on: "
                              f"{', '.join(unknown[:8])}.")
    return out


def save_offsets(directory: str | Path, offsets: dict[str, float], info: dict | None = None) -> Path:
    """Write ``score_offsets.json`` (the offsets and how they were fitted) into a model folder."""
    path = Path(directory) / OFFSETS_FILE
    payload = {"offsets": {k: offsets[k] for k in sorted(offsets)}, **(info or {})}
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(payload, indent=1) + "\n", encoding="utf-8")
    tmp.replace(path)
    return path


def load_offsets(directory: str | Path, known: Iterable[str] | None = None) -> dict[str, float]:
    """The offsets in a model folder's ``score_offsets.json`` ({} when there is none)."""
    path = Path(directory) / OFFSETS_FILE
    if not path.is_file():
        return {}
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProLabError(f"Cannot read {path}: {exc}") from None
    if not isinstance(payload, dict) or "offsets" not in payload:
        raise ProLabError(f"{path}: expected an object with an \"offsets\" entry.")
    return check_offsets(payload["offsets"], known, str(path))

