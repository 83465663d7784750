"""Training augmentation written with torch ops only: random scale, crop, flip, colour jitter, and a
simulated other camera (:class:`CameraShift`: white balance, tone curve, sensor resolution, blur, noise,
JPEG compression, vignetting).

Every random draw comes from an explicit :class:`torch.Generator`, so the same seed gives the
same crops. Images are ``(3, H, W)`` uint8 or float in [0, 1]; labels ``(H, W)`` with 255 = ignore.
"""
from __future__ import annotations

import io
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from prolab.images import LUMA

IGNORE = 255


@dataclass(frozen=True)
class CameraLook:
    """One camera's rendering of a scene, applied to a float (3, H, W) image in [0, 1] by :func:`camera_look`.

    The identity by default. Effects run in the order a camera applies them: optics (``vignette``: corners
    darkened by that fraction; ``blur``: Gaussian sigma in pixels of the image given), sensor
    (``resolution``: the image resampled down to that fraction of its size and back up; ``noise``: std of
    additive Gaussian noise, with ``seed``), processing (``white_balance``: per-channel RGB gains;
    ``gamma``: exponent of the tone curve), storage (``jpeg_quality``: 1-95, re-encoded; None: none).
    """

    white_balance: tuple[float, float, float] = (1.0, 1.0, 1.0)
    gamma: float = 1.0
    resolution: float = 1.0
    blur: float = 0.0
    noise: float = 0.0
    jpeg_quality: int | None = None
    vignette: float = 0.0
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "white_balance", tuple(float(v) for v in self.white_balance))  # JSON gives lists
        checks = {"white_balance": len(self.white_balance) == 3 and all(0 < v <= 4 for v in self.white_balance),
                  "gamma": 0.1 <= self.gamma <= 10, "resolution": 0 < self.resolution <= 1,
                  "blur": 0 <= self.blur <= 20, "noise": 0 <= self.noise <= 1, "vignette": 0 <= self.vignette <= 1,
                  "jpeg_quality": self.jpeg_quality is None or 1 <= self.jpeg_quality <= 95}
        bad = [f"{k}={getattr(self, k)!r}" for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"CameraLook out of range: {', '.join(bad)}.")

    def is_identity(self) -> bool:
        return self == CameraLook(seed=self.seed)


@dataclass(frozen=True)
class CameraShift:
    """Ranges from which :func:`random_camera_look` draws a :class:`CameraLook` (another camera or drive:
    sensor colour response and illuminant, tone curve, a lower-resolution or softer lens, sensor noise,
    compression). Each optional effect is drawn with probability ``effect_prob``."""

    white_balance: float = 0.15  # each channel's gain in exp([-x, x]), normalised to mean 1
    gamma: float = 0.35  # exponent in exp([-log(1 + x), log(1 + x)])
    resolution_min: float = 0.4
    blur_max: float = 1.5
    noise_max: float = 0.04
    jpeg_quality_min: int = 20
    vignette_max: float = 0.4
    effect_prob: float = 0.5


@dataclass
class AugmentConfig:
    """Augmentation parameters (defaults follow common segmentation recipes, scaled down).

    ``camera_prob``: the probability that a sample is first rendered by another camera drawn from
    ``camera`` (:func:`random_camera_look`, on the whole image, before scaling and cropping)."""

    crop_size: int = 256
    scale_min: float = 0.5
    scale_max: float = 2.0
    flip: bool = True
    brightness: float = 0.25
    contrast: float = 0.25
    saturation: float = 0.25
    camera_prob: float = 0.0
    camera: CameraShift = field(default_factory=CameraShift)


def _uniform(gen: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=gen))


def to_float(image: torch.Tensor) -> torch.Tensor:
    """uint8 (3, H, W) -> float32 in [0, 1]; float input is returned as float32."""
    return image.float().div_(255.0) if image.dtype == torch.uint8 else image.float()


def resize(image: torch.Tensor, label: torch.Tensor | None, size: tuple[int, int]):
    """Bilinear resize of a float image and nearest resize of a label to ``size`` = (H, W)."""
    img = F.interpolate(image[None], size=size, mode="bilinear", align_corners=False)[0]
    lab = None
    if label is not None:
        lab = F.interpolate(label[None, None].float(), size=size, mode="nearest")[0, 0].to(label.dtype)
    return img, lab


def scale(image: torch.Tensor, label: torch.Tensor | None, s: float):
    """:func:`resize` by the factor ``s`` (at least one pixel a side)."""
    h, w = image.shape[-2:]
    return resize(image, label, (max(1, round(h * s)), max(1, round(w * s))))


