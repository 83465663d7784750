"""Frozen-backbone features of every training image, for training the heads alone (``head_only``).

On a CPU the backbone's forward and backward pass is most of a training step. With the backbone frozen,
its features of an image do not change, so they are computed once per image variant (a few scales,
each also mirrored), kept in memory as float16 and, with a cache folder, on disk keyed by the backbone's
weights and the images. A training batch is then a set of random crops cut from those feature maps at
offsets on the backbone's coarsest grid (32 px), so a crop's features are exactly the full image's
features there and its labels line up pixel for pixel. What is lost against image-space augmentation:
colour jitter, and scales between the listed ones.
"""
from __future__ import annotations

import hashlib
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from prolab.caches import save_tensors_atomic
from prolab.data.transforms import scale, to_float
from prolab.errors import ProLabError
from prolab.model.segmenter import SIZE_DIVISOR
from prolab.scoring import IGNORE_INDEX

log = logging.getLogger(__name__)
GRID = SIZE_DIVISOR  # the coarsest backbone stride: crop offsets on this grid cut every level exactly


def pad_to_grid(image: torch.Tensor, label: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad (3, H, W) image with 0 and (H, W) label with ignore to multiples of :data:`GRID`."""
    h, w = image.shape[-2:]
    ph, pw = math.ceil(h / GRID) * GRID - h, math.ceil(w / GRID) * GRID - w
    return F.pad(image, (0, pw, 0, ph), value=0.0), F.pad(label, (0, pw, 0, ph), value=IGNORE_INDEX)


@dataclass
class FeatureBank:
    """Per variant: backbone feature maps (float16, fine to coarse), the padded label (uint8), and a
    sampling weight (the source's ``repeat``)."""

    features: list[list[torch.Tensor]]
    labels: list[torch.Tensor]
    weights: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    @classmethod
    def build(cls, model, dataset, scales: list[list[float]], flip: bool = True,
              cache_dir: str | os.PathLike | None = None) -> "FeatureBank":
        """Features of every distinct image of ``dataset`` (a :class:`~prolab.data.SegmentationDataset`)
        at each of its source's ``scales`` (``scales[k]`` for source k), mirrored too with ``flip``."""
        if not all(hasattr(dataset, name) for name in ("images", "labels", "source_index")):
            raise ProLabError("head_only training needs a SegmentationDataset (images, labels and their "
                              f"sources held in memory); got {type(dataset).__name__}.")
        groups: dict[int, list] = {}
        seen: dict[int, list] = {}
        for img, lab, k in zip(dataset.images, dataset.labels, dataset.source_index):
            if id(img) in seen:  # a repeated source shares its tensors: count it, do not recompute
                seen[id(img)][3] += 1
                continue
            seen[id(img)] = entry = [img, lab, k, 1]
            groups.setdefault(k, []).append(entry)
        features, labels, weights = [], [], []
        backbone = backbone_digest(model) if cache_dir is not None else None
        for k, entries in sorted(groups.items()):
            f, lab = _source_features(model, [(e[0], e[1]) for e in entries], scales[k], flip, cache_dir, backbone)
            per_image = len(f) // len(entries)
            features += f
            labels += lab
            weights += [float(e[3]) for e in entries for _ in range(per_image)]
        return cls(features, labels, torch.tensor(weights))

    def batch(self, n: int, crop: int, generator: torch.Generator) -> tuple[list[torch.Tensor], torch.Tensor]:
        """``n`` random ``crop`` x ``crop`` crops (variants drawn by weight): float32 features per level
        and int64 labels (n, crop, crop); a variant smaller than the crop is padded (features 0, ignore)."""
        if crop % GRID:
            raise ProLabError(f"crop must be a multiple of {GRID}, got {crop}.")
        picks = torch.multinomial(self.weights, n, replacement=True, generator=generator).tolist()
        levels: list[list[torch.Tensor]] = [[] for _ in self.features[0]]
        labels = []
        for i in picks:
            label = self.labels[i]
            h, w = label.shape
            ch, cw = min(crop, h), min(crop, w)
            top = GRID * int(torch.randint(0, (h - ch) // GRID + 1, (), generator=generator))
            left = GRID * int(torch.randint(0, (w - cw) // GRID + 1, (), generator=generator))
            labels.append(F.pad(label[top:top + ch, left:left + cw].long(), (0, crop - cw, 0, crop - ch),
                                value=IGNORE_INDEX))
            for level, fmap in zip(levels, self.features[i]):
                s = h // fmap.shape[-2]
                x = fmap[:, top // s:(top + ch) // s, left // s:(left + cw) // s].float()
                level.append(F.pad(x, (0, (crop - cw) // s, 0, (crop - ch) // s)))
        return [torch.stack(level) for level in levels], torch.stack(labels)


def _variants(image: torch.Tensor, label: torch.Tensor, scales: list[float], flip: bool):
    image = to_float(image)
    for s in scales:
        img, lab = (image, label) if s == 1.0 else scale(image, label, s)
        for mirrored in ((False, True) if flip else (False,)):
            yield pad_to_grid(img.flip(-1), lab.flip(-1)) if mirrored else pad_to_grid(img, lab)


def backbone_digest(model) -> str:
    """SHA-256 of the backbone's weights and buffers (what its features depend on)."""
    h = hashlib.sha256()
    for name, tensor in model.backbone.state_dict().items():
        h.update(name.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def cache_path(backbone: str, pairs, scales: list[float], flip: bool, cache_dir: str | os.PathLike) -> Path:
    """The cache file of one source's features: keyed by the backbone (:func:`backbone_digest`), the
    images and labels, the scales and the mirroring."""
    h = hashlib.sha256(repr((backbone, list(scales), flip)).encode())
    for img, lab in pairs:
        h.update(img.numpy().tobytes())
        h.update(lab.numpy().tobytes())
    return Path(cache_dir) / f"features-{h.hexdigest()[:20]}.pt"


@torch.no_grad()
def _source_features(model, pairs, scales: list[float], flip: bool, cache_dir, backbone: str | None):
    key = None
    if cache_dir is not None:
        key = cache_path(backbone, pairs, scales, flip, cache_dir)
        if key.is_file():
            try:
                data = torch.load(key, weights_only=True)
                return data["features"], data["labels"]
            except Exception as exc:  # a half-written or foreign file: recompute, do not fail the run
                log.warning("feature cache %s unreadable (%s); recomputing", key, exc)
    was_training = model.training
    model.eval()
    features, labels = [], []
    try:
        for img, lab in pairs:
            for image, label in _variants(img, lab, scales, flip):
                feats = model.backbone(model.normalize(image[None]))
                features.append([f[0].half() for f in feats])
                labels.append(label.to(torch.uint8))
    finally:
        model.train(was_training)
    if key is not None:
        save_tensors_atomic({"features": features, "labels": labels}, key)
    return features, labels
