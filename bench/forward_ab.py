"""Forward time of two model folders, interleaved in one process: is B slower than A?

    python -m bench.forward_ab --a assets/models/default --b runs/NEW [--size 512] [--rounds 20]
                               [--threads 2] [--json docs/results/default_trials/NEW_forward_ab.json]

``bench.speed`` times one model per process; on a shared machine two such runs minutes apart differ by more
than two weights of one graph do (issue 29's bound is 10 %). Here both models take turns on the same
input in one process (ABBA order, after one untimed warm-up call each), so a change of the machine's
speed hits both alike; it prints each model's median, B / A, and the ratio of every adjacent pair's times,
whose median is the least sensitive to drift. With ``--flush-denormals`` it repeats the rounds with
``torch.set_flush_denormal(True)`` (weights that decay towards zero can slow a CPU through denormal floats).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from bench.common import machine, write_json


def interleaved(forward_a, forward_b, rounds: int) -> dict:
    """Time ``rounds`` calls of each, in ABBA order; medians (ms), B / A and the median pairwise ratio."""
    a_ms, b_ms = [], []
    for r in range(rounds):
        order = ((a_ms, forward_a), (b_ms, forward_b)) if r % 2 == 0 else ((b_ms, forward_b), (a_ms, forward_a))
        for times, fn in order:
            start = time.perf_counter()
            fn()
            times.append((time.perf_counter() - start) * 1000)
    median_a, median_b = statistics.median(a_ms), statistics.median(b_ms)
    return {"a_ms": a_ms, "b_ms": b_ms, "median_a_ms": median_a, "median_b_ms": median_b,
            "b_over_a": median_b / median_a,
            "median_pair_ratio": statistics.median(b / a for a, b in zip(a_ms, b_ms))}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--a", required=True, help="the reference model folder")
    ap.add_argument("--b", required=True, help="the model folder compared with it")
    ap.add_argument("--size", type=int, default=512, help="square input side in px (issue 29: 512)")
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--flush-denormals", action="store_true", help="also time with denormals flushed to zero")
    ap.add_argument("--json", help="write the result here")
    args = ap.parse_args(argv)
    if args.rounds < 1 or args.size < 32:
        ap.error("--rounds must be >= 1 and --size >= 32")

    import prolab  # noqa: F401  (its thread policy must be set before torch starts its pool)
    import torch

    from prolab.inference import embed_image
    from prolab.model import PropertySegmenter

    threads_before = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    model_a, model_b = (PropertySegmenter.from_pretrained(Path(p)) for p in (args.a, args.b))
    image = (np.random.default_rng(0).random((args.size, args.size, 3)) * 255).astype(np.uint8)
    load_before = os.getloadavg()
    runs = {}
    for flush in (False, True) if args.flush_denormals else (False,):
        torch.set_flush_denormal(flush)
        forward_a = lambda: embed_image(model_a, image, size=args.size)  # noqa: E731
        forward_b = lambda: embed_image(model_b, image, size=args.size)  # noqa: E731
        forward_a(), forward_b()  # warm-up: allocator, kernels
        key = "flush_denormals" if flush else "default"
        runs[key] = interleaved(forward_a, forward_b, args.rounds)
        r = runs[key]
        print(f"{key}: A {r['median_a_ms']:.1f} ms, B {r['median_b_ms']:.1f} ms, B / A {r['b_over_a']:.3f}, "
              f"median pairwise ratio {r['median_pair_ratio']:.3f} ({args.rounds} rounds, {args.size} px, "
              f"{args.threads} threads)", flush=True)
    torch.set_flush_denormal(False)
    described = machine()  # with the threads it ran on
    torch.set_num_threads(threads_before)  # a caller in the same process (the tests) keeps its pool
    result = {"a": args.a, "b": args.b, "size": args.size, "rounds": args.rounds, "threads": args.threads,
              "runs": runs, "load_average": {"start": load_before, "end": os.getloadavg()},
              "machine": described, "command": "python -m bench.forward_ab " + " ".join(sys.argv[1:] if argv is None else argv)}
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
