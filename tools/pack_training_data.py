"""Pack the train split of shared datasets, at training resolution, into a small copy of the shared layout.

For moving training data to a machine that only takes a few tens of MB (a lent GPU machine): every
image of the split is resized so its short side is at most ``--short-side`` (never upscaled; an image
already small enough keeps its original file) and re-encoded as WebP; ground truth, teacher labels and
teacher confidences are resized with nearest sampling to the same size, and the confidences are
binarised at ``--teacher-threshold`` (0 or 255), which is all that training at that threshold reads.

Training on the pack at the same ``short_side`` and ``teacher_threshold`` sees the same label maps as
training on the original folder (nearest resizing commutes with the per-pixel fusion, and the loader's
second resize is then the identity); images differ only by the WebP re-encoding.

    python -m tools.pack_training_data --data-root ../shared/datasets --out .devpack/a \\
        --dataset msrc_v2 --dataset camvid --short-side 352
"""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

import numpy as np
from PIL import Image

from prolab.data.dataset import short_side_size
from prolab.data.readers import TEACHER_DIR, read_shared


def _target_size(w: int, h: int, short_side: int) -> tuple[int, int] | None:
    """The loader's size for a larger image; None for one it would keep or upscale (packed as is)."""
    return None if min(w, h) <= short_side else short_side_size(w, h, short_side)


def _save_label(src: Path, dst: Path, size: tuple[int, int] | None, threshold: int | None = None) -> None:
    with Image.open(src) as im:
        im = im.convert("L") if im.mode not in ("L", "P") else im
        if size is not None:
            im = im.resize(size, Image.NEAREST)
        if threshold is not None:
            im = Image.fromarray(np.where(np.asarray(im) >= threshold, 255, 0).astype(np.uint8))
        im.save(dst, optimize=True)


def pack_dataset(root: Path, name: str, out: Path, split: str, short_side: int,
                 teacher_threshold: float, quality: int) -> int:
    """Write ``out/<name>`` (and ``out/teacher_ade150/<name>``); returns the number of images."""
    src = read_shared(root, name, split)
    folder, tdir = out / name, out / TEACHER_DIR / name
    (folder / "images").mkdir(parents=True, exist_ok=True)
    if any(s.label is not None for s in src.samples):
        (folder / "labels").mkdir(exist_ok=True)
        shutil.copy(root / name / "classes.txt", folder / "classes.txt")
    if any(s.teacher is not None for s in src.samples):
        tdir.mkdir(parents=True, exist_ok=True)
        shutil.copy(root / TEACHER_DIR / "classes.txt", out / TEACHER_DIR / "classes.txt")
    (folder / f"{split}.txt").write_text("".join(f"{s.stem}\n" for s in src.samples))
    level = round(teacher_threshold * 255)  # the comparison prolab.data.dataset.fuse_labels makes
    for s in src.samples:
        with Image.open(s.image) as im:
            size = _target_size(*im.size, short_side)
            if size is None:
                shutil.copy(s.image, folder / "images" / s.image.name)
            else:
                im.convert("RGB").resize(size, Image.BILINEAR).save(
                    folder / "images" / f"{s.stem}.webp", quality=quality, method=6)
        if s.label is not None:
            _save_label(s.label, folder / "labels" / f"{s.stem}.png", size)
        if s.teacher is not None:
            _save_label(s.teacher, tdir / f"{s.stem}.png", size)
        if s.teacher_conf is not None:
            _save_label(s.teacher_conf, tdir / f"{s.stem}_conf.png", size, threshold=level)
    return len(src.samples)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data-root", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--dataset", action="append", required=True)
    p.add_argument("--split", default="train")
    p.add_argument("--short-side", type=int, default=352)
    p.add_argument("--teacher-threshold", type=float, default=0.5)
    p.add_argument("--quality", type=int, default=90, help="WebP quality of resized images")
    args = p.parse_args(argv)
    for name in args.dataset:
        n = pack_dataset(args.data_root, name, args.out, args.split, args.short_side,
                         args.teacher_threshold, args.quality)
        print(f"{name}: {n} images")
    total = sum(f.stat().st_size for f in args.out.rglob("*") if f.is_file())
    print(f"{args.out}: {total / 2**20:.1f} MiB")


if __name__ == "__main__":
    main()