def random_scale(image, label, gen: torch.Generator, lo: float, hi: float):
    return scale(image, label, _uniform(gen, lo, hi))


def random_crop(image: torch.Tensor, label: torch.Tensor, size: int, gen: torch.Generator):
    """Crop ``size`` x ``size``; smaller images are padded (image with 0, label with ignore)."""
    h, w = image.shape[-2:]
    ph, pw = max(size - h, 0), max(size - w, 0)
    if ph or pw:
        image = F.pad(image, (0, pw, 0, ph), value=0.0)
        label = F.pad(label, (0, pw, 0, ph), value=IGNORE)
        h, w = image.shape[-2:]
    top = int(torch.randint(0, h - size + 1, (), generator=gen))
    left = int(torch.randint(0, w - size + 1, (), generator=gen))
    return image[:, top:top + size, left:left + size], label[top:top + size, left:left + size]


def _grey(image: torch.Tensor) -> torch.Tensor:
    """(1, H, W) luma of a (3, H, W) image."""
    return (LUMA[0] * image[0] + LUMA[1] * image[1] + LUMA[2] * image[2])[None]


def colour_jitter(image: torch.Tensor, gen: torch.Generator, brightness: float, contrast: float,
                  saturation: float) -> torch.Tensor:
    """Random brightness, contrast and saturation factors in [1 - x, 1 + x] on a [0, 1] image."""
    b = _uniform(gen, 1 - brightness, 1 + brightness)
    c = _uniform(gen, 1 - contrast, 1 + contrast)
    s = _uniform(gen, 1 - saturation, 1 + saturation)
    image = image * b
    grey = _grey(image)
    image = (image - grey.mean()) * c + grey.mean()
    grey = _grey(image)
    image = (image - grey) * s + grey
    return image.clamp_(0.0, 1.0)


