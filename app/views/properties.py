"""The Properties tab's views: the heatmap's colour bar and range."""
from __future__ import annotations

import numpy as np


def colorbar_html(vmin: float = 0.0, vmax: float = 1.0) -> str:
    """The heatmap's colour bar from ``vmin`` to ``vmax``."""
    return (f'<div class="pl-colorbar"><span>{vmin:.3f}</span><div class="pl-cbar"></div>'
            f'<span>{vmax:.3f}</span><small>activation sigmoid(⟨e, c_k⟩/T)</small></div>')


def map_range(values: np.ndarray, stretch: bool) -> tuple[float, float]:
    """Colour range of a heatmap: the map's own range (stretch) or the full 0..1."""
    if not stretch:
        return 0.0, 1.0
    lo, hi = float(values.min()), float(values.max())
    return (lo, hi) if hi > lo else (0.0, 1.0)
