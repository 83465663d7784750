"""The speed/quality dial measured: mIoU and ms per image of each step on MSRC-v2 and CamVid val.

    python -m bench.quality_dial [--model DIR] [--dataset msrc_v2 --dataset camvid] [--limit N]
                                 [--explore] [--threads 2] [--json docs/results/quality_dial.json]
                                 [--figure docs/figures/quality_dial.png]

Each step of :data:`prolab.quality.QUALITIES` (and with ``--explore`` the candidate settings the
*accurate* step was chosen from) evaluates the model's own classes on each dataset's val split through
:func:`prolab.evaluate.evaluate`, the same path as ``prolab evaluate --quality``. ms per image is the wall
time of that evaluation divided by the number of images: image decoding, the forward pass(es), scoring
and the confusion matrix, all steps in one run so their ratios are comparable. The ONNX graph of *fast*
is exported (or loaded from the cache) before timing. Run from the repository root.
"""
from __future__ import annotations

import argparse
import os
import time
from dataclasses import replace
from pathlib import Path

import torch

from bench.common import add_report_option, machine, print_reports, write_json
from prolab.assets import DEFAULT_MODEL_DIR
from prolab.data.readers import data_root, read_shared
from prolab.evaluate import evaluate, load_mapping
from prolab.model import PropertySegmenter
from prolab.onnx_backend import with_backend
from prolab.quality import QUALITIES, Quality

#: Candidates for *accurate* (``--explore``; upsampled bilinearly unless they say otherwise): what each adds over
#: *default*, and the steps as they were before (bilinear).
CANDIDATES = (
    Quality("flip", flip=True, description="default + mirrored pass"),
    Quality("scales 0.75-1.25 + flip", scales=(0.75, 1.0, 1.25), flip=True,
            description="scales 0.75, 1, 1.25, each with its mirror"),
    Quality("size 1.25x", size_factor=1.25, description="one pass at 1.25x the input size (512 px)"),
    Quality("scales 1-1.5 + flip", scales=(1.0, 1.25, 1.5), flip=True,
            description="scales 1, 1.25, 1.5, each with its mirror (the first choice for accurate)"),
    Quality("scales 1-1.75 + flip", scales=(1.0, 1.25, 1.5, 1.75), flip=True,
            description="scales 1, 1.25, 1.5, 1.75, each with its mirror"),
    replace(QUALITIES["default"], name="default, bilinear", guided=False,
            description="default's input, the scores upsampled bilinearly (default until 2026-12-08)"),
    replace(QUALITIES["accurate"], name="accurate, bilinear", guided=False,
            description="accurate's scales and mirror, the scores upsampled bilinearly (accurate until 2026-12-07)"),
)


def measure(model, model_dir, q: Quality, source, mapping, limit) -> dict:
    net = with_backend(model, q.backend, model_dir)
    kwargs = q.inference_kwargs(model.config.input_size)
    t = time.perf_counter()
    res = evaluate(net, source, **kwargs, mapping=mapping, limit=limit, guided=q.guided)
    seconds = time.perf_counter() - t
    return {"quality": q.name, "backend": q.backend, **{k: (list(v) if isinstance(v, tuple) else v)
                                                         for k, v in kwargs.items()}, "guided": q.guided,
            "images": res["images"], "miou": res["miou"], "pixel_accuracy": res["pixel_accuracy"],
            "ms_per_image": 1000 * seconds / res["images"], "per_class_iou": res["per_class_iou"]}


THIN = ("pole", "sign symbol", "pedestrian", "bicyclist", "fence")


def markdown(results: dict) -> str:
    """The docs' table: mIoU, the change from *default*, ms per image and its ratio, per dataset and step;
    for CamVid also the thin classes' IoU."""
    lines = []
    for ds, rows in results.items():
        base = next((r for r in rows if r["quality"] == "default"), rows[0])
        thin = [c for c in THIN if any(c in r["per_class_iou"] for r in rows)]
        lines += [f"**{ds}** ({base['images']} images)", "",
                  "| step | backend | input | scales | flip | guided | mIoU | vs default | ms / image | x default |"
                  + "".join(f" {c} |" for c in thin),
                  "|---|---|---|---|---|---|---|---|---|---|" + "---|" * len(thin)]
        for r in rows:
            iou = [r["per_class_iou"].get(c) for c in thin]
            lines.append(f"| {r['quality']} | {r['backend']} | {r['size']} | {', '.join(f'{x:g}' for x in r['scales'])} | "
                         f"{'yes' if r['flip'] else 'no'} | {'yes' if r.get('guided') else 'no'} | {100 * r['miou']:.2f} | {100 * (r['miou'] - base['miou']):+.2f} | "
                         f"{r['ms_per_image']:.0f} | {r['ms_per_image'] / base['ms_per_image']:.1f} |"
                         + "".join(" - |" if v is None else f" {100 * v:.1f} |" for v in iou))
        lines.append("")
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for ds, rows in results.items():
        xs = [r["ms_per_image"] for r in rows]
        ys = [100 * r["miou"] for r in rows]
        ax.plot(xs, ys, "o", label=ds)
        for r, x, y in zip(rows, xs, ys):
            ax.annotate(r["quality"], (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlabel("ms per image (2 shared CPU cores, log scale)")
    ax.set_ylabel("mIoU (%)")
    ax.set_title("Speed/quality dial: default model, val splits")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR)
    ap.add_argument("--dataset", action="append", help="shared datasets (default msrc_v2 and camvid)")
    ap.add_argument("--data-root")
    ap.add_argument("--limit", type=int, help="first N images of each val split (a quick check)")
    ap.add_argument("--explore", action="store_true", help="also the candidate settings for accurate")
    ap.add_argument("--only", action="append", help="only these steps/candidates (by name)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=Path("docs/results/quality_dial.json"))
    ap.add_argument("--figure", type=Path, default=Path("docs/figures/quality_dial.png"), help="'' for none")
    add_report_option(ap)
    args = ap.parse_args(argv)
    if print_reports(args.report, markdown):
        return {}
    torch.set_num_threads(args.threads)
    model = PropertySegmenter.from_pretrained(args.model)
    mapping = load_mapping(args.model)
    root = data_root(args.data_root)
    steps = list(QUALITIES.values()) + (list(CANDIDATES) if args.explore else [])
    if args.only:
        steps = [q for q in steps if q.name in args.only]
    if any(q.backend == "onnx" for q in steps):
        with_backend(model, "onnx", args.model)  # export / load once, outside the timings
    results: dict[str, list] = {}
    for name in args.dataset or ["msrc_v2", "camvid"]:
        source = read_shared(root, name, "val")
        rows = results.setdefault(f"{name}/val", [])
        for q in steps:
            row = measure(model, args.model, q, source, mapping, args.limit)
            rows.append(row)
            print(f"{name:8s} {q.name:24s} mIoU {100 * row['miou']:6.2f}  {row['ms_per_image']:7.1f} ms/image",
                  flush=True)
    out = {"model": str(args.model), "threads": args.threads, "limit": args.limit,
           "load_average": list(os.getloadavg()), "machine": machine(), "results": results,
           "note": "wall time on a 2-core machine shared with other jobs; compare rows of one run"}
    print(markdown(results))
    if args.json:
        write_json(args.json, out)
    if args.figure and str(args.figure) not in ("", "."):
        plot(results, args.figure)
    return out


if __name__ == "__main__":
    main()
