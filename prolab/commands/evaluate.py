"""``evaluate``: mIoU / per-class IoU / pixel accuracy of a model on datasets, written as JSON;
with ``--compare``, two description sets scored from one forward pass and their per-class deltas."""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from prolab.assets import DEFAULT_MODEL_DIR
from prolab.commands import (DESCRIPTIONS_VALUE, add_inference_args, descriptions_arg, inference_kwargs,
                             model_and_options)
from prolab.errors import ProLabError


def register(sub) -> None:
    p = sub.add_parser("evaluate", help="mIoU, per-class IoU and pixel accuracy on datasets (JSON)",
                       description="Scores the model against each dataset's own classes (mapped into "
                                   "the model's classes, or projected from --descriptions).")
    p.add_argument("--model", default=None, help="model directory or Hugging Face id "
                                                 "(default: the shipped assets/models/default)")
    p.add_argument("--dataset", action="append", default=[], metavar="NAME",
                   help="shared dataset name (msrc_v2, camvid, coco128, indoor), repeatable")
    p.add_argument("--ade20k", metavar="PATH", help="evaluate an ADEChallengeData2016 folder")
    p.add_argument("--folder", metavar="PATH",
                   help="evaluate a generic images/ + masks/ + classes.txt folder (or a .zip of one)")
    p.add_argument("--split", default="val", help="split file to use (default val)")
    p.add_argument("--data-root", help="shared datasets folder (default $PROLAB_DATA, else "
                                       "../shared/datasets beside the repository)")
    p.add_argument("--descriptions", help="project the dataset's classes onto the model's properties instead "
                                          f"of using its trained classes: {DESCRIPTIONS_VALUE}")
    p.add_argument("--compare", metavar="B.json",
                   help="descriptions to compare with --descriptions (default: the model's own classes; "
                        "a shipped key or a JSON file): "
                        "both are scored from one forward pass per image and the per-class IoU deltas are "
                        "printed (whole-image mode only)")
    add_inference_args(p)
    p.add_argument("--teacher", action="store_true",
                   help="also report pixel agreement with the ADE-150 teacher labels")
    p.add_argument("--teacher-threshold", type=float, default=0.0,
                   help="skip teacher pixels less confident than this (default 0: all but 'other')")
    p.add_argument("--no-open-set-credit", action="store_true",
                   help="plain ProLab scores for --descriptions classes the model never trained on "
                        "(default: they get the open-set credit of prolab.novel_prior, with --compare too)")
    p.add_argument("--limit", type=int, help="evaluate only the first N images of each dataset")
    p.add_argument("--out", help="write the results JSON here")
    p.set_defaults(handler=cmd_evaluate)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from prolab.distributed import close_distributed, init_distributed
    from prolab.eval_report import json_ready

    dist = init_distributed("cpu")  # under torchrun: joins the other processes (gloo); else one process
    try:
        results = _evaluate(args, dist)
        if dist.main and args.out:  # every process holds the same results; one writes them
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(json_ready(results), indent=1, ensure_ascii=False) + "\n")
            print(f"Results written to {args.out}")
    finally:
        close_distributed(dist)
    return 0


