"""Inference: image -> cached output map (the one expensive step), then cheap re-scoring.

``embed_image`` runs the network once per image and returns its stride-4 output map: pixel embeddings
(D, h, w) for a property model, class logits (C, h, w) for a category model. Everything else
(``score_embeddings``, ``segment``; :mod:`prolab.class_scorer` turns it into class scores) works on that cached map, so a changed label
space, threshold or property choice never needs a new forward pass.

Every function here is pure and re-entrant: nothing is stored on the (shared) model or in module-level
tables, so concurrent users of one model cannot see each other's results. Callers that want to reuse
work (activations, their norms) keep it themselves, as :class:`prolab.class_scorer.ImageCache` does.

Resizing rule: the image is resized so that its SHORT side equals ``size`` (default: the model's
``input_size``), the long side capped at ``4 * size``; both sides are rounded to multiples of 4, so the
output map covers the resized image exactly at 1/4 of its resolution.
"""
from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F

from prolab.errors import ProLabError
from prolab.images import LUMA, load_image
from prolab.labelspace import LabelSpace
from prolab.input_shape import MAX_SIZE, check_size, resized_shape
from prolab.model.heads import resize_to
from prolab.model.segmenter import OUTPUT_STRIDE, SIZE_DIVISOR, PropertySegmenter
from prolab.scoring import DEFAULT_TEMPERATURE, property_activations


def check_inference_options(size: int | None = None, mode: str = "whole", crop: int = 512,
                            stride: int = 341) -> None:
    """Raise :class:`ProLabError` for options :func:`embed_image` cannot use (checked before a batch
    starts, so that a bad flag fails once, not once per image)."""
    check_size(size)
    if mode not in ("whole", "slide"):
        raise ProLabError(f"mode must be 'whole' or 'slide', got {mode!r}.")
    if mode == "slide":
        if not SIZE_DIVISOR <= crop <= MAX_SIZE or crop % SIZE_DIVISOR:
            raise ProLabError(f"crop must be a multiple of {SIZE_DIVISOR} up to {MAX_SIZE}, got {crop}.")
        if not 0 < stride <= crop:
            raise ProLabError(f"stride must be between 1 and crop ({crop}), got {stride}.")


def _ceil_to(v: int, m: int) -> int:
    return int(math.ceil(v / m)) * m


def _device(model: torch.nn.Module) -> torch.device:
    return next(model.parameters()).device


