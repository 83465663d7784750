"""``predict``: images in -> index masks, coloured overlays and per-property heatmaps out."""
from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

from prolab.assets import DEFAULT_MODEL_DIR
from prolab.commands import (DESCRIPTIONS_VALUE, add_inference_args, descriptions_arg, inference_kwargs,
                             model_and_options)
from prolab.encoder import TextEncoder
from prolab.errors import ProLabError


def register(sub) -> None:
    p = sub.add_parser("predict", help="segment images: masks, overlays and property heatmaps")
    p.add_argument("inputs", nargs="+", help="image files, folders of images, or video files (.mp4, .mov, "
                                             ".webm, ...: a segmented MP4 and per-class shares over time)")
    p.add_argument("--model", default=None, help="model directory or Hugging Face id "
                                                 "(default: the shipped assets/models/default)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--labelspace", help="label space directory to score with instead of the model's own")
    p.add_argument("--descriptions", help=f"score these classes, projected onto the model's properties (no "
                                          f"retraining): {DESCRIPTIONS_VALUE}")
    add_inference_args(p)
    p.add_argument("--top-properties", type=int, default=5, help="heatmaps of the N most active properties")
    p.add_argument("--alpha", type=float, default=0.5, help="overlay opacity")
    p.add_argument("--unknown-threshold", type=float, help="class score under which a pixel is unknown")
    p.add_argument("--no-open-set-credit", action="store_true",
                   help="plain ProLab scores for classes the model never trained on (see prolab.novel_prior)")
    p.add_argument("--video-max-seconds", type=float, default=120.0, help="longest video accepted (seconds)")
    p.set_defaults(handler=cmd_predict)


def cmd_predict(args: argparse.Namespace) -> int:
    from prolab.distributed import close_distributed, init_distributed

    dist = init_distributed("cpu")  # under torchrun: each process writes its share of the inputs
    try:
        return _predict(args, dist)
    finally:
        close_distributed(dist)


def _predict(args: argparse.Namespace, dist) -> int:
    from prolab.labelspace import LabelSpace
    from prolab.model import PropertySegmenter
    from prolab.novel_prior import PriorSettings
    from prolab.predict import collect_images, predict_images
    from prolab.video import is_video

    options = inference_kwargs(args)
    if args.unknown_threshold is not None and not math.isfinite(args.unknown_threshold):
        raise ProLabError(f"--unknown-threshold must be a number, got {args.unknown_threshold}.")
    if not 0 <= args.alpha <= 1:  # also refuses NaN
        raise ProLabError(f"--alpha (overlay opacity) must be between 0 and 1, got {args.alpha}.")
    if args.top_properties < 0:
        raise ProLabError(f"--top-properties must be 0 or more, got {args.top_properties}.")
    model = PropertySegmenter.from_pretrained(args.model or DEFAULT_MODEL_DIR,
                                              score_offsets=not args.no_score_offsets)
    space = None
    if args.labelspace or args.descriptions:
        if model.config.supervision != "property":
            raise ProLabError("--labelspace/--descriptions need a property model.")
        if args.labelspace:
            space = LabelSpace.load(args.labelspace)
        else:
            base = model.label_space
            ds = descriptions_arg(args.descriptions, model)
            encoder = TextEncoder(base.encoder_id, template=base.template)
            # the label set over the model's properties, as the app and evaluate build it
            space = base.edited(ds, encoder)
    net, options = model_and_options(args, model, args.model or DEFAULT_MODEL_DIR, options)
    videos = [Path(p) for p in args.inputs if is_video(p) and Path(p).is_file()]
    others = [p for p in args.inputs if Path(p) not in videos]
    if videos:
        _predict_videos(args, net, space, options, videos, dist)
        if not others:
            return 0
    images = collect_images(others)

    def report(path, message: str) -> None:
        print(f"skipped {path}: {message}", file=sys.stderr, flush=True)

    summary = predict_images(net, images, args.out, label_space=space, **options,
                             top_properties=args.top_properties, alpha=args.alpha,
                             unknown_threshold=args.unknown_threshold, on_error=report,
                             prior=None if args.no_open_set_credit else PriorSettings(), dist=dist,
                             guided=args.guided_upsampling)
    done, failed = len(summary["images"]), len(summary["errors"])
    if not dist.main:  # the summary covers every process's images: the main process reports it
        return 0
    print(f"Wrote predictions for {done} image(s) to {args.out}" +
          (f" ({dist.world} processes)" if dist.world > 1 else ""))
    if failed:
        raise ProLabError(f"{failed} of {len(images)} image(s) could not be read (listed above and under "
                          f"\"errors\" in {Path(args.out) / 'predictions.json'}).")
    return 0


def _predict_videos(args: argparse.Namespace, net, space, options: dict, videos: list, dist) -> None:
    """Each video -> ``<stem>_segmented.mp4``, ``<stem>_shares.csv`` (class share per frame) and
    ``<stem>_video.json``, with a progress bar per video (under torchrun each process takes its share of
    the videos; the main process shows its bars)."""
    from tqdm import tqdm

    from prolab.colorize import make_palette
    from prolab.distributed import shard
    from prolab.frames import FrameSegmenter
    from prolab.novel_prior import PriorSettings
    from prolab.video import VideoLimits, probe, check_limits, segment_video, write_shares

    if not math.isfinite(args.video_max_seconds) or args.video_max_seconds <= 0:
        raise ProLabError(f"--video-max-seconds must be positive, got {args.video_max_seconds}.")
    limits = VideoLimits(max_seconds=args.video_max_seconds)
    for video in videos:  # every video checked before the first one is processed
        check_limits(probe(video), limits, video.name)
    segmenter = FrameSegmenter(net, space, options, prior=None if args.no_open_set_credit else PriorSettings(),
                               unknown_threshold=args.unknown_threshold, guided=args.guided_upsampling)
    palette = make_palette(len(segmenter.class_names))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for video in shard(videos, dist, key=lambda v: v.stem):
        with tqdm(total=probe(video).frames, desc=video.name, unit="frame", dynamic_ncols=True,
                  disable=not dist.main) as bar:
            def progress(done: int, total: int) -> None:
                bar.total = total
                bar.update(done - bar.n)

            result = segment_video(segmenter, video, out / f"{video.stem}_segmented.mp4", palette, args.alpha,
                                   limits, progress)
        write_shares(result, out / f"{video.stem}_shares.csv")
        summary = {"classes": segmenter.class_names, "backend": getattr(net, "backend", "torch"),
                   "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in options.items()},
                   **result.summary()}
        (out / f"{video.stem}_video.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False) + "\n")
        print(f"Wrote {out / result.output.name}: {result.frames} frames in {result.seconds:.1f} s "
              f"({result.fps:.1f} frames/s)")
