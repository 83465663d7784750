"""Training augmentation written with torch ops only: random scale, crop, flip, colour jitter.

Every random draw comes from an explicit :class:`torch.Generator`, so the same seed gives the
same crops. Images are ``(3, H, W)`` uint8 or float in [0, 1]; labels ``(H, W)`` with 255 = ignore.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

IGNORE = 255


@dataclass
class AugmentConfig:
    """Augmentation parameters (defaults follow common segmentation recipes, scaled down)."""

    crop_size: int = 256
    scale_min: float = 0.5
    scale_max: float = 2.0
    flip: bool = True
    brightness: float = 0.25
    contrast: float = 0.25
    saturation: float = 0.25


def _uniform(gen: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=gen))


def to_float(image: torch.Tensor) -> torch.Tensor:
    """uint8 (3, H, W) -> float32 in [0, 1]; float input is returned as float32."""
    return image.float().div_(255.0) if image.dtype == torch.uint8 else image.float()


def resize(image: torch.Tensor, label: torch.Tensor | None, size: tuple[int, int]):
    """Bilinear resize of a float image and nearest resize of a label to ``size`` = (H, W)."""
    img = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
    lab = None
    if label is not None:
        lab = F.interpolate(label[None, None].float(), size=size, mode="nearest")[0, 0].to(label.dtype)
    return img, lab


def scale(image: torch.Tensor, label: torch.Tensor | None, s: float):
    """:func:`resize` by the factor ``s`` (at least one pixel a side)."""
    h, w = image.shape[-2:]
    return resize(image, label, (max(1, round(h * s)), max(1, round(w * s))))


def random_scale(image, label, gen: torch.Generator, lo: float, hi: float):
    return scale(image, label, _uniform(gen, lo, hi))


def random_crop(image: torch.Tensor, label: torch.Tensor, size: int, gen: torch.Generator):
    """Crop ``size`` x ``size``; smaller images are padded (image with 0, label with ignore)."""
    h, w = image.shape[-2:]
    ph, pw = max(size - h, 0), max(size - w, 0)
    if ph or pw:
        image = F.pad(image, (0, pw, 0, ph), value=0.0)
        label = F.pad(label, (0, pw, 0, ph), value=IGNORE)
        h, w = image.shape[-2:]
    top = int(torch.randint(0, h - size + 1, (), generator=gen))
    left = int(torch.randint(0, w - size + 1, (), generator=gen))
    return image[:, top:top + size, left:left + size], label[top:top + size, left:left + size]


def colour_jitter(image: torch.Tensor, gen: torch.Generator, brightness: float, contrast: float,
                  saturation: float) -> torch.Tensor:
    """Random brightness, contrast and saturation factors in [1 - x, 1 + x] on a [0, 1] image."""
    b = _uniform(gen, 1 - brightness, 1 + brightness)
    c = _uniform(gen, 1 - contrast, 1 + contrast)
    s = _uniform(gen, 1 - saturation, 1 + saturation)
    image = image * b
    grey = (0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2])[None]
    image = (image - grey.mean()) * c + grey.mean()
    grey = (0.299 * image[0] + 0.587 * image[1] + 0.114 * image[2])[None]
    image = (image - grey) * s + grey
    return image.clamp_(0.0, 1.0)


def augment(image: torch.Tensor, label: torch.Tensor, cfg: AugmentConfig,
            gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale, crop, flip and jitter one sample; returns float (3, S, S) and int64 (S, S)."""
    image = to_float(image)
    if cfg.scale_max > 0 and (cfg.scale_min != 1.0 or cfg.scale_max != 1.0):
        image, label = random_scale(image, label, gen, cfg.scale_min, cfg.scale_max)
    image, label = random_crop(image, label, cfg.crop_size, gen)
    if cfg.flip and bool(torch.rand((), generator=gen) < 0.5):
        image, label = image.flip(-1), label.flip(-1)
    if cfg.brightness or cfg.contrast or cfg.saturation:
        image = colour_jitter(image, gen, cfg.brightness, cfg.contrast, cfg.saturation)
    return image.contiguous(), label.long().contiguous()
