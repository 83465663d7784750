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
gives a label set's class the offset of the trained class it means (its most similar mutual best match),
times ``1 - novelty``, so a class in other words is corrected like the class it means, and a novel class gets
none.
A category model's offsets are added to its softmax probabilities, row by row.

The vector is ``score_offsets.json`` in the model folder (:func:`save_offsets`, :func:`load_offsets`),
made by ``python -m prolab calibrate``. It names the weights it was fitted for (:func:`weights_fingerprint`):
offsets beside other weights (a checkpoint copied over by hand) are not applied.
"""
from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from prolab.descriptions import write_text_atomic
from prolab.errors import ProLabError, name_list

OFFSETS_FILE = "score_offsets.json"
#: Offsets are searched on this grid (cosine scale; scores lie in [0, 1]). Bounded at +-0.24: a grid of +-0.5
#: fitted the shipped model's cow at -0.48, right for MSRC-v2's trained classes (val 90.2) and fatal for the
#: same classes in the project's own words, where "horse" scores 0.55 on cows (cow 0.0 IoU,
#: bench.label_transfer); at +-0.24 the val gains stayed (see the model card).
DEFAULT_GRID = tuple(round(x, 2) for x in np.arange(-0.24, 0.2401, 0.02))
#: A class's offset moves away from 0 only as far as its last 0.1 mIoU point (summed over the datasets that
#: have the class) needs: the smallest offset within this of the best, so that noise does not set offsets.
MIN_GAIN = 0.001
#: An offset outside this range is refused on load: it would decide the argmax on its own.
MAX_ABS_OFFSET = 1.0


@dataclass
class PixelSample:
    """One dataset's sampled labelled pixels: (N, C) class scores, (N,) labels in 0..C-1, and for each of the
    C columns the trained class whose offset it takes (its name in the model's label space; None: no offset,
    e.g. a class the model never trained on) and the share of it (``shares``, default 1 each: a class given in
    other words takes ``1 - novelty`` of it, :meth:`prolab.class_scorer.ClassScorer.offset_sources`)."""

    scores: torch.Tensor
    labels: torch.Tensor
    trained_names: list[str | None]
    name: str = ""
    shares: list[float] | None = None

    def __post_init__(self):
        c = self.scores.shape[1] if self.scores.dim() == 2 else -1
        if c != len(self.trained_names) or (self.shares is not None and len(self.shares) != c) \
                or self.labels.shape[:1] != self.scores.shape[:1]:
            raise ProLabError(f"PixelSample {self.name!r}: {tuple(self.scores.shape)} scores, "
                              f"{tuple(self.labels.shape)} labels, {len(self.trained_names)} column names"
                              f"{'' if self.shares is None else f', {len(self.shares)} shares'}.")

    def offset_vector(self, offsets: dict[str, float]) -> torch.Tensor:
        """The (C,) offsets this sample's columns get from ``offsets`` {trained class: offset}."""
        shares = self.shares or [1.0] * len(self.trained_names)
        return offset_values(zip(self.trained_names, shares), offsets, self.scores.dtype)


