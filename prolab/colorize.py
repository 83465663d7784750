"""Turning label maps and activation maps into RGB images (for overlays, exports and the app).

Every function takes and returns NumPy arrays: label maps are ``(H, W)`` integers with ``-1`` for
"unknown", activation maps are ``(H, W)`` floats, images are ``(H, W, 3)`` uint8 RGB.
"""
from __future__ import annotations

import colorsys
from collections.abc import Sequence

import numpy as np

from prolab.errors import ProLabError

#: Colour of pixels whose best class score is under the unknown threshold.
UNKNOWN_COLOR = (20, 20, 20)

# "inferno" sampled at 9 evenly spaced points (matplotlib's perceptually uniform map); linear
# interpolation between them is visually indistinguishable at overlay opacity.
_INFERNO = np.array([
    [0, 0, 4], [31, 12, 72], [85, 15, 109], [136, 34, 106], [186, 54, 85],
    [227, 89, 51], [249, 140, 10], [249, 201, 50], [252, 255, 164]], np.float32)


def make_palette(n: int, base: Sequence[Sequence[int]] | None = None) -> np.ndarray:
    """``(n, 3)`` uint8 colours: ``base`` (a dataset palette) first, then distinct generated colours.

    Generated colours walk the hue circle by the golden ratio, so classes added later (novel
    categories) get colours that stay apart from each other, and the result is deterministic.
    """
    if n < 0:
        raise ProLabError(f"Palette size must be >= 0, got {n}.")
    out = np.zeros((n, 3), np.uint8)
    used = 0
    if base is not None and len(base):
        b = np.asarray(base, dtype=np.int64)
        if b.ndim != 2 or b.shape[1] != 3 or b.min() < 0 or b.max() > 255:
            raise ProLabError("A palette must be a list of [r, g, b] triples with values 0..255.")
        used = min(n, len(b))
        out[:used] = b[:used]
    for i in range(used, n):
        h = (0.13 + i * 0.618033988749895) % 1.0
        s = 0.65 + 0.25 * ((i * 7) % 3) / 2
        v = 0.95 - 0.25 * ((i * 5) % 2)
        out[i] = np.round(np.array(colorsys.hsv_to_rgb(h, s, v)) * 255)
    return out


def colorize(labels: np.ndarray, palette: np.ndarray,
             unknown_color: Sequence[int] = UNKNOWN_COLOR) -> np.ndarray:
    """``(H, W)`` class indices (``-1`` = unknown) -> ``(H, W, 3)`` uint8 colours."""
    labels = np.asarray(labels)
    palette = np.asarray(palette, np.uint8)
    if labels.ndim != 2:
        raise ProLabError(f"A label map must be 2-D, got shape {labels.shape}.")
    if labels.size and labels.max(initial=-1) >= len(palette):
        raise ProLabError(f"Label {int(labels.max())} has no colour (palette has {len(palette)}).")
    lut = np.concatenate([palette, np.asarray([unknown_color], np.uint8)])
    return lut[np.where(labels < 0, len(palette), labels)]


def blend(image: np.ndarray, colors: np.ndarray, alpha: float) -> np.ndarray:
    """``(1 - alpha) * image + alpha * colors`` as uint8; both ``(H, W, 3)`` of the same size."""
    image, colors = np.asarray(image), np.asarray(colors)
    if image.shape != colors.shape:
        raise ProLabError(f"Cannot blend images of shapes {image.shape} and {colors.shape}.")
    a = float(np.clip(alpha, 0.0, 1.0))
    out = image.astype(np.float32) * (1.0 - a) + colors.astype(np.float32) * a
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def heatmap(values: np.ndarray, vmin: float | None = None, vmax: float | None = None) -> np.ndarray:
    """``(H, W)`` floats -> ``(H, W, 3)`` uint8 "inferno" colours (dark = low, yellow = high).

    ``vmin`` / ``vmax`` default to the map's own range; a constant map is drawn at the low end.
    """
    v = np.asarray(values, np.float32)
    if v.ndim != 2:
        raise ProLabError(f"A heatmap needs a 2-D array, got shape {v.shape}.")
    lo = float(np.nanmin(v)) if vmin is None else float(vmin)
    hi = float(np.nanmax(v)) if vmax is None else float(vmax)
    t = np.zeros_like(v) if hi <= lo else np.clip((v - lo) / (hi - lo), 0.0, 1.0)
    t = np.nan_to_num(t, nan=0.0) * (len(_INFERNO) - 1)
    i0 = np.minimum(t.astype(np.int64), len(_INFERNO) - 2)
    f = (t - i0)[..., None]
    rgb = _INFERNO[i0] * (1.0 - f) + _INFERNO[i0 + 1] * f
    return np.clip(rgb + 0.5, 0, 255).astype(np.uint8)


def resize_map(values: np.ndarray, size: tuple[int, int], nearest: bool = False) -> np.ndarray:
    """Resize a 2-D map to ``size = (H, W)``: bilinear for scores, ``nearest`` for labels."""
    # lazy: torch takes about a second to import; the rest of this module is NumPy only
    import torch
    import torch.nn.functional as F

    v = np.asarray(values)
    if v.shape == tuple(size):
        return v
    t = torch.from_numpy(np.ascontiguousarray(v, np.float32))[None, None]
    if nearest:
        out = F.interpolate(t, size=tuple(size), mode="nearest")
    else:
        out = F.interpolate(t, size=tuple(size), mode="bilinear", align_corners=False)
    out = out[0, 0].numpy()
    return out.astype(v.dtype) if nearest else out
