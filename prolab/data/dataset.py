"""Training dataset: decoded, resized images and fused target labels cached in memory.

Labels are fused once, at load time: a pixel with ground truth takes its (mapped) GT class;
a GT-void pixel (or an image without GT) falls back to the teacher's ADE-150 class when the
teacher is confident (``conf >= teacher_threshold``) and the class is not "other"; everything
else is ignore (255).
"""
from __future__ import annotations

import hashlib
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from prolab.caches import save_tensors_atomic
from prolab.data.readers import SegSample, SegSource
from prolab.data.transforms import AugmentConfig, augment
from prolab.data.union import EXCLUDED, IGNORE, LabelMaps, UnionSpace, label_maps
from prolab.errors import ProLabError
from prolab.images import MAX_PIXELS, load_image

log = logging.getLogger(__name__)


def read_index_png(path: Path) -> np.ndarray:
    """An index mask as (H, W) uint8; larger than :data:`prolab.images.MAX_PIXELS` is refused from the
    header, before decoding (PIL's own limit would raise a DecompressionBombError)."""
    try:
        with Image.open(path) as im:
            if im.width * im.height > MAX_PIXELS:
                raise ProLabError(f"Label file {path} is {im.width} x {im.height} pixels; the limit is "
                                  f"{MAX_PIXELS / 1e6:.0f} MP.")
            if im.mode not in ("L", "P"):
                im = im.convert("L")
            return np.asarray(im, dtype=np.uint8).copy()
    except Image.DecompressionBombError:
        raise ProLabError(f"Label file {path} is far too large; the limit is {MAX_PIXELS / 1e6:.0f} MP.") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise ProLabError(f"Cannot read label file {path}: {exc}") from None


def fuse_labels(sample: SegSample, maps: LabelMaps, teacher_threshold: float = 0.5) -> np.ndarray | None:
    """The target label map of one sample (H, W) uint8, or None when it has no labels at all."""
    out = None
    if sample.label is not None and maps.gt is not None:
        out = maps.gt[read_index_png(sample.label)]
    if sample.teacher is not None and maps.teacher is not None:
        t = maps.teacher[read_index_png(sample.teacher)]
        if sample.teacher_conf is not None and teacher_threshold > 0:
            conf = read_index_png(sample.teacher_conf)
            t = np.where(conf >= round(teacher_threshold * 255), t, IGNORE).astype(np.uint8)
        if out is None:
            out = t
        elif out.shape == t.shape:
            out = np.where(out == IGNORE, t, out).astype(np.uint8)
        else:
            log.warning("%s: teacher label size %s != label size %s; teacher ignored",
                        sample.stem, t.shape, out.shape)
    if out is not None:
        out[out == EXCLUDED] = IGNORE
    return out


def short_side_size(width: int, height: int, short_side: int) -> tuple[int, int]:
    """(width, height) of an image resized so that its short side is ``short_side`` (the training loader's rule)."""
    s = short_side / min(width, height)
    return max(1, round(width * s)), max(1, round(height * s))


def _resize_pair(image: np.ndarray, label: np.ndarray, short_side: int | None):
    if label.shape != image.shape[:2]:
        raise ProLabError(f"Label size {label.shape} does not match image size {image.shape[:2]}.")
    if not short_side:
        return image, label
    h, w = label.shape
    size = short_side_size(w, h, short_side)
    image = np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
    label = np.asarray(Image.fromarray(label).resize(size, Image.NEAREST))
    return image, label


def load_pair(sample: SegSample, maps: LabelMaps, short_side: int | None,
              teacher_threshold: float) -> tuple[np.ndarray, np.ndarray] | None:
    """Decoded RGB image and fused label, both resized so the short side is ``short_side``."""
    label = fuse_labels(sample, maps, teacher_threshold)
    if label is None:
        return None
    return _resize_pair(load_image(sample.image), label, short_side)


class SegmentationDataset(torch.utils.data.Dataset):
    """Images of several sources with labels in one target space, augmented on the fly.

    ``__getitem__`` returns ``(image float32 (3, S, S) in [0, 1], label int64 (S, S))``. Random
    draws depend only on ``(seed, epoch, index)`` so runs are reproducible whatever the loader
    order; call :meth:`set_epoch` every epoch.
    """

    def __init__(self, sources: list[SegSource], space: UnionSpace, augment_cfg: AugmentConfig | None = None,
                 short_side: int | None = 256, teacher_threshold: float = 0.5, use_teacher: bool = True,
                 seed: int = 0, cache_dir: str | Path | None = None, workers: int = 2,
                 repeats: list[int] | None = None):
        self.augment_cfg = augment_cfg or AugmentConfig()
        self.seed, self.epoch = seed, 0
        self.images: list[torch.Tensor] = []
        self.labels: list[torch.Tensor] = []
        self.origin: list[tuple[str, str]] = []
        self.source_index: list[int] = []  # which of ``sources`` each item comes from
        repeats = repeats or [1] * len(sources)
        for k, (src, rep) in enumerate(zip(sources, repeats)):
            maps = label_maps(src, space, use_teacher)
            imgs, labs = self._load_source(src, maps, short_side, teacher_threshold, cache_dir, workers)
            # Repeating a source (oversampling) shares the cached tensors; no extra memory.
            for _ in range(max(1, int(rep))):
                self.images += imgs
                self.labels += labs
                self.origin += [(src.name, s.stem) for s in src.samples][:len(imgs)]
                self.source_index += [k] * len(imgs)
        if not self.images:
            raise ProLabError("The training data has no labelled images.")

    @staticmethod
    def _load_source(src: SegSource, maps: LabelMaps, short_side, threshold, cache_dir, workers):
        key = None
        if cache_dir is not None:
            h = hashlib.sha256()
            for part in (src.name, src.split, short_side, threshold,
                         maps.gt.tobytes() if maps.gt is not None else b"",
                         maps.teacher.tobytes() if maps.teacher is not None else b""):
                h.update(part if isinstance(part, bytes) else repr(part).encode())
            for s in src.samples:
                h.update(repr((str(s.image), str(s.label), str(s.teacher), str(s.teacher_conf))).encode())
            key = Path(cache_dir) / f"{src.name}-{src.split}-{h.hexdigest()[:16]}.pt"
            if key.is_file():
                data = torch.load(key, weights_only=True)
                return data["images"], data["labels"]
        with ThreadPoolExecutor(max(1, workers)) as pool:
            pairs = list(pool.map(lambda s: load_pair(s, maps, short_side, threshold), src.samples))
        pairs = [p for p in pairs if p is not None]
        images = [torch.from_numpy(np.ascontiguousarray(p[0].transpose(2, 0, 1))) for p in pairs]
        labels = [torch.from_numpy(np.array(p[1])) for p in pairs]
        if key is not None:
            save_tensors_atomic({"images": images, "labels": labels}, key)
        return images, labels

    def __len__(self) -> int:
        return len(self.images)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        gen = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) * 1_000_033 + int(i))
        return augment(self.images[i], self.labels[i], self.augment_cfg, gen)

    def class_pixel_counts(self, num_classes: int) -> np.ndarray:
        """Labelled pixels per target class over the cached (un-augmented) labels."""
        counts = np.zeros(num_classes, np.int64)
        for lab in self.labels:
            c = np.bincount(lab.numpy().ravel(), minlength=256)
            counts += c[:num_classes]
        return counts
