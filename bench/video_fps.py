"""Video frames per second: a 30-second 480p clip through ``prolab predict clip.mp4``'s path.

    python -m bench.video_fps [--video CLIP] [--seconds 30] [--quality fast] [--quality default]
                              [--model DIR] [--json docs/results/video_fps.json]

Without ``--video`` a 640 x 480, 30 fps clip is made from an example photo (a slow pan, re-encoded as
H.264, so decoding costs what a real clip costs). Each ``--quality`` step segments every frame with the
model's own classes and writes the overlay video (:func:`prolab.video.segment_video`: decode, forward,
scoring, drawing, H.264 encode) with a progress bar; frames per second = frames / wall seconds.
"""
from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import torch
from tqdm import tqdm

from bench.common import machine, pan_clip, write_json
from prolab.assets import DEFAULT_MODEL_DIR
from prolab.colorize import make_palette
from prolab.frames import FrameSegmenter
from prolab.model import PropertySegmenter
from prolab.onnx_backend import with_backend
from prolab.quality import get_quality
from prolab.video import probe, segment_video

GOAL_FPS_FAST = 5.0


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--video", type=Path)
    ap.add_argument("--seconds", type=float, default=30.0)
    ap.add_argument("--quality", action="append", choices=("fast", "default", "accurate"))
    ap.add_argument("--model", type=Path, default=DEFAULT_MODEL_DIR)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", type=Path, default=Path("docs/results/video_fps.json"))
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = PropertySegmenter.from_pretrained(args.model)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        video = args.video or pan_clip(Path(tmp) / "pan_480p.mp4", args.seconds)
        info = probe(video)
        for name in args.quality or ["fast"]:
            q = get_quality(name)
            seg = FrameSegmenter(with_backend(model, q.backend, args.model), None,
                                 q.inference_kwargs(model.config.input_size), guided=q.guided)
            with tqdm(total=info.frames, desc=f"{name}", unit="frame") as bar:
                result = segment_video(seg, video, Path(tmp) / f"out_{name}.mp4", make_palette(len(seg.class_names)),
                                       progress=lambda done, total: bar.update(done - bar.n))
            rows.append({"quality": name, "frames": result.frames, "seconds": round(result.seconds, 2),
                         "fps": round(result.fps, 2)})
            print(f"{name}: {result.frames} frames of {info.width} x {info.height} in {result.seconds:.1f} s = "
                  f"{result.fps:.2f} frames/s", flush=True)
    out = {"video": str(args.video) if args.video else f"generated pan, {args.seconds:g} s",
           "width": info.width, "height": info.height, "source_fps": info.fps, "threads": args.threads,
           "rows": rows, "goal_fps_fast": GOAL_FPS_FAST, "load_average": list(os.getloadavg()),
           "machine": machine(), "note": "shared 2-core machine"}
    if args.json:
        write_json(args.json, out)
    return out


if __name__ == "__main__":
    main()
