"""Forward time of two model folders, interleaved in one process: is B slower than A?

    python -m bench.forward_ab --a assets/models/default --b runs/NEW [--size 512] [--rounds 20] [--threads 2]
                               [--flush-denormals] [--json docs/results/default_trials/NEW_forward_ab.json]

``bench.speed`` times one model per process; on a shared machine two such runs minutes apart differ by more
than two weights of one graph do (issue 29's bound is 10 %). Here both models take turns on the same
input in one process (ABBA order, after one untimed warm-up call each), so a change of the machine's
speed hits both alike; it prints each model's median, B / A, and the median of the same-round ratios B_i / A_i
(the two calls of a round are adjacent in time), the least sensitive to drift. With ``--flush-denormals`` a second
pass repeats the rounds with ``torch.set_flush_denormal(True)`` (weights that decay towards zero can slow a CPU
through denormal floats): compare B with A inside each pass, not one pass with the other (the second runs later).
The JSON records the weights' fingerprints, since ``runs/`` folders get overwritten.
"""
from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import time
from datetime import datetime, timezone
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
    ap.add_argument("--rounds", type=int, default=20, help="even: each model goes first in half of them")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--flush-denormals", action="store_true", help="also time with denormals flushed to zero")
    ap.add_argument("--json", help="write the result here")
    args = ap.parse_args(argv)

    from prolab.input_shape import MAX_SIZE, SIZE_DIVISOR

    if args.rounds < 2 or args.rounds % 2:
        ap.error(f"--rounds must be an even number >= 2, got {args.rounds}")
    if not SIZE_DIVISOR <= args.size <= MAX_SIZE:
        ap.error(f"--size must be between {SIZE_DIVISOR} and {MAX_SIZE}, got {args.size}")
    if args.threads < 1:
        ap.error(f"--threads must be >= 1, got {args.threads}")
    for folder in (args.a, args.b):
        if not (Path(folder) / "model.safetensors").is_file():  # a typo must not be taken for a hub id
            ap.error(f"{folder} is not a model folder (no model.safetensors)")

    import torch

    from prolab.inference import embed_image
    from prolab.model import PropertySegmenter
    from prolab.threads import apply_thread_policy

    threads_before = torch.get_num_threads()
    try:
        apply_thread_policy(args.threads)
        model_a, model_b = (PropertySegmenter.from_pretrained(Path(p)) for p in (args.a, args.b))
        image = (np.random.default_rng(0).random((args.size, args.size, 3)) * 255).astype(np.uint8)
        load_before = os.getloadavg()
        runs = {}
        for flush in (False, True) if args.flush_denormals else (False,):
            supported = torch.set_flush_denormal(flush)
            forward_a = lambda: embed_image(model_a, image, size=args.size)  # noqa: E731
            forward_b = lambda: embed_image(model_b, image, size=args.size)  # noqa: E731
            forward_a(), forward_b()  # warm-up: allocator, kernels
            key = "flush_denormals" if flush else "default"
            runs[key] = {**interleaved(forward_a, forward_b, args.rounds), "flush_supported": bool(supported)}
            r = runs[key]
            print(f"{key}: A {r['median_a_ms']:.1f} ms, B {r['median_b_ms']:.1f} ms, B / A {r['b_over_a']:.3f}, "
                  f"median pairwise ratio {r['median_pair_ratio']:.3f} ({args.rounds} rounds, {args.size} px, "
                  f"{torch.get_num_threads()} threads)", flush=True)
        described = machine()  # with the threads it ran on
    finally:  # a caller in the same process (the tests) keeps its pool and its float mode, also on errors
        torch.set_flush_denormal(False)
        torch.set_num_threads(threads_before)
    result = {"date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "a": args.a, "b": args.b,
              "weights": {"a": model_a.source_fingerprint, "b": model_b.source_fingerprint},
              "size": args.size, "rounds": args.rounds, "threads": described["torch_threads"],
              "runs": runs, "load_average": {"start": load_before, "end": os.getloadavg()},
              "machine": described,
              "command": shlex.join(["python", "-m", "bench.forward_ab", *(sys.argv[1:] if argv is None else argv)])}
    if args.json:
        write_json(args.json, result)
    return result


if __name__ == "__main__":
    main()
