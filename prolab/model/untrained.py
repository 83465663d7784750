"""A placeholder model for before a trained one is available (the app and its tests)."""
from __future__ import annotations

import torch

from prolab.labelspace import LabelSpace
from prolab.model.config import SegmenterConfig
from prolab.model.segmenter import PropertySegmenter


def untrained_model(label_space: LabelSpace, seed: int = 0, input_size: int = 512) -> PropertySegmenter:
    """A small randomly initialised compact-CNN property model over ``label_space``.

    Its predictions are meaningless; it exists so that the app and its tests work before a
    trained model is available.
    """
    torch.manual_seed(seed)
    config = SegmenterConfig(backbone="compact-cnn", backbone_options={"width": 0.5},
                             embed_dim=label_space.dim, decoder_channels=32, ppm=False, aux_head=False,
                             input_size=input_size)
    return PropertySegmenter(config, label_space).eval()
