"""The Segment tab's own views: the pixel inspector's marked overlay and its tables."""
from __future__ import annotations

import numpy as np

from prolab.explore import pixel_top


def mark_pixel(image: np.ndarray, x: int, y: int) -> np.ndarray:
    """A copy of ``image`` with a crosshair ring at pixel (x, y): where the pixel inspector looked. Drawn
    in white on black so that it shows on any colour; sized to the image."""
    out = image.copy()
    h, w = out.shape[:2]
    r = max(4, round(min(h, w) / 60))
    yy, xx = np.ogrid[:h, :w]
    d2 = (yy - y) ** 2 + (xx - x) ** 2
    ring_outer, ring_inner = (d2 <= (r + 2) ** 2) & (d2 >= (r - 2) ** 2), (d2 <= (r + 1) ** 2) & (d2 >= (r - 1) ** 2)
    cross = ((np.abs(yy - y) <= 1) & (np.abs(xx - x) >= r + 2) & (np.abs(xx - x) <= 2 * r + 2)) | \
            ((np.abs(xx - x) <= 1) & (np.abs(yy - y) >= r + 2) & (np.abs(yy - y) <= 2 * r + 2))
    out[ring_outer | cross] = 0
    out[ring_inner] = 255
    return out


def pixel_tables(seg, class_scores: np.ndarray, row: int, col: int, k: int = 8) -> tuple[list[list], list[list]]:
    """Top classes (of ``seg``'s ``class_scores``) and top properties at one cell of the score maps."""
    top_c = pixel_top(class_scores, row, col, k)
    classes = [[seg.class_names[i], round(v, 4)] for i, v in zip(top_c.indices, top_c.values)]
    props: list[list] = []
    if seg.activations is not None:
        top_p = pixel_top(seg.activations, row, col, k)
        props = [[i, seg.property_names[i], round(v, 4)] for i, v in zip(top_p.indices, top_p.values)]
    return classes, props
