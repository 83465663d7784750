"""Cost of guided upsampling in :func:`prolab.inference.segment`: bilinear vs the fast guided filter.

    python -m bench.guided_upsampling_speed [--threads 2] [--runs 15] [--classes 150]

Median wall ms of ``segment`` at a 512 x 512 output from (C, 128, 128) class scores in which 5, 11, 20
and 60 classes win somewhere (the classes the guided path refines), for bilinear (no guide), the RGB
guide and the gray (luma) guide. ``segment`` ships the gray guide; RGB is measured by swapping the
private guide conversion for the duration of its runs (the filter's code is the same for 1 or 3 guide
channels, so only the guide differs). Prints the machine's load average before and after: on a shared
machine the wall times include waiting for a core.
"""
from __future__ import annotations

import argparse
import contextlib
import math
import os
import statistics

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
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
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


if __name__ == "__main__":
    main()
