"""Benchmarks of ProLab Explorer. Run them from the repository root as modules, e.g.
``python -m bench.speed --smoke``; shared helpers are imported as ``bench.<module>``."""
import os
from pathlib import Path

# Like the CLI and the app: default paths never download (set HF_HUB_OFFLINE=0 to allow it).
os.environ.setdefault("HF_HUB_OFFLINE", "1")

#: The repository: the benches start ``app.py`` and read ``configs/`` and ``docs/`` from here
#: (assets come from :mod:`prolab.assets`).
ROOT = Path(__file__).resolve().parents[1]


def write_json(path, result) -> None:
    """Write a bench result as indented JSON (parent folders created)."""
    import json

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")
