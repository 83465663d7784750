"""Where the shipped assets live: descriptions, class lists, models, example images, sentence maps.

One place for these paths (the library, the CLI, the app and the benches all import them). The
assets folder is, in this order:

1. ``$PROLAB_ASSETS``, when set (e.g. assets kept outside the installation);
2. the assets installed with the package: a wheel (``pip install .``) carries the repository's
   ``assets/`` as the package data ``prolab/_assets`` (see ``pyproject.toml``);
3. ``assets/`` beside the ``prolab`` package: a source checkout, run in place or installed with
   ``pip install -e .``.
"""
from __future__ import annotations

import os
from importlib.resources import files
from pathlib import Path

#: Where a wheel installs the assets, inside the ``prolab`` package.
PACKAGED_ASSETS = "_assets"


def find_assets_dir() -> Path:
    """The assets folder (see the module's docstring for the order it is looked for in)."""
    override = os.environ.get("PROLAB_ASSETS")
    if override:
        return Path(override).expanduser()
    package = Path(str(files("prolab")))  # a folder on disk: pip never installs a zipped package
    installed, checkout = package / PACKAGED_ASSETS, package.parent / "assets"
    return installed if installed.is_dir() else checkout


ASSETS_DIR = find_assets_dir()
MODELS_DIR = ASSETS_DIR / "models"
#: The model the app, ``predict`` and the benches use when none is given.
DEFAULT_MODEL_DIR = MODELS_DIR / "default"
EXAMPLES_DIR = ASSETS_DIR / "examples"
DATASETS_DIR = ASSETS_DIR / "datasets"
DESCRIPTIONS_DIR = ASSETS_DIR / "descriptions"
#: Precomputed 2-D sentence maps of the shipped label sets (:mod:`prolab.explore`).
LAYOUTS_DIR = ASSETS_DIR / "layouts"
