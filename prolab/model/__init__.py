"""Segmentation networks: backbones, decode heads and the :class:`PropertySegmenter` wrapper."""
from prolab.model.config import COMPACT_CNN, SegmenterConfig
from prolab.model.segmenter import OUTPUT_STRIDE, SIZE_DIVISOR, PropertySegmenter
from prolab.model.untrained import untrained_model

__all__ = ["COMPACT_CNN", "OUTPUT_STRIDE", "SIZE_DIVISOR", "PropertySegmenter", "SegmenterConfig", "untrained_model"]