def _window_starts(length: int, crop: int, stride: int) -> list[int]:
    """Window origins covering ``[0, length)`` (length >= crop); multiples of the output stride so
    that every window maps onto whole cells of the stride-4 output grid."""
    n = max(length - crop + stride - 1, 0) // stride + 1
    starts = [min(i * stride, length - crop) // OUTPUT_STRIDE * OUTPUT_STRIDE for i in range(n)]
    return sorted(set(starts))


@dataclass(frozen=True)
class LowRankFactors:
    """An output map written as ``W @ features + b``: the decode head's last 1x1 conv and its input.

    A property model's (D, h, w) embeddings are this affine map of ~64 decoder channels, so property
    activations can be computed over those channels instead of D = 384 (see :func:`score_embeddings`)
    and storing the factors takes about a sixth of the memory of the embeddings.
    """

    features: torch.Tensor  # (F, h, w) float32 (float16 where a cache keeps them compact)
    weight: torch.Tensor  # (D, F)
    bias: torch.Tensor  # (D,)

    @property
    def dim(self) -> int:
        return int(self.weight.shape[0])

    @property
    def shape(self) -> tuple[int, int, int]:
        """The shape of the embeddings these factors stand for."""
        return (self.dim, *self.features.shape[1:])

    @property
    def nbytes(self) -> int:
        return sum(t.element_size() * t.nelement() for t in (self.features, self.weight, self.bias))

    def embeddings(self) -> torch.Tensor:
        """The (D, h, w) embeddings (equal to the model's output up to float rounding)."""
        f = self.features.float()
        out = torch.addmm(self.bias[:, None], self.weight, f.reshape(f.shape[0], -1))
        return out.reshape(self.shape)


def embed_image(model: PropertySegmenter, image: np.ndarray, size: int | None = None,
                mode: Literal["whole", "slide"] = "whole", crop: int = 512, stride: int = 341,
                batch_size: int = 4, flip: bool = False, scales: tuple[float, ...] = (1.0,)) -> torch.Tensor:
    """The model's output map for one image: (D or C, h/4, w/4) float32 on the CPU, without gradients.

    ``image`` is (H, W, 3) uint8 RGB (other arrays are converted by :func:`prolab.images.load_image`).
    ``mode="whole"`` runs the padded image at once; ``"slide"`` runs ``crop`` x ``crop`` windows every
    ``stride`` pixels (the reference setting is 512 / 341) and averages overlapping outputs.
    ``flip`` also runs the mirrored image and averages the two outputs (test-time augmentation).
    ``scales`` runs the image at each ``scale * size`` short side and averages the outputs resized to the
    grid of ``size`` (multi-scale test-time augmentation; ``(1.0,)``: one pass).
    ``model`` may be a :class:`prolab.onnx_backend.OnnxSegmenter`: only the network's forward differs.
    """
    return embed_image_factored(model, image, size=size, mode=mode, crop=crop, stride=stride,
                                batch_size=batch_size, flip=flip, scales=scales)[0]


def check_scales(scales) -> tuple[float, ...]:
    """``scales`` as a tuple of positive finite floats, or :class:`ProLabError`."""
    try:
        out = tuple(float(s) for s in scales)
    except (TypeError, ValueError):
        raise ProLabError(f"scales must be numbers, got {scales!r}.") from None
    if not out or not all(math.isfinite(s) and 0.1 <= s <= 4 for s in out):
        raise ProLabError(f"scales must be between 0.1 and 4, got {scales!r}.")
    return out


def embed_image_factored(model: PropertySegmenter, image: np.ndarray, size: int | None = None,
                         mode: Literal["whole", "slide"] = "whole", crop: int = 512, stride: int = 341,
                         batch_size: int = 4, flip: bool = False,
                         scales: tuple[float, ...] = (1.0,)) -> tuple[torch.Tensor, LowRankFactors | None]:
    """:func:`embed_image` plus the :class:`LowRankFactors` of the output (a property model in whole
    mode whose head ends in a 1x1 conv; else None). Pass the factors to :func:`score_embeddings` for
    the faster exact re-scoring path.

    Re-entrant: nothing is stored on the model (several users may share one model across threads).
    """
    size = model.config.input_size if size is None else size  # 0 is an error, not "the default"
    check_inference_options(size, mode, crop, stride)
    scales = check_scales(scales)
    sizes = [max(SIZE_DIVISOR, min(MAX_SIZE, int(round(size * s)))) for s in scales]
    image = load_image(image)
    h, w = resized_shape(image.shape[0], image.shape[1], size)
    hh, ww = h // OUTPUT_STRIDE, w // OUTPUT_STRIDE
    conv = final_projection(model) if model.config.supervision == "property" else None
    keep = conv is not None and mode == "whole"
    out_sum = feat_sum = None
    for s in sizes:
        out, features = _embed_at_size(model, image, s, mode, crop, stride, batch_size, flip, keep)
        if out.shape[-2:] != (hh, ww):  # another scale: onto the grid of ``size`` (linear, so the
            # averaged features still give the averaged embeddings through the affine last conv)
            out = F.interpolate(out, size=(hh, ww), mode="bilinear", align_corners=False)
            if features is not None:
                features = F.interpolate(features, size=(hh, ww), mode="bilinear", align_corners=False)
        out_sum = out if out_sum is None else out_sum + out
        if features is not None:
            feat_sum = features if feat_sum is None else feat_sum + features
    n = len(sizes)
    emb = (out_sum[0] / n if n > 1 else out_sum[0]).float().cpu().contiguous()
    factors = None
    if feat_sum is not None:
        weight = conv.weight.detach().float().cpu().reshape(conv.out_channels, -1).clone()
        bias = (conv.bias.detach().float().cpu().clone() if conv.bias is not None
                else torch.zeros(conv.out_channels))
        feats = feat_sum[0] / n if n > 1 else feat_sum[0]
        factors = LowRankFactors(feats.float().cpu().contiguous(), weight, bias)
    return emb, factors


def _embed_at_size(model: PropertySegmenter, image: np.ndarray, size: int, mode: str, crop: int, stride: int,
                   batch_size: int, flip: bool, keep: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(1, D, h/4, w/4) output map (and features when ``keep``) of ``image`` resized to short side ``size``."""
    h, w = resized_shape(image.shape[0], image.shape[1], size)
    device = _device(model)
    # A read-only array (a decoded upload) cannot back a tensor without a warning; .float() copies anyway.
    pixels = torch.from_numpy(image if image.flags.writeable else image.copy())
    x = pixels.to(device).permute(2, 0, 1)[None].float().div_(255.0)
    if (h, w) != tuple(image.shape[:2]):
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False, antialias=True)
    x = model.normalize(x)
    was_training = model.training
    if was_training:  # only then: toggling a shared model in eval mode would race with other threads
        model.eval()
    try:
        with torch.no_grad():
            out, features = _forward(model, x, mode, crop, stride, batch_size, keep)
            if flip:
                # Mirror back before averaging. The features average too, so the low-rank
                # rescoring path (embeddings are affine in them) stays exact.
                out_f, features_f = _forward(model, x.flip(-1), mode, crop, stride, batch_size, keep)
                out = (out + _unflip(out_f, w // OUTPUT_STRIDE)) / 2
                if features is not None:
                    features = (features + _unflip(features_f, w // OUTPUT_STRIDE)) / 2
    finally:
        if was_training:
            model.train()
    hh, ww = h // OUTPUT_STRIDE, w // OUTPUT_STRIDE
    out = out[:, :, :hh, :ww]
    return out, (features[:, :, :hh, :ww] if features is not None else None)


def _forward(model: PropertySegmenter, x: torch.Tensor, mode: str, crop: int, stride: int,
             batch_size: int, keep_features: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    if mode == "whole":
        return _forward_padded(model, x, keep_features)
    return _forward_slide(model, x, crop, stride, batch_size), None


def _unflip(out: torch.Tensor, width: int) -> torch.Tensor:
    """Mirror a padded output map of a mirrored input back; the padding stays on the right."""
    mirrored = out[..., :width].flip(-1)
    return torch.cat([mirrored, out[..., width:]], dim=-1)


def _forward_padded(model: PropertySegmenter, x: torch.Tensor,
                    keep_features: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Output map (and the head's pre-classifier features) of the image padded to a multiple of 32."""
    h, w = x.shape[-2:]
    # Zero after normalisation = the mean colour, the least surprising padding.
    x = F.pad(x, (0, _ceil_to(w, SIZE_DIVISOR) - w, 0, _ceil_to(h, SIZE_DIVISOR) - h))
    result = model(x, return_features=keep_features)
    return result["out"], result.get("features")


def final_projection(model: PropertySegmenter) -> torch.nn.Conv2d | None:
    """The decode head's last 1x1 conv (embeddings are an affine map of its input), if it has one."""
    conv = getattr(getattr(model, "decode_head", None), "classifier", None)
    if isinstance(conv, torch.nn.Conv2d) and conv.kernel_size == (1, 1) and conv.groups == 1:
        return conv
    return None


def _forward_slide(model: PropertySegmenter, x: torch.Tensor, crop: int, stride: int,
                   batch_size: int) -> torch.Tensor:
    h, w = x.shape[-2:]
    hp, wp = max(crop, _ceil_to(h, SIZE_DIVISOR)), max(crop, _ceil_to(w, SIZE_DIVISOR))
    x = F.pad(x, (0, wp - w, 0, hp - h))
    boxes = [(y, xx) for y in _window_starts(hp, crop, stride) for xx in _window_starts(wp, crop, stride)]
    cs, s = crop // OUTPUT_STRIDE, OUTPUT_STRIDE
    total = count = None
    for i in range(0, len(boxes), max(1, batch_size)):
        chunk = boxes[i:i + batch_size]
        out = model(torch.cat([x[:, :, y:y + crop, xx:xx + crop] for y, xx in chunk]))["out"]
        if total is None:
            total = out.new_zeros((1, out.shape[1], hp // s, wp // s))
            count = out.new_zeros((1, 1, hp // s, wp // s))
        for (y, xx), o in zip(chunk, out):
            total[0, :, y // s:y // s + cs, xx // s:xx // s + cs] += o
            count[0, :, y // s:y // s + cs, xx // s:xx // s + cs] += 1
    return total / count


def score_embeddings(embeddings: torch.Tensor | LowRankFactors, label_space: LabelSpace,
                     temperature: float | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(D, h, w) pixel embeddings -> (property activations (K, h, w), class scores (C, h, w)).

    Uses :mod:`prolab.scoring` (``temperature`` defaults to its 0.04); pass the model's
    ``config.temperature``. ``embeddings`` may be the :class:`LowRankFactors` of
    :func:`embed_image_factored` instead (same result up to float rounding, several times faster).
    Activations depend only on the embeddings, the centres and the temperature: a caller that keeps
    them (and :func:`inverse_norms`) can re-score edited classes with :func:`rescore_activations`.
    Pure: nothing is remembered between calls.
    """
    act = embedding_activations(embeddings, label_space, temperature)
    return act, rescore_activations(act, label_space)


def embedding_activations(embeddings: torch.Tensor | LowRankFactors, label_space: LabelSpace,
                          temperature: float | None = None) -> torch.Tensor:
    """Property activations (K, h, w) of (D, h, w) embeddings or their :class:`LowRankFactors`: the
    first half of :func:`score_embeddings`."""
    shape = tuple(embeddings.shape)
    if len(shape) != 3:
        raise ProLabError(f"Expected embeddings of shape (D, h, w), got {shape}.")
    if shape[0] != label_space.dim:
        raise ProLabError(f"Embeddings have {shape[0]} channels but the label space is "
                          f"{label_space.dim}-dimensional (was it built with the model's encoder?).")
    t = DEFAULT_TEMPERATURE if temperature is None else float(temperature)
    d, h, w = shape
    with torch.no_grad():
        if isinstance(embeddings, LowRankFactors):
            # e = W f + b (the head's last 1x1 conv), so <e, c> = <W^T c, f> + <b, c>: a product over
            # the decoder's ~64 channels instead of D = 384, identical up to float rounding.
            f = embeddings.features.float()  # a cache may keep them in half precision
            centers = F.normalize(torch.as_tensor(label_space.centers, dtype=torch.float32), dim=1)
            logits = (centers @ embeddings.weight) @ f.reshape(f.shape[0], h * w)
            logits += (centers @ embeddings.bias)[:, None]
            return torch.sigmoid_(logits.div_(t)).reshape(-1, h, w)
        # (N, D) view of the (D, h, w) map: plain matrix products over contiguous memory are
        # faster than the channel-axis einsum of the 4-D layout; the maths is the same.
        act = property_activations(embeddings.detach().reshape(d, h * w).T, label_space.centers, t)
        return act.T.reshape(-1, h, w)


def centres_key(centers: np.ndarray, temperature: float) -> tuple[str, float]:
    """A key for (centres, temperature): activations computed with an equal key can be reused."""
    return hashlib.sha1(np.ascontiguousarray(centers, np.float32).tobytes()).hexdigest(), float(temperature)


def inverse_norms(activations: torch.Tensor) -> torch.Tensor:
    """1 / |p| per pixel (flattened) of a (K, h, w) activation map (pass it to
    :func:`rescore_activations` when re-scoring the same activations several times)."""
    act = activations.reshape(activations.shape[0], -1)
    # The squared sum is much faster than torch's strided norm over the first axis.
    return (act * act).sum(0).sqrt_().clamp_(min=1e-12).reciprocal_()


def rescore_activations(activations: torch.Tensor, label_space: LabelSpace,
                        inv_norm: torch.Tensor | None = None) -> torch.Tensor:
    """Class scores (C, h, w) from cached property activations (K, h, w).

    Valid whenever ``label_space`` keeps the centres the activations were computed with (classes added,
    removed or edited without re-clustering): about a third of the cost of :func:`score_embeddings`.
    ``inv_norm`` is :func:`inverse_norms` of ``activations`` (computed here when not given).
    """
    if activations.dim() != 3 or activations.shape[0] != label_space.k:
        raise ProLabError(f"Expected activations of shape ({label_space.k}, h, w), got {tuple(activations.shape)}.")
    k, h, w = activations.shape
    with torch.no_grad():
        act = activations.reshape(k, h * w)
        matrix = F.normalize(torch.as_tensor(label_space.class_matrix, dtype=act.dtype), dim=1)
        # cos(p, m_c) = <p, m_c/|m_c|> / |p|. Multi-hot rows are sparse (~10 of 256 properties), so a
        # weighted gather-sum (embedding_bag) beats the dense product; both compute prolab.scoring's formula.
        if inv_norm is None:
            inv_norm = inverse_norms(activations)
        nz = torch.nonzero(matrix)
        if len(nz) < 0.25 * matrix.numel():
            offsets = torch.searchsorted(nz[:, 0].contiguous(), torch.arange(matrix.shape[0]))
            scores = F.embedding_bag(nz[:, 1], act, offsets, mode="sum",
                                     per_sample_weights=matrix[nz[:, 0], nz[:, 1]])
        else:
            scores = matrix @ act
        scores *= inv_norm
    return scores.reshape(-1, h, w)


def segment(class_scores: torch.Tensor, out_size: tuple[int, int],
            unknown_threshold: float | None = None, guide: np.ndarray | None = None) -> np.ndarray:
    """Per-pixel argmax of bilinearly upsampled class scores, as an (H, W) int32 array.

    Pixels whose best score is below ``unknown_threshold`` get -1 (unknown). When at most
    ``MAX_CANDIDATES`` classes win some low-resolution pixel, only those are upsampled; otherwise each
    output pixel compares the classes that win at the four low-res pixels it is interpolated from (see
    :func:`_corner_winner_argmax`), so the cost does not grow with the size of the label space. Either
    way a class that wins at no low-res pixel nearby can only win after interpolation in near-ties.

    ``guide``: the (H, W, 3) uint8 RGB image at ``out_size``. With it the scores are upsampled by a fast
    guided filter (:func:`_guided_argmax`, on the image's luma: edges between colours of equal brightness
    are not seen) instead, so that class boundaries snap to the image's edges; the unknown threshold then
    applies to the best refined score. Only the classes that win at some low-res pixel are refined: a
    class that wins nowhere at low resolution cannot win with a guide. And only near class boundaries
    (:func:`_boundary_band`): where one class wins every low-res pixel around, the label and score are the
    bilinear ones, so the filter moves boundaries onto edges but never turns the inside of a region whose
    scores nearly tie with another class's into that class along the image's texture (it did: water
    waves turned into "boat" in plain-words MSRC-v2, docs/RESULTS.md part 6).
    """
    if class_scores.dim() != 3 or class_scores.shape[0] < 1:
        raise ProLabError(f"Expected class scores of shape (C, h, w), got {tuple(class_scores.shape)}.")
    out_h, out_w = int(out_size[0]), int(out_size[1])
    if out_h < 1 or out_w < 1:
        raise ProLabError(f"Output size must be positive, got {out_size}.")
    if unknown_threshold is not None and not math.isfinite(unknown_threshold):
        raise ProLabError(f"The unknown threshold must be a number, got {unknown_threshold}.")
    if guide is not None:
        _check_guide(guide, out_h, out_w)
    scores = class_scores.detach().float().cpu()
    c, h, w = scores.shape
    with torch.no_grad():
        # Pixel-major copy: a max over the last axis is several times faster than torch's argmax over
        # the class axis of a (C, h, w) map, and the boundary gathers below read this layout.
        pixel_major = scores.reshape(c, h * w).T.contiguous()
        max_low, win_low = pixel_major.max(1)
        max_low, win_low = max_low.reshape(h, w), win_low.reshape(h, w)
        if guide is not None:  # applies at equal size too: the filter still follows the image's edges
            band = _boundary_band(win_low, out_h, out_w)
            label = F.interpolate(win_low[None, None].float(), size=(out_h, out_w), mode="nearest")[0, 0].long()
            best = max_low if (out_h, out_w) == (h, w) else F.interpolate(
                max_low[None, None], size=(out_h, out_w), mode="bilinear", align_corners=False)[0, 0]
            if bool(band.any()):
                winners = torch.nonzero(torch.bincount(win_low.reshape(-1), minlength=c)).flatten()
                g_best, g_label = _guided_argmax(scores, winners, _guide_channels(guide))
                best, label = torch.where(band, g_best, best), torch.where(band, g_label, label)
        elif (out_h, out_w) == (h, w):
            best, label = max_low, win_low
        else:
            winners = torch.nonzero(torch.bincount(win_low.reshape(-1), minlength=c)).flatten()
            if len(winners) <= MAX_CANDIDATES:
                best, label = _candidate_argmax(scores, winners, out_h, out_w)
            else:
                best, label = _corner_winner_argmax(pixel_major, max_low, win_low, out_h, out_w)
        if unknown_threshold is not None:
            label = label.clone()
            label[best < unknown_threshold] = -1
    return label.to(torch.int32).numpy()


MAX_CANDIDATES = 4


def _boundary_band(win_low: torch.Tensor, out_h: int, out_w: int) -> torch.Tensor:
    """(out_h, out_w) bool: the output pixels whose low-res pixel (nearest) has another winner within one
    low-res pixel. Outside it all four bilinear taps of a pixel share one winner (the taps lie within one
    low-res pixel of the nearest), so the bilinear label there is that winner and its score the
    interpolated low-res maximum."""
    w = win_low[None, None].float()
    mixed = (F.max_pool2d(w, 3, 1, 1) != -F.max_pool2d(-w, 3, 1, 1)).float()
    if tuple(win_low.shape) == (out_h, out_w):
        return mixed[0, 0].bool()
    return F.interpolate(mixed, size=(out_h, out_w), mode="nearest")[0, 0].bool()
#: Fast guided filter defaults (window radius in low-res pixels, regulariser on the guide's [0, 1] scale),
#: chosen on CamVid and MSRC-v2 val among radius 1-2 and eps 1e-3-1e-2 (the measured option: docs/RESULTS.md,
#: part 6). Larger eps smooths towards bilinear, smaller follows texture too.
GUIDED_RADIUS = 1
GUIDED_EPS = 1e-3
#: Full-resolution floats one chunk of guided candidates holds: small chunks stay in cache and reuse their
#: allocations, measured faster on the CPU than one big chunk (a few classes at 512 x 512).
GUIDED_CHUNK_VALUES = 4_000_000


def _candidate_argmax(scores: torch.Tensor, candidates: torch.Tensor, out_h: int,
                      out_w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Best upsampled score and its class, upsampling only the candidate classes."""
    sub = scores.index_select(0, candidates)
    chunk = max(1, int(32_000_000 // (out_h * out_w)))  # bound memory on very large images
    best = label = None
    for i in range(0, len(candidates), chunk):
        part = sub[i:i + chunk]
        if part.shape[-2:] != (out_h, out_w):
            part = F.interpolate(part[None], size=(out_h, out_w), mode="bilinear", align_corners=False)[0]
        value, arg = part.max(0)
        arg = candidates[i:i + chunk].gather(0, arg.reshape(-1)).reshape(arg.shape)
        if best is None:
            best, label = value, arg
        else:
            better = value > best
            best, label = torch.where(better, value, best), torch.where(better, arg, label)
    return best, label


def _check_guide(guide: np.ndarray, out_h: int, out_w: int) -> None:
    """Raise :class:`ProLabError` unless ``guide`` is an (out_h, out_w, 3) uint8 array."""
    if not isinstance(guide, np.ndarray):
        raise ProLabError(f"The guide must be a numpy array, got {type(guide).__name__}.")
    if guide.ndim != 3 or guide.shape[2] != 3:
        raise ProLabError(f"The guide must be an (H, W, 3) RGB image, got shape {guide.shape}.")
    if guide.dtype != np.uint8:
        raise ProLabError(f"The guide must be uint8 RGB, got dtype {guide.dtype}.")
    if guide.shape[:2] != (out_h, out_w):
        raise ProLabError(f"The guide is {guide.shape[0]}x{guide.shape[1]} but the output size is "
                          f"{out_h}x{out_w}: pass the image at the output size.")


def _guide_channels(guide: np.ndarray) -> torch.Tensor:
    """The checked uint8 RGB guide as its (1, H, W) float32 luma in [-0.5, 0.5].

    Gray, not RGB: within 0.1 mIoU of the RGB guide (see ``GUIDED_RADIUS``) at about half the cost
    (one coefficient map to upsample per class instead of three; bench.guided_upsampling_speed).
    Centred because the filter's output does not change when the guide is shifted by a constant, and
    the covariances (mean of products minus product of means) lose less precision around zero.
    """
    pixels = torch.from_numpy(np.require(guide, requirements=["C", "W"]))  # views, read-only arrays
    luma = pixels.to(torch.float32) @ torch.tensor(LUMA)  # (H, W)
    return luma.div_(255).sub_(0.5)[None]


def _box(x: torch.Tensor, r: int) -> torch.Tensor:
    """Mean over (2r + 1)^2 windows of an (N, h, w) map, edges replicated (keeps the size).

    Separable sums of shifted slices: several times faster than ``avg_pool2d`` on the CPU."""
    h, w = x.shape[-2:]
    padded = F.pad(x[None], (r, r, r, r), mode="replicate")[0]
    rows = padded[:, 0:h]
    for d in range(1, 2 * r + 1):
        rows = rows + padded[:, d:d + h]
    out = rows[:, :, 0:w]
    for d in range(1, 2 * r + 1):
        out = out + rows[:, :, d:d + w]
    return out / (2 * r + 1) ** 2


def _guide_statistics(low: torch.Tensor, r: int, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Window means (G, h, w) of the low-res guide and the inverse of its regularised window covariance,
    shaped (G, G, 1, h, w) to broadcast over classes. They depend only on the guide: once per call."""
    g, h, w = low.shape
    mean = _box(low, r)
    ii, jj = torch.triu_indices(g, g)
    upper = (_box(low[ii] * low[jj], r) - mean[ii] * mean[jj]).permute(1, 2, 0)  # G (G + 1) / 2 entries
    cov = low.new_empty((h, w, g, g))
    cov[..., ii, jj] = upper
    cov[..., jj, ii] = upper
    cov += eps * torch.eye(g)
    return mean, torch.linalg.inv(cov).permute(2, 3, 0, 1)[:, :, None]


def _guided_coefficients(p: torch.Tensor, low: torch.Tensor, mean_i: torch.Tensor, inv: torch.Tensor,
                         r: int) -> torch.Tensor:
    """Window-averaged ``a`` (G, k, h, w) and ``b`` (k, h, w) of the per-window least-squares fit
    ``p ~ a . I + b``, stacked as ((G + 1) k, h, w)."""
    g = low.shape[0]
    mean_p = _box(p, r)  # (k, h, w)
    cov_ip = _box((low[:, None] * p[None]).flatten(0, 1), r).unflatten(0, (g, -1)) - mean_i[:, None] * mean_p
    a = (inv * cov_ip[None]).sum(1)  # (G, k, h, w); elementwise, so independent of the chunking
    b = mean_p - (a * mean_i[:, None]).sum(0)
    return _box(torch.cat([a.flatten(0, 1), b]), r)


def _guided_argmax(scores: torch.Tensor, candidates: torch.Tensor, guide: torch.Tensor,
                   radius: int = GUIDED_RADIUS, eps: float = GUIDED_EPS) -> tuple[torch.Tensor, torch.Tensor]:
    """Best guided-upsampled score and its class over the candidates (fast guided filter, He & Sun 2015).

    ``scores``: (C, h, w) low-res class scores; ``guide``: (G, H, W) float image at the output size
    (:func:`_guide_channels`: G = 1, the luma; bench.guided_upsampling_speed also times G = 3). Each
    candidate's scores are fitted, per (2r + 1)^2 low-res window, as an affine function ``a . I + b`` of
    the guide downsampled to (h, w); the window-averaged ``a`` and ``b`` are upsampled bilinearly and
    applied to the full-resolution guide. Candidates go through in chunks
    of ``GUIDED_CHUNK_VALUES`` full-resolution floats with a running best, so memory stays bounded;
    every step is per class, so the result does not depend on the chunking.
    """
    g, out_h, out_w = guide.shape
    h, w = scores.shape[-2:]
    low = guide if (out_h, out_w) == (h, w) else F.interpolate(guide[None], size=(h, w), mode="area")[0]
    mean_i, inv = _guide_statistics(low, radius, eps)
    sub = scores.index_select(0, candidates)
    chunk = max(1, int(GUIDED_CHUNK_VALUES // ((g + 1) * out_h * out_w)))
    best = label = None
    for start in range(0, len(candidates), chunk):
        # The filter commutes with adding a constant to p: centring each class keeps precision in the
        # covariances, and a flat score map comes out flat (a = 0) at exactly its value.
        p = sub[start:start + chunk]
        offset = p.mean((1, 2), keepdim=True)
        coef = _guided_coefficients(p - offset, low, mean_i, inv, radius).unflatten(0, (g + 1, -1))
        coef[g] += offset
        coef = resize_to(coef.flatten(0, 1)[None], (out_h, out_w))[0].unflatten(0, (g + 1, -1))
        refined = coef[g]  # (k, H, W), in place: b + a . I
        for i in range(g):
            refined.addcmul_(coef[i], guide[i])
        # Class by class: elementwise updates are much faster than a max over the class axis.
        for j, cls in enumerate(candidates[start:start + chunk].tolist()):
            if best is None:
                best, label = refined[j].clone(), torch.full((out_h, out_w), cls, dtype=torch.long)
            else:
                label.masked_fill_(refined[j] > best, cls)
                torch.maximum(best, refined[j], out=best)
    return best, label


def _bilinear_taps(n_out: int, n_in: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source indices and weight of the second tap, as F.interpolate(align_corners=False) uses them."""
    src = ((torch.arange(n_out, dtype=torch.float32) + 0.5) * (n_in / n_out) - 0.5).clamp(min=0)
    i0 = src.floor().long().clamp(max=n_in - 1)
    return i0, (i0 + 1).clamp(max=n_in - 1), src - i0


def _corner_winner_argmax(pixel_major: torch.Tensor, max_low: torch.Tensor, win_low: torch.Tensor,
                          out_h: int, out_w: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Bilinear argmax when many classes compete: each output pixel only considers the classes that win
    at the four low-res pixels it is interpolated from (cost independent of the number of classes).

    ``pixel_major`` is the (h * w, C) score matrix, ``max_low`` / ``win_low`` its (h, w) max and argmax.
    Where all four corners share one winner, that class also wins after interpolation (a convex
    combination keeps the inequalities) and its score is the interpolated low-res maximum: one channel to
    upsample. Only the pixels along class boundaries compare their corner classes explicitly.
    """
    h, w = win_low.shape
    c = pixel_major.shape[1]
    y0, y1, ly = _bilinear_taps(out_h, h)
    x0, x1, lx = _bilinear_taps(out_w, w)
    # The taps are (i, min(i + 1, n - 1)): whether a low-res 2x2 block (edge-replicated) has one winner
    # is decided once at low resolution, then looked up through the (y0, x0) corner.
    padded = F.pad(win_low[None, None].float(), (0, 1, 0, 1), mode="replicate")[0, 0]
    uniform_low = ((padded[:-1, :-1] == padded[:-1, 1:]) & (padded[:-1, :-1] == padded[1:, :-1])
                   & (padded[:-1, :-1] == padded[1:, 1:]))
    label = win_low.index_select(0, y0).index_select(1, x0)
    mixed = ~uniform_low.index_select(0, y0).index_select(1, x0)
    best = F.interpolate(max_low[None, None], size=(out_h, out_w), mode="bilinear", align_corners=False)[0, 0]
    iy, ix = torch.nonzero(mixed, as_tuple=True)
    if len(iy):
        ys, xs = (y0[iy], y1[iy]), (x0[ix], x1[ix])
        taps = torch.stack([yy * w + xx for yy in ys for xx in xs], 1)  # (n, 4) low-res pixel indices
        classes = win_low.reshape(-1)[taps]  # (n, 4) each corner's winner
        wy, wx = 1 - ly[iy], 1 - lx[ix]
        weights = torch.stack([wy * wx, wy * (1 - wx), (1 - wy) * wx, (1 - wy) * (1 - wx)], 1)  # (n, 4)
        # score of each corner class at each tap: (n, tap, class) in one gather
        values = pixel_major.reshape(-1).take(taps[:, :, None] * c + classes[:, None, :])
        interpolated = (values * weights[:, :, None]).sum(1)  # (n, class)
        sub_best, j = interpolated.max(1)
        best[iy, ix], label[iy, ix] = sub_best, classes.gather(1, j[:, None])[:, 0]
    return best, label
