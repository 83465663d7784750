"""Reading user images safely: any colour mode in, RGB uint8 out, with clear errors.

Used by the CLI and the app so that corrupt files, absurd sizes and odd colour modes
(RGBA, greyscale, palette, 16-bit, CMYK) behave the same everywhere.
"""
from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from prolab.errors import ProLabError

#: ITU-R BT.601 luma weights (they sum to 1): the grey of an RGB image wherever one is needed.
LUMA = (0.299, 0.587, 0.114)

#: Largest image accepted, in pixels (about 8k x 5k). Bigger headers are refused before decoding.
MAX_PIXELS = 40_000_000
MIN_SIDE = 8
#: Working images are downscaled to at most this many pixels on the long side: the label map,
#: overlays and exports are made at this size (the network input has its own size).
MAX_SIDE = 1024


def load_image(source: str | os.PathLike | bytes | Image.Image | np.ndarray,
               max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Return an (H, W, 3) uint8 RGB array from a path, bytes, PIL image or array.

    EXIF orientation is applied; alpha is composited on white; 16-bit and float data are rescaled.
    Raises :class:`ProLabError` for unreadable files, images smaller than 8 px on a side and images
    with more than ``max_pixels`` pixels (checked from the header, before decoding).
    """
    if isinstance(source, np.ndarray):
        return _array_to_rgb(source)
    if isinstance(source, Image.Image):
        img = source
    else:
        name = "image" if isinstance(source, bytes) else str(source)
        try:
            fp = io.BytesIO(source) if isinstance(source, bytes) else open(Path(source), "rb")
        except FileNotFoundError:
            raise ProLabError(f"Image not found: {name}") from None
        except OSError as exc:
            raise ProLabError(f"Cannot open image {name}: {exc}") from None
        try:
            img = Image.open(fp)
            _check_size(img.size, max_pixels, name)
            img.load()
        except ProLabError:
            raise
        except Image.DecompressionBombError as exc:  # PIL refuses > 2x its own limit inside open()
            raise ProLabError(f"{name} is far too large ({exc.args[0].split(' exceeds')[0]}); the limit "
                              f"is {max_pixels / 1e6:.0f} MP. Resize it first.") from None
        except UnidentifiedImageError:  # PIL's message names its file object ("<_io.BufferedReader ...>")
            raise ProLabError(f"{name} is not an image in a format this app reads (PNG, JPEG, WebP, BMP, TIFF, "
                              "GIF).") from None
        except (OSError, SyntaxError, ValueError) as exc:
            raise ProLabError(f"{name} is not a readable image ({exc.__class__.__name__}: {exc}).") from None
    _check_size(img.size, max_pixels, "image")
    try:
        img = ImageOps.exif_transpose(img)
    except Exception:  # a broken EXIF block should not make a good image unusable
        pass
    return _pil_to_rgb(img)


def _check_size(size: tuple[int, int], max_pixels: int, name: str) -> None:
    w, h = size
    if w * h > max_pixels:
        raise ProLabError(
            f"{name} is {w} x {h} pixels ({w * h / 1e6:.0f} MP); the limit is {max_pixels / 1e6:.0f} MP. "
            "Resize it first.")
    if min(w, h) < MIN_SIDE:
        raise ProLabError(f"{name} is {w} x {h} pixels; images need at least {MIN_SIDE} px on each side.")


def _pil_to_rgb(img: Image.Image) -> np.ndarray:
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        return _array_to_rgb(np.asarray(img))
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return np.asarray(img.convert("RGB"), dtype=np.uint8).copy()


def _array_to_rgb(arr: np.ndarray) -> np.ndarray:
    arr = np.asarray(arr)
    if arr.ndim == 3 and arr.shape[2] == 1:
        arr = arr[..., 0]
    if arr.ndim not in (2, 3) or (arr.ndim == 3 and arr.shape[2] not in (3, 4)):
        raise ProLabError(f"Expected an image array of shape (H, W), (H, W, 3) or (H, W, 4), got {arr.shape}.")
    _check_size((arr.shape[1], arr.shape[0]), MAX_PIXELS, "image")
    if arr.dtype != np.uint8:
        a = arr.astype(np.float64)
        if np.issubdtype(arr.dtype, np.floating) and a.max(initial=0) <= 1.0:
            a = a * 255.0
        elif a.max(initial=0) > 255:
            a = a / (65535.0 if a.max() <= 65535 else a.max()) * 255.0
        arr = np.clip(a, 0, 255).round().astype(np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    if arr.shape[2] == 4:
        alpha = arr[..., 3:4].astype(np.float32) / 255.0
        arr = (arr[..., :3] * alpha + 255.0 * (1 - alpha)).round().astype(np.uint8)
    return np.ascontiguousarray(arr)


def resize_for_work(image: np.ndarray, max_side: int = MAX_SIDE, name: str = "image") -> np.ndarray:
    """Downscale (never upscale) so that the long side is at most ``max_side``; an image so elongated
    that its short side would drop below :data:`prolab.images.MIN_SIDE` is refused here, at upload,
    rather than failing later at segmentation."""
    h, w = image.shape[:2]
    if max(h, w) <= max_side:
        return image
    s = max_side / max(h, w)
    if min(h, w) * s < MIN_SIDE:
        raise ProLabError(f"{name} is {w} x {h} pixels, too elongated: images need at least {MIN_SIDE} px on "
                          f"each side after scaling the long side to {max_side} (at most "
                          f"{max_side // MIN_SIDE}:1). Crop it first.")
    size = (max(1, round(w * s)), max(1, round(h * s)))
    return np.asarray(Image.fromarray(image).resize(size, Image.BILINEAR))
