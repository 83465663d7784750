"""``calibrate``: fit a model's per-class score offsets on labelled training images
(:mod:`prolab.calibration`) and write them into the model folder."""
from __future__ import annotations

import argparse
import shlex
import time
from pathlib import Path

from prolab.commands import DESCRIPTIONS_VALUE
from prolab.errors import ProLabError, name_list


def register(sub) -> None:
    p = sub.add_parser("calibrate", help="fit per-class score offsets on training images (score_offsets.json)",
                       description="Adds to each trained class's score the constant that maximises the mean "
                                   "mIoU of the datasets' train splits (coordinate ascent on a grid); every "
                                   "scorer of the model (predict, evaluate, the app) then uses them. Fit on "
                                   "train splits only: val is what the offsets are judged on.")
    p.add_argument("--model", required=True, help="model directory (the offsets are written into it)")
    p.add_argument("--dataset", action="append", default=[], metavar="NAME", required=True,
                   help="shared dataset name (msrc_v2, camvid, coco128), repeatable")
    p.add_argument("--split", default="train", help="split to fit on (default train)")
    p.add_argument("--data-root", help="shared datasets folder (default $PROLAB_DATA)")
    p.add_argument("--descriptions", help="score the datasets' classes from these sentences, as `evaluate "
                                          "--descriptions` does: classes the model never trained on take part "
                                          "in the fit (with the open-set credit) and get no offset of their "
                                          f"own: {DESCRIPTIONS_VALUE}")
    p.add_argument("--no-open-set-credit", action="store_true",
                   help="plain ProLab scores for --descriptions classes the model never trained on")
    p.add_argument("--fraction", type=float, default=0.02, help="share of each image's labelled pixels sampled")
    p.add_argument("--seed", type=int, default=0, help="seed of the pixel sample")
    p.add_argument("--sweeps", type=int, default=3, help="coordinate-ascent sweeps over the classes")
    p.add_argument("--limit", type=int, help="use only the first N images of each dataset")
    p.add_argument("--threads", type=int, help="torch CPU threads")
    p.add_argument("--dry-run", action="store_true", help="print the offsets, write nothing")
    p.set_defaults(handler=cmd_calibrate)


def cmd_calibrate(args: argparse.Namespace) -> int:
    import torch

    from prolab.calibration import OFFSETS_FILE, fit_offsets, own_pixel_means, save_offsets
    from prolab.commands import check_output_file, descriptions_arg
    from prolab.data.readers import data_root, read_shared
    from prolab.evaluate import collect_pixels, load_mapping
    from prolab.labelsets import MODEL_KEY
    from prolab.model import PropertySegmenter
    from prolab.novel_prior import PriorSettings

    if args.split in ("val", "test"):
        raise ProLabError(f"Fit the offsets on a training split, not {args.split!r}: val is what judges them.")
    if args.limit is not None and args.limit < 1:
        raise ProLabError(f"--limit must be at least 1, got {args.limit}.")
    if args.sweeps < 1:
        raise ProLabError(f"--sweeps must be at least 1, got {args.sweeps}.")
    if args.threads:
        torch.set_num_threads(args.threads)
    # before the model loads, so that a wrong name fails at once
    descriptions = descriptions_arg(args.descriptions) if args.descriptions not in (None, MODEL_KEY) else None
    prior = None if args.no_open_set_credit else PriorSettings()
    model_dir = Path(args.model)
    if not model_dir.is_dir():
        raise ProLabError(f"--model must be a local model folder (the offsets are written into it): {model_dir}")
    if not args.dry_run:  # a folder that cannot take the file must fail now, not after minutes of fitting
        check_output_file(model_dir / OFFSETS_FILE, "--model")
    root = data_root(args.data_root)
    sources = [read_shared(root, name, args.split) for name in dict.fromkeys(args.dataset)]
    if descriptions is not None:  # every dataset's classes need sentences: say so before any forward pass
        for source in sources:
            missing = descriptions.missing(source.classes)
            if missing:
                raise ProLabError(f"--descriptions has no entry for {source.name}'s {name_list(missing)}; "
                                  "calibrate on datasets it covers.")
    model = PropertySegmenter.from_pretrained(model_dir, score_offsets=False)  # the scores without them
    if descriptions is not None and model.config.supervision == "category":
        raise ProLabError("A category model cannot score classes from descriptions; drop --descriptions.")
    weights = model.source_fingerprint  # the file as read: what from_pretrained matches offsets against
    mapping = load_mapping(model_dir)
    t0 = time.perf_counter()
    samples = []
    for source in sources:
        samples.append(collect_pixels(model, source, mapping, args.fraction, args.seed, args.limit,
                                      descriptions=descriptions, prior=prior))
        print(f"{source.name}/{args.split}: {len(samples[-1].labels):,} pixels sampled", flush=True)
        free = [c for c, t in zip(source.classes, samples[-1].trained_names) if t is None]
        if free:
            print(f"  in the fit without an offset (no trained class means them): {', '.join(free)}", flush=True)
    offsets, history = fit_offsets(samples, sweeps=args.sweeps)
    for h in history:
        print(f"sweep {h['sweep']}: mean mIoU {100 * h['objective']:.2f} ("
              + ", ".join(f"{k} {100 * v:.2f}" for k, v in h["miou"].items()) + ")")
    print("offsets:", ", ".join(f"{k} {v:+.2f}" for k, v in sorted(offsets.items())) or "none")
    if args.dry_run:
        return 0
    info = {"fitted_on": [f"{s.name}/{args.split}" for s in samples], "pixel_fraction": args.fraction,
            "seed": args.seed, "pixels": {s.name: int(len(s.labels)) for s in samples},
            "history": history, "seconds": round(time.perf_counter() - t0, 1),
            "mean_own_score": {s.name: own_pixel_means(s) for s in samples},
            "command": "python -m prolab calibrate --model <this folder> "
                       + " ".join(f"--dataset {s.name}" for s in samples)
                       + (f" --descriptions {_spec(args.descriptions)}" if args.descriptions else "")
                       + (" --no-open-set-credit" if args.descriptions and args.no_open_set_credit else "")
                       + (f" --split {args.split}" if args.split != "train" else "")
                       + (f" --fraction {args.fraction}" if args.fraction != 0.02 else "")
                       + (f" --seed {args.seed}" if args.seed else "")
                       + (f" --sweeps {args.sweeps}" if args.sweeps != 3 else "")
                       + (f" --limit {args.limit}" if args.limit else "")}
    path = save_offsets(model_dir, offsets, weights, info)
    print(f"Score offsets written to {path}")
    return 0


def _spec(value: str) -> str:
    """A ``--descriptions`` value as a command can repeat it: a file as its absolute path, quoted."""
    path = Path(value)
    return shlex.quote(str(path.resolve())) if path.is_file() else shlex.quote(value)