def _gaussian_blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    radius = max(1, int(round(3 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=image.dtype)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    k = k / k.sum()
    c = image.shape[0]
    out = F.pad(image[None], (radius, radius, radius, radius), mode="replicate")
    out = F.conv2d(out, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(out, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)[0]


def _to_hwc_uint8(image: torch.Tensor) -> np.ndarray:
    """Float (3, H, W) in [0, 1] -> (H, W, 3) uint8 (rounded): :func:`to_float`'s inverse."""
    return (image.permute(1, 2, 0) * 255).round_().clamp_(0, 255).to(torch.uint8).numpy()


def _from_hwc_uint8(pixels: np.ndarray) -> torch.Tensor:
    """(H, W, 3) uint8 -> float (3, H, W) in [0, 1]; copies, so a read-only array (a decoded upload or
    image) is fine."""
    return to_float(torch.from_numpy(np.array(pixels)).permute(2, 0, 1))


def _jpeg(image: torch.Tensor, quality: int) -> torch.Tensor:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(_to_hwc_uint8(image)).save(buf, format="JPEG", quality=int(quality))
    buf.seek(0)
    return _from_hwc_uint8(np.asarray(Image.open(buf).convert("RGB")))


def camera_look(image: torch.Tensor, look: CameraLook) -> torch.Tensor:
    """``image`` (float (3, H, W) in [0, 1]) as the camera ``look`` would have rendered it; same size."""
    if look.is_identity():
        return image
    image = image.float()
    h, w = image.shape[-2:]
    if look.vignette:
        yy = torch.linspace(-1, 1, h)[:, None]
        xx = torch.linspace(-1, 1, w)[None, :]
        image = image * (1 - look.vignette * (xx ** 2 + yy ** 2) / 2)
    if look.blur > 0:
        image = _gaussian_blur(image, look.blur)
    if look.resolution < 1:
        small = (max(1, round(h * look.resolution)), max(1, round(w * look.resolution)))
        image = F.interpolate(image[None], size=small, mode="bilinear", align_corners=False, antialias=True)
        image = F.interpolate(image, size=(h, w), mode="bilinear", align_corners=False)[0]
    if look.noise > 0:
        gen = torch.Generator().manual_seed(look.seed)
        image = image + look.noise * torch.randn(image.shape, generator=gen)
    image = image.clamp(0.0, 1.0)
    if look.white_balance != (1.0, 1.0, 1.0):
        image = (image * torch.tensor(look.white_balance, dtype=image.dtype)[:, None, None]).clamp_(0.0, 1.0)
    if look.gamma != 1.0:
        image = image.pow(look.gamma)
    if look.jpeg_quality is not None:
        image = _jpeg(image, look.jpeg_quality)
    return image.contiguous()


def render_uint8(image: np.ndarray, look: CameraLook) -> np.ndarray:
    """:func:`camera_look` on an (H, W, 3) uint8 RGB array (what evaluation and prediction load)."""
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"render_uint8 needs an (H, W, 3) uint8 image, got {image.dtype} {image.shape}.")
    if look.is_identity():
        return image
    return _to_hwc_uint8(camera_look(_from_hwc_uint8(image), look))


# Fixed other cameras for measuring robustness (bench.camera_shift): each effect alone at a strength inside
# CameraShift's training ranges, and two whole renderings that combine them.
CAMERA_PRESETS: dict[str, CameraLook] = {
    "warm white balance": CameraLook(white_balance=(1.12, 1.0, 0.88)),
    "cool white balance": CameraLook(white_balance=(0.88, 1.0, 1.12)),
    "darker tone curve (gamma 1.35)": CameraLook(gamma=1.35),
    "brighter tone curve (gamma 0.74)": CameraLook(gamma=0.74),
    "half-resolution sensor": CameraLook(resolution=0.5),
    "soft lens (blur 1.2 px)": CameraLook(blur=1.2),
    "sensor noise (std 0.03)": CameraLook(noise=0.03),
    "JPEG quality 25": CameraLook(jpeg_quality=25),
    "vignetting 0.35": CameraLook(vignette=0.35),
    "camera A (warm, low-res, noisy, JPEG 40)": CameraLook(white_balance=(1.1, 1.0, 0.9), gamma=1.15, resolution=0.6,
                                                          noise=0.02, jpeg_quality=40, vignette=0.2),
    "camera B (cool, soft, bright)": CameraLook(white_balance=(0.9, 1.0, 1.1), gamma=0.8, blur=1.0,
                                               noise=0.01, jpeg_quality=60),
}


def random_camera_look(gen: torch.Generator, shift: CameraShift) -> CameraLook:
    """A :class:`CameraLook` drawn from ``shift``'s ranges (white balance and gamma always; each other
    effect with probability ``shift.effect_prob``)."""
    def maybe() -> bool:
        return bool(torch.rand((), generator=gen) < shift.effect_prob)

    gains = torch.exp((torch.rand(3, generator=gen) * 2 - 1) * shift.white_balance)
    gains = gains / gains.mean()
    g = float(np.log1p(shift.gamma))
    return CameraLook(
        white_balance=gains.tolist(),  # CameraLook makes it a tuple of floats
        gamma=float(np.exp(_uniform(gen, -g, g))),
        resolution=_uniform(gen, shift.resolution_min, 1.0) if maybe() else 1.0,
        blur=_uniform(gen, 0.0, shift.blur_max) if maybe() else 0.0,
        noise=_uniform(gen, 0.0, shift.noise_max) if maybe() else 0.0,
        jpeg_quality=int(round(_uniform(gen, shift.jpeg_quality_min, 95))) if maybe() else None,
        vignette=_uniform(gen, 0.0, shift.vignette_max) if maybe() else 0.0,
        seed=int(torch.randint(0, 2 ** 31 - 1, (), generator=gen)),
    )


_CAMERA_SALT = 0x5EED_CA3E  # the camera's draws: a stream of their own (see augment)


def augment(image: torch.Tensor, label: torch.Tensor, cfg: AugmentConfig, gen: torch.Generator,
            camera_gen: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Camera shift (``camera_prob``), scale, crop, flip and jitter one sample; returns float (3, S, S)
    and int64 (S, S).

    The camera is drawn from ``camera_gen`` (default: a generator seeded from ``gen``'s seed), never
    from ``gen``: the same seed gives the same crop, flip and jitter with and without ``camera_prob``,
    so a run with camera shift is paired sample for sample with one without."""
    image = to_float(image)
    if cfg.camera_prob > 0:
        if camera_gen is None:
            camera_gen = torch.Generator().manual_seed(gen.initial_seed() ^ _CAMERA_SALT)
        if bool(torch.rand((), generator=camera_gen) < cfg.camera_prob):
            image = camera_look(image, random_camera_look(camera_gen, cfg.camera))
    if cfg.scale_max > 0 and (cfg.scale_min != 1.0 or cfg.scale_max != 1.0):
        image, label = random_scale(image, label, gen, cfg.scale_min, cfg.scale_max)
    image, label = random_crop(image, label, cfg.crop_size, gen)
    if cfg.flip and bool(torch.rand((), generator=gen) < 0.5):
        image, label = image.flip(-1), label.flip(-1)
    if cfg.brightness or cfg.contrast or cfg.saturation:
        image = colour_jitter(image, gen, cfg.brightness, cfg.contrast, cfg.saturation)
    return image.contiguous(), label.long().contiguous()
