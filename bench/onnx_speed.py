"""Eager PyTorch vs ONNX Runtime: the network's forward pass at 320², 512² and 1024², in one run.

    python -m bench.onnx_speed [--model DIR] [--sizes 320 512 1024] [--runs 10] [--threads 2]
                               [--json docs/results/onnx_speed.json]

Both backends run the same normalised (1, 3, S, S) input with the same thread count (torch's
``set_num_threads`` and onnxruntime's intra-op threads), interleaved run by run so that a change in the
machine's load hits both alike; medians of ``--runs`` after two warm-up runs each. The ONNX graph is the
model folder's ``model.onnx`` (``prolab export``) or the cached export. The speed-up is
eager / ONNX of the medians; the outputs' max abs difference is recorded too.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import torch

from bench.common import machine, write_json
from prolab.assets import DEFAULT_MODEL_DIR
from prolab.model import PropertySegmenter
from prolab.onnx_backend import with_backend

GOAL_SPEEDUP_512 = 1.5


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR)
    ap.add_argument("--sizes", type=int, nargs="+", default=[320, 512, 1024])
    ap.add_argument("--runs", type=int, default=10)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=Path("docs/results/onnx_speed.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = PropertySegmenter.from_pretrained(args.model)
    net = with_backend(model, "onnx", args.model)
    rows = []
    for size in args.sizes:
        x = torch.randn(1, 3, size, size)
        times = {"torch": [], "onnx": []}
        with torch.no_grad():
            for i in range(args.runs + 2):
                for name, m in (("torch", model), ("onnx", net)):
                    t = time.perf_counter()
                    out = m(x, return_features=True)["out"]
                    if i >= 2:
                        times[name].append(1000 * (time.perf_counter() - t))
            diff = float((model(x)["out"] - net(x)["out"]).abs().max())
        eager, onnx = statistics.median(times["torch"]), statistics.median(times["onnx"])
        rows.append({"size": size, "eager_ms": round(eager, 2), "onnx_ms": round(onnx, 2),
                     "speedup": round(eager / onnx, 3), "max_abs_diff": diff,
                     "eager_runs_ms": [round(v, 2) for v in times["torch"]],
                     "onnx_runs_ms": [round(v, 2) for v in times["onnx"]]})
        print(f"{size:5d}²  eager {eager:8.1f} ms  onnx {onnx:8.1f} ms  speed-up {eager / onnx:.2f}x  "
              f"(max abs diff {diff:.1e})", flush=True)
    out = {"model": str(args.model), "threads": args.threads, "runs": args.runs, "rows": rows,
           "goal_speedup_512": GOAL_SPEEDUP_512, "load_average": list(os.getloadavg()),
           "machine": machine(),
           "onnxruntime": __import__("onnxruntime").__version__,
           "note": "shared 2-core machine; both backends interleaved in one run"}
    if args.json:
        write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
