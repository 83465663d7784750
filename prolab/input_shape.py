"""The network input's shape: the short side resized to ``size``, the long side capped at ``MAX_ASPECT``
times it, both rounded to the output stride (:func:`resized_shape`). Shared by inference, the open-set
credit's ImageNet pass and the evaluation cache, so that they agree on the grid."""
from __future__ import annotations

import numpy as np

from prolab.errors import ProLabError
from prolab.model.segmenter import OUTPUT_STRIDE, SIZE_DIVISOR

MAX_ASPECT = 4  # long side at most this many times ``size``
MAX_SIZE = 2048  # largest short side: 2048 x 8192 input, a few GB of activations for the default model


def check_size(size: int | None) -> None:
    """Raise :class:`ProLabError` unless ``size`` (None: the model's) is an int the network can take."""
    if size is not None and (isinstance(size, bool) or not isinstance(size, (int, np.integer))
                             or not SIZE_DIVISOR <= size <= MAX_SIZE):
        raise ProLabError(f"Inference size must be between {SIZE_DIVISOR} and {MAX_SIZE} pixels, got {size}.")


def resized_shape(height: int, width: int, size: int) -> tuple[int, int]:
    """Shape the image is resized to before the forward pass (see the module docstring)."""
    check_size(size)
    scale = min(size / min(height, width), MAX_ASPECT * size / max(height, width))

    def round4(v: float) -> int:
        return max(OUTPUT_STRIDE, int(round(v / OUTPUT_STRIDE)) * OUTPUT_STRIDE)

    return round4(height * scale), round4(width * scale)
