"""``evaluate``: mIoU / per-class IoU / pixel accuracy of a model on datasets, written as JSON."""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from prolab.commands import add_inference_args, inference_kwargs


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="mIoU, per-class IoU and pixel accuracy on datasets (JSON)",
                       description="Scores the model against each dataset's own classes (mapped into "
                                   "the model's classes, or projected from --descriptions).")
    p.add_argument("--model", required=True, help="model directory or Hugging Face id")
    p.add_argument("--dataset", action="append", default=[], metavar="NAME",
                   help="shared dataset name (msrc_v2, camvid, coco128, indoor), repeatable")
    p.add_argument("--ade20k", metavar="PATH", help="evaluate an ADEChallengeData2016 folder")
    p.add_argument("--folder", metavar="PATH", help="evaluate a generic images/ + masks/ + classes.txt folder")
    p.add_argument("--split", default="val", help="split file to use (default val)")
    p.add_argument("--data-root", help="shared datasets folder (default $PROLAB_DATA)")
    p.add_argument("--descriptions", help="descriptions JSON: project the dataset's classes onto the "
                                          "model's properties instead of using its trained classes")
    add_inference_args(p)
    p.add_argument("--teacher", action="store_true",
                   help="also report pixel agreement with the ADE-150 teacher labels")
    p.add_argument("--teacher-threshold", type=float, default=0.0,
                   help="skip teacher pixels less confident than this (default 0: all but 'other')")
    p.add_argument("--no-open-set-credit", action="store_true",
                   help="plain ProLab scores for --descriptions classes the model never trained on "
                        "(default: they get the open-set credit of prolab.novel_prior)")
    p.add_argument("--limit", type=int, help="evaluate only the first N images of each dataset")
    p.add_argument("--out", help="write the results JSON here")
    p.set_defaults(handler=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from prolab.data.readers import read_ade20k, read_folder, read_shared, data_root
    from prolab.descriptions import load_descriptions
    from prolab.errors import ProLabError
    from prolab.evaluate import evaluate, load_mapping
    from prolab.model import PropertySegmenter
    from prolab.novel_prior import PriorSettings

    options = inference_kwargs(args)
    sources = []
    if args.dataset:
        root = data_root(args.data_root)
        sources += [read_shared(root, name, args.split) for name in args.dataset]
    if args.ade20k:
        sources.append(read_ade20k(args.ade20k, args.split))
    if args.folder:
        sources.append(read_folder(args.folder, args.split if (Path(args.folder) / f"{args.split}.txt").is_file()
                                   else None))
    if not sources:
        raise ProLabError("Nothing to evaluate: give --dataset, --ade20k or --folder.")
    model = PropertySegmenter.from_pretrained(args.model)
    mapping = load_mapping(args.model if Path(args.model).is_dir() else None)
    descriptions = load_descriptions(args.descriptions) if args.descriptions else None
    results = {"model": str(args.model), "results": {}}
    for src in sources:
        res = evaluate(model, src, **options, mapping=mapping, descriptions=descriptions,
                       prior=None if args.no_open_set_credit else PriorSettings(),
                       teacher=args.teacher and src.has_teacher, teacher_threshold=args.teacher_threshold,
                       limit=args.limit, progress=True)
        results["results"][f"{src.name}/{src.split}"] = res
        line = f"{src.name} {src.split} ({res['images']} images, {args.mode}{', flip' if args.flip else ''}):"
        if "miou" in res:
            line += f" mIoU {100 * res['miou']:.2f}  pixel acc {100 * res['pixel_accuracy']:.2f}"
        if "teacher_ade150" in res:
            line += f"  teacher agreement {100 * res['teacher_ade150']['pixel_agreement']:.2f}"
        print(line)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(_clean(results), indent=1, ensure_ascii=False) + "\n")
        print(f"Results written to {args.out}")
    return 0


def _clean(obj):
    """NaN is not valid JSON: write null instead."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [_clean(v) for v in obj]
    return obj