def _evaluate(args: argparse.Namespace, dist) -> dict:
    """The results of ``args`` (printed by the main process); under torchrun each process evaluates its
    share of the images and all of them return the summed numbers."""
    from prolab.labelsets import MODEL_KEY
    from prolab.evaluate import evaluate, load_mapping
    from prolab.model import PropertySegmenter
    from prolab.novel_prior import PriorSettings

    args.model = args.model or str(DEFAULT_MODEL_DIR)  # as predict and export
    options = inference_kwargs(args)
    if args.limit is not None and args.limit < 1:  # a slice [:-1] would silently drop the last image
        raise ProLabError(f"--limit must be at least 1, got {args.limit}.")
    if not 0 <= args.teacher_threshold <= 1:
        raise ProLabError(f"--teacher-threshold must be between 0 and 1, got {args.teacher_threshold}.")
    if args.compare:
        _check_compare_flags(args)
        if dist.world > 1:
            raise ProLabError("--compare runs in one process; run it without torchrun.")
    # before the model loads, so that a wrong name fails at once; "model" is the default (its own classes)
    descriptions = descriptions_arg(args.descriptions) if args.descriptions not in (None, MODEL_KEY) else None
    other = descriptions_arg(args.compare) if args.compare not in (None, MODEL_KEY) else None
    sources = _sources(args)
    try:
        model = PropertySegmenter.from_pretrained(args.model, score_offsets=not args.no_score_offsets)
        model, options = model_and_options(args, model, args.model, options)
        if args.compare and tuple(options.get("scales", (1.0,))) != (1.0,):
            raise ProLabError("--compare scores cached single-scale outputs; drop --quality accurate.")
        mapping = load_mapping(args.model if Path(args.model).is_dir() else None)
        prior = None if args.no_open_set_credit else PriorSettings()
        if args.compare:
            return _compare(args, model, sources, mapping, options, descriptions, other, prior)
        results = {"model": str(args.model), "results": {}}
        for src in sources:
            res = evaluate(model, src, **options, mapping=mapping, descriptions=descriptions,
                           prior=prior,
                           teacher=args.teacher and src.has_teacher, teacher_threshold=args.teacher_threshold,
                           limit=args.limit, progress=True, dist=dist, guided=args.guided_upsampling)
            results["results"][f"{src.name}/{src.split}"] = res
            extras = "".join(f", {k}" for k, on in (("flip", options["flip"]), ("multi-scale", "scales" in res),
                                                    ("guided upsampling", res.get("guided_upsampling")),
                                                    ("onnx", res.get("backend") == "onnx")) if on)
            line = f"{src.name} {src.split} ({res['images']} images, {args.mode}{extras}"
            line += f", {dist.world} processes):" if dist.world > 1 else "):"
            if "miou" in res:
                line += f" mIoU {100 * res['miou']:.2f}  pixel acc {100 * res['pixel_accuracy']:.2f}"
            if "teacher_ade150" in res:
                line += f"  teacher agreement {100 * res['teacher_ade150']['pixel_agreement']:.2f}"
            if dist.main:
                print(line)
        return results
    finally:  # a --folder zip was extracted to a temporary folder
        for src in sources:
            if "extracted_to" in src.meta:
                shutil.rmtree(src.meta["extracted_to"], ignore_errors=True)


def _sources(args: argparse.Namespace) -> list:
    from prolab.data.readers import data_root, find_data_root, read_ade20k, read_folder, read_shared

    sources = []
    if args.dataset:  # like the app: --data-root, $PROLAB_DATA, else ../shared/datasets beside the checkout
        root = find_data_root(args.data_root) or data_root(args.data_root)
        sources += [read_shared(root, name, args.split) for name in args.dataset]
    if args.ade20k:
        sources.append(read_ade20k(args.ade20k, args.split))
    if args.folder:
        sources.append(read_folder(args.folder, args.split if (Path(args.folder) / f"{args.split}.txt").is_file()
                                   else None))
    if not sources:
        raise ProLabError("Nothing to evaluate: give --dataset, --ade20k or --folder.")
    return sources


def _check_compare_flags(args: argparse.Namespace) -> None:
    if args.mode != "whole":
        raise ProLabError("--compare scores cached whole-image outputs; drop --mode slide.")
    if args.teacher:
        raise ProLabError("--compare does not score teacher labels; drop --teacher.")


def _compare(args, model, sources, mapping, options, descriptions, other, prior) -> dict:
    """Score ``descriptions`` (None: the model's classes) and ``other`` on each source from one forward
    pass per image (:class:`prolab.eval_cache.EvalCache`), with the open-set credit of ``prior`` (None:
    plain scores); print the per-class delta table."""
    from tqdm import tqdm

    from prolab.eval_cache import EvalCache
    from prolab.eval_report import compare, format_comparison

    name_a = args.descriptions or "model classes"
    results = {"model": str(args.model), "a": name_a, "b": args.compare, "results": {}}
    for src in sources:
        with tqdm(total=len(src.samples[:args.limit] if args.limit else src.samples),
                  desc=f"eval {src.name}", dynamic_ncols=True) as bar:
            cache = EvalCache.build(model, src, size=options["size"], flip=options["flip"], mapping=mapping,
                                    limit=args.limit, progress=lambda *_: bar.update(1),
                                    prior=prior, guided=args.guided_upsampling)
        res_a = cache.rescore(descriptions=descriptions)
        res_b = cache.rescore(descriptions=other)
        comparison = compare(res_a, res_b)
        extras = "".join(f", {k}" for k, on in (("flip", args.flip), ("guided upsampling", cache.guided)) if on)
        print(f"{src.name} {src.split} ({res_a['images']} images, whole{extras}; "
              f"forward {cache.build_seconds:.1f} s, cache {cache.nbytes / 2 ** 20:.1f} MB, "
              f"re-evaluation {res_b['rescore_seconds']:.2f} s): "
              f"mIoU {100 * comparison.miou[0]:.2f} -> {100 * comparison.miou[1]:.2f} "
              f"({100 * comparison.miou_delta:+.2f})")
        print(f"A = {name_a}, B = {args.compare}")
        print(format_comparison(comparison))
        results["results"][f"{src.name}/{src.split}"] = {"a": res_a, "b": res_b,
                                                         "comparison": comparison.to_dict()}
    return results