def offset_values(sources: Iterable[tuple[str | None, float]], offsets: Mapping[str, float],
                  dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The offset of each class given its source (:meth:`prolab.class_scorer.ClassScorer.offset_sources`: the
    trained class it takes the offset of, or None, and its share of it) and ``offsets`` {trained class:
    offset}: the one rule for what the fit tries and what scoring adds."""
    return torch.tensor([w * offsets.get(t, 0.0) if t is not None else 0.0 for t, w in sources], dtype=dtype)


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
    """mIoU of ``argmax(scores + offsets)`` on the sampled pixels, counted as
    :meth:`prolab.evaluate.ConfusionMatrix.metrics` counts it: over the classes in the labels or the
    predictions (a class predicted where it never is scores 0)."""
    c = sample.scores.shape[1]
    pred = (sample.scores + offsets).argmax(1)
    cm = torch.bincount(sample.labels * c + pred, minlength=c * c).reshape(c, c).double()
    inter = cm.diagonal()
    union = cm.sum(0) + cm.sum(1) - inter
    present = union > 0
    return float((inter[present] / union[present]).mean()) if present.any() else 0.0


def own_pixel_means(sample: PixelSample) -> dict[str, float]:
    """Each class's mean score on its own sampled pixels (before offsets): how high it reaches where it is
    right. Classes without sampled pixels are left out."""
    out = {}
    for c, name in enumerate(sample.trained_names):
        mine = sample.labels == c
        if name is not None and bool(mine.any()):
            out[name] = round(float(sample.scores[mine, c].mean()), 4)
    return out


def fit_offsets(samples: Sequence[PixelSample], grid: Sequence[float] = DEFAULT_GRID,
                sweeps: int = 3, min_gain: float = MIN_GAIN) -> tuple[dict[str, float], list[dict]]:
    """Offsets per trained class maximising the mean over ``samples`` (datasets) of their sampled mIoU.

    Coordinate ascent: each sweep visits the trained classes in name order and sets each one's offset to the
    grid value closest to 0 whose objective (the summed mIoU of the datasets that have the class) is within
    ``min_gain`` of the best (so a class that does not matter stays at 0, and offsets stay as small as the
    data allows); stops after ``sweeps`` sweeps or a sweep that changes nothing. Returns the non-zero offsets
    and one record per sweep (the objective and each dataset's mIoU)."""
    if not samples:
        raise ProLabError("Fitting score offsets needs at least one dataset's pixels.")
    names = sorted({n for s in samples for n in s.trained_names if n is not None})
    offsets = dict.fromkeys(names, 0.0)

    def vectors(values: dict[str, float]) -> list[torch.Tensor]:
        return [s.offset_vector(values) for s in samples]

    def scores(values: dict[str, float]) -> list[float]:
        return [sample_miou(s, v) for s, v in zip(samples, vectors(values))]

    current = scores(offsets)
    history = [{"sweep": 0, "objective": float(np.mean(current)),
                "miou": {s.name: m for s, m in zip(samples, current)}}]
    for sweep in range(1, sweeps + 1):
        changed = False
        for name in names:
            users = [i for i, s in enumerate(samples) if name in s.trained_names]
            trial = dict(offsets)
            totals = {}
            for value in sorted({0.0, *map(float, grid)}):
                trial[name] = value
                vec = vectors(trial)
                totals[value] = sum(sample_miou(samples[i], vec[i]) for i in users)
            top = max(totals.values())
            best_value = min((v for v, t in totals.items() if t >= top - min_gain), key=lambda v: (abs(v), v))
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
                              f"{name_list(unknown)}.")
    return out


def weights_fingerprint(state: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 of a state dict (names, dtypes, shapes and values, in name order): which weights offsets
    were fitted for. Hash the weights file as read (``safetensors.torch.load_file``): a model loaded from a
    float16 file holds float32 tensors, whose fingerprint differs."""
    digest = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}\n".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_offsets(directory: str | Path, offsets: dict[str, float], weights: str, info: dict | None = None) -> Path:
    """Write ``score_offsets.json`` (the offsets, the :func:`weights_fingerprint` of the weights they were
    fitted for, and how they were fitted) into a model folder."""
    payload = {"offsets": {k: offsets[k] for k in sorted(offsets)}, "weights_sha256": weights, **(info or {})}
    return write_text_atomic(Path(directory) / OFFSETS_FILE, json.dumps(payload, indent=1) + "\n")


class StaleOffsetsError(ProLabError):
    """``score_offsets.json`` was fitted for other weights than those beside it (or names none)."""


def load_offsets(directory: str | Path, known: Iterable[str] | None = None,
                 weights: str | None = None) -> dict[str, float]:
    """The offsets in a model folder's ``score_offsets.json`` ({} when there is none). With ``weights`` (the
    :func:`weights_fingerprint` of the weights loaded) a file fitted for other weights, or naming none, raises
    :class:`StaleOffsetsError` (the loader then goes on without offsets and says so)."""
    path = Path(directory) / OFFSETS_FILE
    if not path.is_file():
        return {}
    fix = " Delete the file, or fit it again with `prolab calibrate` (which does not read it)."
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ProLabError(f"Cannot read {path}: {exc}.{fix}") from None
    if not isinstance(payload, dict) or "offsets" not in payload:
        raise ProLabError(f"{path}: expected an object with an \"offsets\" entry.{fix}")
    # which weights first: a file left beside other weights (another label space too) is stale, not broken
    if weights is not None and payload.get("weights_sha256") != weights:
        why = ("does not say which weights it was fitted for" if "weights_sha256" not in payload
               else "was fitted for other weights than these")
        raise StaleOffsetsError(f"{path} {why}; its score offsets are not applied. Fit them for these weights "
                                f"with `python -m prolab calibrate --model {Path(directory)} --dataset ...`.")
    try:
        return check_offsets(payload["offsets"], known, str(path))
    except ProLabError as exc:
        raise ProLabError(f"{exc}{fix}") from None
