"""Cost of guided upsampling in :func:`prolab.inference.segment`: bilinear vs the fast guided filter.

    python -m bench.guided_upsampling_speed [--threads 2] [--runs 15] [--classes 150]
    python -m bench.guided_upsampling_speed --real [--threads 2] [--runs 15]

Median wall ms of ``segment`` at a 512 x 512 output from (C, 128, 128) class scores in which 5, 11, 20
and 60 classes win somewhere (the classes the guided path refines), for bilinear (no guide), the RGB
guide and the gray (luma) guide. ``segment`` ships the gray guide; RGB is measured by swapping the
private guide conversion for the duration of its runs (the filter's code is the same for 1 or 3 guide
channels, so only the guide differs). Prints the machine's load average before and after: on a shared
machine the wall times include waiting for a core.

``--real``: the same comparison (bilinear against the shipped gray guide) on real class scores instead:
the default model's scores, as the app's workbench derives them, for the shipped example images and,
when the shared datasets are found, two CamVid val images, with the ADE20K-150 and the CamVid-11 label
sets; the output is each image's working size, where the classes that win somewhere vary with the image.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import statistics
from pathlib import Path

import prolab  # noqa: F401 - before torch, as every entry point (OpenMP's wait policy)
import numpy as np
import torch

import prolab.inference as inference
from bench.common import timed
from prolab.inference import segment

OUT = (512, 512)
LOW = (128, 128)
WINNERS = (5, 11, 20, 60)


def scene(winners: int, classes: int, seed: int = 0) -> tuple[torch.Tensor, np.ndarray]:
    """(C, 128, 128) scores where exactly ``winners`` classes win (one per block of a grid, noisy),
    and a 512 x 512 RGB image with matching coloured blocks (the timing does not depend on content)."""
    rng = np.random.default_rng(seed)
    n = math.ceil(math.sqrt(winners))
    ys, xs = np.arange(LOW[0]) * n // LOW[0], np.arange(LOW[1]) * n // LOW[1]
    region = (ys[:, None] * n + xs[None, :]) % winners  # every one of the ``winners`` regions appears
    chosen = rng.choice(classes, size=winners, replace=False)
    scores = 0.3 + 0.02 * rng.standard_normal((classes, *LOW))
    scores[chosen[region], np.arange(LOW[0])[:, None], np.arange(LOW[1])[None, :]] += 0.2
    colours = rng.integers(0, 256, (winners, 3))
    big = np.kron(region, np.ones((OUT[0] // LOW[0], OUT[1] // LOW[1]), int))
    image = np.clip(colours[big] + rng.normal(0, 8, (*OUT, 3)), 0, 255).astype(np.uint8)
    assert len(np.unique(scores.argmax(0))) == winners
    return torch.from_numpy(scores.astype(np.float32)), image


_SHIPPED = inference._guide_channels  # the gray (luma) conversion segment uses


def rgb_channels(guide: np.ndarray) -> torch.Tensor:
    """The RGB variant of the shipped conversion: (3, H, W) in [-0.5, 0.5]."""
    return torch.from_numpy(np.ascontiguousarray(guide.transpose(2, 0, 1))).float().div_(255).sub_(0.5)


@contextlib.contextmanager
def guide_variant(name: str):
    """Run ``segment``'s guided path with the named guide ("gray": the shipped conversion; "rgb": RGB)."""
    inference._guide_channels = rgb_channels if name == "rgb" else _SHIPPED
    try:
        yield
    finally:
        inference._guide_channels = _SHIPPED


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--classes", type=int, default=150, help="C, the size of the label space")
    ap.add_argument("--real", action="store_true", help="real images and label sets instead of synthetic scores")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.real:
        return real_scenes(args.runs)
    print(f"torch threads: {torch.get_num_threads()} | cores: {os.cpu_count()} | "
          f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    print(f"segment -> {OUT[0]}x{OUT[1]} from ({args.classes}, {LOW[0]}, {LOW[1]}) scores, "
          f"median wall ms of {args.runs} interleaved runs (process CPU ms in brackets)")
    print(f"{'winning classes':>16} {'bilinear':>16} {'guided rgb':>16} {'guided gray':>16} (shipped)")
    results = {}
    variants = ("bilinear", "rgb", "gray")
    for winners in WINNERS:
        scores, image = scene(winners, args.classes)
        times = {name: ([], []) for name in variants}
        for run in range(args.runs + 1):  # round-robin, so that a burst of load hits every variant alike
            for name in variants:
                guide = None if name == "bilinear" else image
                with guide_variant(name):
                    t = timed(lambda: segment(scores, OUT, guide=guide))
                if run:  # the first round warms up
                    times[name][0].append(t.median_s * 1000)
                    times[name][1].append(t.median_cpu_s * 1000)
        results[winners] = {name: (statistics.median(w), statistics.median(c)) for name, (w, c) in times.items()}
        print(f"{winners:>16} " + " ".join(f"{f'{w:.1f} ({c:.0f})':>16}" for w, c in results[winners].values()))
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return results


def real_images() -> list:
    """The shipped example images and, when the shared datasets are found, the first two CamVid val images."""
    from prolab.assets import EXAMPLES_DIR
    from prolab.data.readers import find_data_root, read_shared

    images = sorted(p for p in EXAMPLES_DIR.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    root = find_data_root(None)
    if root is not None:
        images += [sample.image for sample in read_shared(root, "camvid", "val").samples[:2]]
    return images


def real_scenes(runs: int) -> dict:
    """Median wall ms of ``segment`` with and without the guide on the default model's real class scores."""
    from prolab.assets import DEFAULT_MODEL_DIR
    from prolab.edit_session import EditSession
    from prolab.encoder import TextEncoder
    from prolab.model import PropertySegmenter

    model = PropertySegmenter.from_pretrained(DEFAULT_MODEL_DIR)
    encoder = TextEncoder(model.label_space.encoder_id, template=model.label_space.template)
    print(f"{'label set':>11} {'image':>18} {'output':>9} {'winning':>8} {'bilinear':>10} {'guided':>10}")
    results = {}
    for label_set in ("ade20k_150", "camvid_11"):
        session = EditSession(model, encoder, label_set=label_set)
        for path in real_images():
            session.segment(path)
            scores, image = torch.from_numpy(session.class_scores()), session.image
            winners = int(torch.bincount(scores.argmax(0).reshape(-1)).count_nonzero())
            times = {"bilinear": [], "guided": []}
            for run in range(runs + 1):  # round-robin; the first round warms up
                for name in times:
                    t = timed(lambda: segment(scores, image.shape[:2], guide=image if name == "guided" else None))
                    if run:
                        times[name].append(t.median_s * 1000)
            row = {name: statistics.median(v) for name, v in times.items()}
            results[f"{label_set}/{Path(path).name}"] = {"winning": winners, "size": list(image.shape[:2]), **row}
            print(f"{label_set:>11} {Path(path).name:>18} {image.shape[0]:>4}x{image.shape[1]:<4} {winners:>8} "
                  f"{row['bilinear']:>9.1f} {row['guided']:>10.1f}")
    print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
    return results


if __name__ == "__main__":
    main()
