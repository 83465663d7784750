"""What every bench shares: the repository's root, the datasets folder, a description of the machine,
timing a call, and writing a result as JSON."""
from __future__ import annotations

import json
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: The repository: the benches start ``app.py`` and read ``configs/`` and ``docs/`` from here
#: (assets come from :mod:`prolab.assets`).
ROOT = Path(__file__).resolve().parents[1]


def default_data_root() -> str:
    """The shared datasets folder: ``$PROLAB_DATA``, else ``../shared/datasets`` beside the repository."""
    return os.environ.get("PROLAB_DATA") or str(ROOT.parent / "shared" / "datasets")


def machine() -> dict:
    """The CPU, core and torch thread counts and versions: one description of the machine for every result."""
    import torch

    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__}


@dataclass(frozen=True)
class Timing:
    """Wall and process-CPU seconds of each call (CPU: all threads of this process; on a shared machine
    the wall time includes waiting for a core, the CPU time does not) and the last call's result."""

    walls: list[float]
    cpus: list[float]
    result: Any = None

    @property
    def median_s(self) -> float:
        return statistics.median(self.walls)

    @property
    def median_cpu_s(self) -> float:
        return statistics.median(self.cpus)

    def summary(self) -> dict:
        """``median_s``, ``median_cpu_s``, ``min_s``, ``max_s`` and ``runs``, as the results record them."""
        return {"median_s": self.median_s, "median_cpu_s": self.median_cpu_s,
                "min_s": min(self.walls), "max_s": max(self.walls), "runs": len(self.walls)}


def timed(fn: Callable[..., Any], runs: int = 1, setup: Callable[[], Any] | None = None) -> Timing:
    """Call ``fn`` ``runs`` times and time each call; ``setup`` (untimed) runs before every call and its
    result is passed to ``fn``."""
    walls, cpus, result = [], [], None
    for _ in range(runs):
        arg = setup() if setup else None
        w, c = time.perf_counter(), time.process_time()
        result = fn(arg) if setup else fn()
        cpus.append(time.process_time() - c)
        walls.append(time.perf_counter() - w)
    return Timing(walls, cpus, result)


def write_json(path, result) -> None:
    """Write a bench result as indented JSON (parent folders created)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(result, indent=1) + "\n")


def add_report_option(parser) -> None:
    """``--report FILE ...``: print the tables of earlier result JSONs instead of measuring (see :func:`print_reports`)."""
    parser.add_argument("--report", type=Path, nargs="+", help="only print the tables of these result JSONs")


def print_reports(paths: list[Path] | None, markdown: Callable[[dict], str]) -> bool:
    """Print ``markdown`` of each JSON's ``"results"``; True when there were ``paths`` (the bench is done)."""
    for path in paths or []:
        print(f"<!-- {path} -->\n" + markdown(json.loads(Path(path).read_text())["results"]))
    return bool(paths)


def pan_clip(path: Path, seconds: float, fps: int = 30) -> Path:
    """A 640 x 480 clip panning across an example photo (H.264: decoding costs what a real clip costs)."""
    import numpy as np
    from PIL import Image

    from prolab.assets import EXAMPLES_DIR
    from prolab.video import make_test_video

    photo = Image.open(EXAMPLES_DIR / "coffee.png").convert("RGB").resize((960, 720))
    big = np.asarray(photo)
    n = int(seconds * fps)
    frames = (big[120:600, x:x + 640] for x in (np.arange(n) * 320 // max(1, n - 1)))
    return make_test_video(path, frames, fps=fps)
