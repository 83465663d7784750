"""Where the shipped assets live: descriptions, class lists, models, example images.

One place for these paths (the library, the CLI, the app and the benches all import them).
``$PROLAB_ASSETS`` points elsewhere, e.g. for an installed package whose assets were copied.
"""
from __future__ import annotations

import os
from pathlib import Path

ASSETS_DIR = Path(os.environ.get("PROLAB_ASSETS") or Path(__file__).resolve().parents[1] / "assets")
MODELS_DIR = ASSETS_DIR / "models"
#: The model the app, ``predict`` and the benches use when none is given.
DEFAULT_MODEL_DIR = MODELS_DIR / "default"
EXAMPLES_DIR = ASSETS_DIR / "examples"
DESCRIPTIONS_DIR = ASSETS_DIR / "descriptions"
