"""The Export tab's views: the class mask image (class colours only)."""
from __future__ import annotations

import numpy as np

from prolab.colorize import colorize


def mask_image(seg) -> np.ndarray:
    """Class colours only (no photo), for export."""
    return colorize(seg.labels, seg.palette)
