"""Any label set through the words-to-properties bridge, on val: trained classes vs descriptions vs other
label sets scored by name.

    python -m bench.label_transfer [--model assets/models/default] [--data-root DIR] [--limit N]
                                   [--snapshots DIR] [--json docs/results/label_transfer.json]
                                   [--chart docs/results/label_transfer.png]

One forward pass per image of MSRC-v2 val and CamVid val (:class:`prolab.eval_cache.EvalCache`, with the
ImageNet maps of the open-set credit), then every label set is scored from the cached outputs by
:class:`prolab.class_scorer.ClassScorer`, the scorer of ``predict``, ``evaluate`` and the app:

- ``trained``: the dataset's classes as the model's training classes (its ``dataset_mapping.json``);
- ``own``: the same classes given only by the project's descriptions (``assets/descriptions/<set>.json``);
- ``own, opaque ids``: ``own`` with every class renamed ``class_00``, ``class_01``, ...: must equal ``own``
  (the bridge reads sentences, never names);
- ``own, property scores only``: ``own`` without the alignment with the trained classes (plain ProLab
  scores and the credit): what the bridge adds;
- other label sets by name (``bench/tables/label_transfer.json``): Pascal-Context-59 and ADE20K-150 on
  MSRC-v2, Cityscapes-19 on CamVid, each beside the trained classes merged the same way.

Prints per-class IoU tables and writes the JSON and a bar chart.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from bench.common import ROOT, write_json
from prolab.assets import DEFAULT_MODEL_DIR, DESCRIPTIONS_DIR

TABLES = ROOT / "bench" / "tables" / "label_transfer.json"
DATASETS = {"msrc_v2": "msrc_23", "camvid": "camvid_11"}  # dataset -> its own label set (descriptions)


def opaque(descriptions):
    """``descriptions`` with every class renamed ``class_NN`` (same sentences, same order)."""
    from prolab.descriptions import DescriptionSet

    return DescriptionSet({f"class_{i:02d}": list(descriptions[c]) for i, c in enumerate(descriptions)})


def summary(metrics: dict) -> dict:
    """mIoU (all classes present in ground truth or predictions, the project's metric), mIoU over the
    classes with ground-truth pixels, pixel accuracy and per-class IoU, in percent."""
    pct = {c: (None if v is None else round(100 * v, 2)) for c, v in metrics["per_class_iou"].items()}
    with_gt = [v for c, v in metrics["per_class_iou"].items() if metrics["per_class_pixels"][c] and v is not None]
    return {"miou": round(100 * metrics["miou"], 2),
            "miou_gt_classes": round(100 * sum(with_gt) / len(with_gt), 2) if with_gt else None,
            "pixel_accuracy": round(100 * metrics["pixel_accuracy"], 2), "per_class_iou": pct}


def run_dataset(model, cache, own_key: str, encoder, tables: dict) -> dict:
    """Every row of the bench for one dataset's cache."""
    from prolab.class_scorer import ClassScorer
    from prolab.descriptions import load_descriptions
    from prolab.eval_cache import Remap
    from prolab.evaluate import restrict_space

    own = load_descriptions(DESCRIPTIONS_DIR / f"{own_key}.json").subset(cache.classes)
    rows = {"trained": summary(cache.rescore()),
            "own": summary(cache.rescore(descriptions=own, encoder=encoder))}
    renamed = opaque(own)
    ids = list(renamed)
    scorer = ClassScorer(model, restrict_space(model.label_space, ids, descriptions=renamed, encoder=encoder),
                         prior=cache.prior, encoder=encoder)
    same = np.arange(len(ids))  # class_NN is the dataset's class NN
    rows["own, opaque ids"] = summary(cache.score(scorer, Remap(cache.classes, same, same)))
    plain = ClassScorer(model, restrict_space(model.label_space, cache.classes, descriptions=own, encoder=encoder),
                        prior=cache.prior, alignment=None, encoder=encoder)
    rows["own, property scores only"] = summary(cache.score(plain))
    from prolab import labelsets

    for table in tables.values():
        if table["dataset"] != cache.name:
            continue
        label_set = labelsets.load(table["label_set"])
        space = model.label_space.edited(label_set.descriptions, encoder)
        remap = Remap.by_name(space.class_names, cache.classes, table["to_gt"], table.get("merge"))
        trained_remap = Remap(remap.classes, remap.truth, remap.truth)  # the dataset's classes, merged
        rows[f"{table['label_set']} by name"] = summary(cache.score(ClassScorer(model, space, prior=cache.prior,
                                                                                encoder=encoder), remap))
        rows[f"trained, merged as {table['label_set']}"] = summary(cache.score(cache.scorer(), trained_remap))
    return rows


def print_rows(name: str, rows: dict) -> None:
    print(f"\n== {name}")
    for row, r in rows.items():
        print(f"  {row:34s} mIoU {r['miou']:6.2f}  (classes with pixels {r['miou_gt_classes']:6.2f})  "
              f"pixel acc {r['pixel_accuracy']:6.2f}")
    classes = list(next(iter(rows.values()))["per_class_iou"])
    own = [k for k in rows if not k.startswith("trained, merged") and "by name" not in k]
    print("  " + "class".ljust(14) + "".join(k[:18].rjust(20) for k in own))
    for c in classes:
        print("  " + c[:14].ljust(14) + "".join(
            ("-" if rows[k]["per_class_iou"].get(c) is None else f"{rows[k]['per_class_iou'][c]:.1f}").rjust(20)
            for k in own))


def markdown(result: dict) -> str:
    """The bench's tables as Markdown: per dataset, each row's mIoU, then per-class IoU."""
    out = [f"# Label transfer (`python -m bench.label_transfer`), model `{result['model']}`, val", ""]
    for name, rows in result["datasets"].items():
        out += [f"## {name} val", "", "| scored as | mIoU | mIoU (classes with pixels) | pixel acc. |", "|---|---|---|---|"]
        out += [f"| {k} | {r['miou']:.2f} | {r['miou_gt_classes']:.2f} | {r['pixel_accuracy']:.2f} |"
                for k, r in rows.items()]
        for group in (["trained", "own", "own, opaque ids", "own, property scores only"],
                      [k for k in rows if k not in ("trained", "own", "own, opaque ids", "own, property scores only")]):
            group = [k for k in group if k in rows]
            if not group:
                continue
            classes = list(rows[group[0]]["per_class_iou"])
            out += ["", "| class | " + " | ".join(group) + " |", "|---" * (len(group) + 1) + "|"]
            for c in classes:
                cells = [rows[k]["per_class_iou"].get(c) for k in group]
                out.append(f"| {c} | " + " | ".join("-" if v is None else f"{v:.1f}" for v in cells) + " |")
        out.append("")
    return "\n".join(out) + "\n"


def chart(result: dict, path: Path) -> None:
    """Grouped bars: mIoU of each row, per dataset."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(result["datasets"]), figsize=(6.5 * len(result["datasets"]), 4.2))
    for ax, (name, rows) in zip(np.atleast_1d(axes), result["datasets"].items()):
        labels = list(rows)
        values = [rows[k]["miou"] for k in labels]
        colours = ["#4c72b0" if k == "trained" or k.startswith("trained,") else
                   "#c44e52" if "property scores only" in k else "#55a868" for k in labels]
        ax.barh(range(len(labels)), values, color=colours)
        ax.set_yticks(range(len(labels)), labels, fontsize=8)
        ax.invert_yaxis()
        for i, v in enumerate(values):
            ax.text(v + 0.5, i, f"{v:.1f}", va="center", fontsize=8)
        ax.set_xlim(0, 100)
        ax.set_xlabel("mIoU (val)")
        ax.set_title(f"{name} val, {result['model']}")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR)
    ap.add_argument("--data-root", help="shared datasets folder (default $PROLAB_DATA or ../shared/datasets)")
    ap.add_argument("--datasets", nargs="+", default=list(DATASETS), choices=list(DATASETS))
    ap.add_argument("--limit", type=int, help="first N val images of each dataset (a quick look)")
    ap.add_argument("--snapshots", type=Path, help="folder of the caches' snapshots (bench.cached_scoring): read "
                                                   "when there, else written")
    ap.add_argument("--json", type=Path, default=ROOT / "docs" / "results" / "label_transfer.json")
    ap.add_argument("--chart", type=Path, default=ROOT / "docs" / "results" / "label_transfer.png")
    ap.add_argument("--from-json", action="store_true", help="only redraw the chart and tables from --json")
    args = ap.parse_args(argv)
    if args.from_json:
        result = json.loads(args.json.read_text(encoding="utf-8"))
        args.json.with_suffix(".md").write_text(markdown(result), encoding="utf-8")
        chart(result, args.chart)
        return result

    from bench.cached_scoring import cached_outputs
    from prolab.encoder import TextEncoder
    from prolab.model import PropertySegmenter

    model = PropertySegmenter.from_pretrained(args.model)
    space = model.label_space
    encoder = TextEncoder(space.encoder_id, template=space.template)
    tables = {k: v for k, v in json.loads(TABLES.read_text(encoding="utf-8")).items() if not k.startswith("_")}
    result = {"model": Path(args.model).name, "limit": args.limit, "datasets": {}, "seconds": {}}
    for name in args.datasets:
        t0 = time.perf_counter()
        cache = cached_outputs(model, Path(args.model), name, args)  # one forward pass per image, or a snapshot's
        rows = run_dataset(model, cache, DATASETS[name], encoder, tables)
        result["datasets"][name] = rows
        result["seconds"][name] = round(time.perf_counter() - t0, 1)
        print_rows(f"{name} val ({len(cache)} images)", rows)
    write_json(args.json, result)
    args.json.with_suffix(".md").write_text(markdown(result), encoding="utf-8")
    chart(result, args.chart)
    print(f"\nwrote {args.json} (and .md) and {args.chart}")
    return result


if __name__ == "__main__":
    main()
