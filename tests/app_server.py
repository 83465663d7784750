"""Start the real app (``python app.py``) on 127.0.0.1 on a free port in a subprocess, for API and
browser tests; with a tiny untrained model saved to a temporary folder, so nothing is downloaded."""
from __future__ import annotations

import os
from pathlib import Path

from bench.app_server import running_app  # noqa: F401 - the tests' way to start the app (public)

REPO = Path(__file__).resolve().parents[1]
MODEL_CARD = "# Tiny test model\nRandom weights, CamVid label space; made by tests/app_server.py.\n"


def save_tiny_model(directory: Path, encoder, key: str = "camvid_11", output_scale: float = 1.0) -> Path:
    """An untrained compact model over ``key``'s label space, saved with ``save_pretrained``.

    ``output_scale`` multiplies the head's last weights: random weights give nearly uniform scores
    (one class everywhere); scaled up, the label map follows the image, so different images give
    different masks."""
    from prolab import labelsets
    from prolab.labelspace import LabelSpace, suggested_k
    from prolab.model import untrained_model

    ls = labelsets.load(key)
    space = LabelSpace.build(ls.descriptions, encoder, k=suggested_k(ls.descriptions.num_sentences))
    model = untrained_model(space, input_size=128)
    if output_scale != 1.0:
        import torch

        with torch.no_grad():
            model.decode_head.classifier.weight.mul_(output_scale)
    model.save_pretrained(directory)
    (Path(directory) / "MODEL_CARD.md").write_text(MODEL_CARD, encoding="utf-8")
    return Path(directory)


def save_tiny_category_model(directory: Path, classes=("sky", "tree", "road")) -> Path:
    """An untrained category-supervised (baseline) compact model with fixed classes."""
    import torch

    from prolab.model import PropertySegmenter, SegmenterConfig

    torch.manual_seed(0)
    config = SegmenterConfig(supervision="category", num_classes=len(classes), class_names=list(classes),
                             backbone_options={"width": 0.5}, decoder_channels=32, ppm=False, aux_head=False,
                             input_size=128)
    PropertySegmenter(config).save_pretrained(directory)
    return Path(directory)


def app_log(port_url: str) -> str:
    port = port_url.rstrip("/").rsplit(":", 1)[1]
    p = Path(os.environ.get("TMPDIR", "/tmp")) / f"prolab-app-{port}.log"
    return p.read_text() if p.is_file() else ""
