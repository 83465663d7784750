"""ProLab outputs from pixel embeddings: property activations, class scores and the training loss.

With ``e`` a pixel embedding, ``c_k`` the K cluster centres and ``m_c`` the class multi-hot rows:

    p_k = sigmoid(<e, c_k / |c_k|> / T)            (T = 0.04 by default)
    s_c = cos(p, m_c) = <p / |p|, m_c / |m_c|>
    loss = 1 - cos(p, m_y), averaged over pixels whose label is not ignored

Embeddings may be ``(N, D)`` or ``(B, D, H, W)``; outputs keep the layout, with D replaced by K
(activations) or C (class scores). All functions accept torch tensors or NumPy arrays and return the
same kind.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

DEFAULT_TEMPERATURE = 0.04
IGNORE_INDEX = 255


def _as_tensor(x) -> tuple[torch.Tensor, bool]:
    if isinstance(x, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(x)), True
    return x, False


def _back(x: torch.Tensor, was_numpy: bool):
    return x.detach().cpu().numpy() if was_numpy else x


def _project(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Contract the channel axis of (N, D) or (B, D, H, W) with ``weight`` (K, D)."""
    weight = weight.to(dtype=x.dtype, device=x.device)
    if x.dim() == 2:
        return x @ weight.T
    if x.dim() == 4:
        return torch.einsum("bdhw,kd->bkhw", x, weight)
    raise ValueError(f"expected (N, D) or (B, D, H, W), got shape {tuple(x.shape)}")


def property_logits(embeddings, centers, temperature: float = DEFAULT_TEMPERATURE):
    """``<e, c_k/|c_k|> / T`` for every property (before the sigmoid)."""
    e, was_np = _as_tensor(embeddings)
    c, _ = _as_tensor(centers)
    c = F.normalize(c.to(e.dtype), dim=1)
    return _back(_project(e, c) / temperature, was_np)


def property_activations(embeddings, centers, temperature: float = DEFAULT_TEMPERATURE):
    """Property activations ``sigmoid(<e, c_k/|c_k|> / T)``."""
    e, was_np = _as_tensor(embeddings)
    return _back(torch.sigmoid(property_logits(e, centers, temperature)), was_np)


def class_scores_from_activations(activations, multihot):
    """Cosine between each pixel's activation vector and each class's multi-hot row.

    Rows of ``multihot`` that are all zero (e.g. an ignore class) score 0.
    """
    p, was_np = _as_tensor(activations)
    m, _ = _as_tensor(multihot)
    m = F.normalize(m.to(p.dtype), dim=1)
    dim = 1
    p = F.normalize(p, dim=dim)
    return _back(_project(p, m), was_np)


def property_class_scores(embeddings, centers, multihot, temperature: float = DEFAULT_TEMPERATURE):
    """Class scores ``cos(p, m_c)`` straight from pixel embeddings."""
    return class_scores_from_activations(
        property_activations(embeddings, centers, temperature), multihot)


def prolab_loss(embeddings: torch.Tensor, labels: torch.Tensor, centers: torch.Tensor,
                multihot: torch.Tensor, temperature: float = DEFAULT_TEMPERATURE,
                ignore_index: int = IGNORE_INDEX, class_balance: float = 0.0,
                upsample: bool = False) -> torch.Tensor:
    """Mean of ``1 - cos(p, m_y)`` over non-ignored pixels.

    ``embeddings`` is (B, D, h, w), ``labels`` (B, H, W) with class indices into ``multihot`` (C, K);
    without ``upsample`` (h, w) must equal (H, W). With ``upsample`` the property logits are bilinearly
    upsampled to (H, W) before the sigmoid: the same as upsampling the embeddings (the logits are
    linear in them), with K instead of D channels and the projection at the low resolution.
    ``class_balance`` > 0 weights pixels by :func:`class_balance_weights` (0: plain mean, the
    paper's loss). Returns 0 (with a gradient path) when every pixel is ignored.
    """
    if upsample and embeddings.shape[-2:] != labels.shape[-2:]:
        logits = F.interpolate(property_logits(embeddings, centers, temperature), size=labels.shape[-2:],
                               mode="bilinear", align_corners=False)
        p = torch.sigmoid(logits)
    else:
        p = property_activations(embeddings, centers, temperature)  # B K H W
    valid = labels != ignore_index
    if not bool(valid.any()):
        return embeddings.sum() * 0.0
    p = p.permute(0, 2, 3, 1)[valid]  # N K
    y = labels[valid].long()
    return weighted_mean(cosine_distance_to_rows(p, multihot, y), y, class_balance)


def cosine_distance_to_rows(activations: torch.Tensor, multihot: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Per-pixel ``1 - cos(p, m_y)`` of (N, K) activations against their labels' rows of ``multihot``:
    the ProLab loss term, one definition for the dense and the point losses."""
    return 1.0 - F.cosine_similarity(activations, multihot.to(activations.dtype)[labels], dim=1, eps=1e-8)


def anchor_loss(embeddings: torch.Tensor, reference: torch.Tensor, centers: torch.Tensor,
                temperature: float = DEFAULT_TEMPERATURE) -> torch.Tensor:
    """Mean over every pixel (labelled or not) of ``1 - cos(p, p_ref)``: the ProLab loss's form with a
    reference model's property activations as the target. (B, D, h, w) embeddings and reference.

    Class scores of words the model never trained on are cosines with the property activations, so
    keeping the activations' direction near a reference model's keeps its words-to-properties bridge
    while the training loss reshapes the trained classes."""
    p = property_activations(embeddings, centers, temperature)
    return activation_distance(p, property_activations(reference.to(p.dtype), centers, temperature)).mean()


def activation_distance(activations: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per-pixel ``1 - cos(p, p_ref)`` of two (B, K, h, w) property activation maps: (B, h, w).
    The term :func:`anchor_loss` averages and ``bench.activation_drift`` reports."""
    return 1.0 - F.cosine_similarity(activations, reference, dim=1, eps=1e-8)


def class_balance_weights(labels: torch.Tensor, power: float) -> torch.Tensor:
    """Per-pixel weights ``n_c ** -power`` (``n_c``: pixels of the pixel's class in ``labels``).

    Normalised to mean 1, so ``power`` = 0 is the plain mean and 1 gives every class present the
    same total weight. Counting within the batch needs no pass over the dataset and follows
    whatever the sampler draws.
    """
    counts = torch.bincount(labels.reshape(-1).long()).to(torch.float32)
    w = counts[labels.long()].pow(-float(power))
    return w / w.mean()


def weighted_mean(per_pixel: torch.Tensor, labels: torch.Tensor, class_balance: float = 0.0) -> torch.Tensor:
    """Mean of per-pixel losses, class-balanced by ``class_balance`` (see :func:`class_balance_weights`)."""
    if not class_balance:
        return per_pixel.mean()
    return (per_pixel * class_balance_weights(labels, class_balance)).mean()


def sample_label_points(labels: torch.Tensor, n: int, class_balance: float = 0.0,
                        ignore_index: int = IGNORE_INDEX,
                        generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` labelled pixel positions per image, drawn with replacement.

    A pixel is drawn with probability proportional to ``n_c ** -class_balance`` (``n_c``: pixels of its
    class in the batch), so the plain mean over the points estimates the class-balanced mean of
    :func:`weighted_mean` while rare classes get most of the points. Returns ``(index, valid)``, both
    (B, n): flat indices into each image's H x W grid and False where an image has no labelled pixel.
    """
    b = labels.shape[0]
    flat = labels.reshape(b, -1).long()
    valid = flat != ignore_index
    safe = torch.where(valid, flat, 0)
    counts = torch.bincount(safe.reshape(-1), weights=valid.reshape(-1).to(torch.float32))
    per_class = counts.clamp(min=1).pow(-float(class_balance))  # one weight per class, then one lookup
    weights = per_class[safe] * valid
    has_any = valid.any(dim=1)
    weights[~has_any] = 1.0  # multinomial needs mass; those rows' points are all marked invalid
    index = torch.multinomial(weights, n, replacement=True, generator=generator)
    return index, has_any[:, None].expand(b, n).clone()


def gather_points(maps: torch.Tensor, index: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Values of ``maps`` (B, D, h, w) at flat pixel indices of an (H, W) grid, bilinearly interpolated
    exactly as ``F.interpolate(maps, size, mode="bilinear", align_corners=False)`` would give them.
    Returns (B, n, D). Costs n points instead of a full H x W map."""
    height, width = size
    y = torch.div(index, width, rounding_mode="floor").to(maps.dtype)
    x = (index % width).to(maps.dtype)
    grid = torch.stack([(x + 0.5) / width * 2 - 1, (y + 0.5) / height * 2 - 1], dim=-1)[:, None]  # B 1 n 2
    out = F.grid_sample(maps, grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out[:, :, 0].transpose(1, 2)


def point_samples(maps: torch.Tensor, labels: torch.Tensor, n: int, class_balance: float = 0.0,
                  ignore_index: int = IGNORE_INDEX,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``maps`` (B, D, h, w) at ``n`` labelled pixels per image of ``labels`` (B, H, W), drawn by
    :func:`sample_label_points` and read by :func:`gather_points`: ((N, D) values, (N,) labels), empty
    when no pixel is labelled."""
    index, valid = sample_label_points(labels, n, class_balance, ignore_index, generator)
    values = gather_points(maps, index, tuple(labels.shape[-2:]))[valid]
    return values, labels.reshape(labels.shape[0], -1).gather(1, index)[valid].long()


def prolab_point_loss(embeddings: torch.Tensor, labels: torch.Tensor, centers: torch.Tensor,
                      multihot: torch.Tensor, temperature: float = DEFAULT_TEMPERATURE, points: int = 8192,
                      class_balance: float = 0.0, class_ce_weight: float = 0.0, class_ce_scale: float = 16.0,
                      class_ce_present: bool = False, ignore_index: int = IGNORE_INDEX, generator: torch.Generator | None = None) -> torch.Tensor:
    """The ProLab loss scored at the labels' resolution on ``points`` sampled pixels per image.

    Embeddings (B, D, h, w) are interpolated at pixel positions of the (B, H, W) labels (as inference
    upsamples them), so one-pixel structures that a stride-4 grid drops are still scored, at a cost that
    does not grow with H x W. Points are drawn by :func:`sample_label_points` (class-balanced draws).
    ``class_ce_weight`` > 0 adds that weight x cross-entropy of ``class_ce_scale`` x the class scores
    ``cos(p, m_c)`` against the label: the cosine loss pulls a pixel towards its class's row, the
    cross-entropy also pushes it away from the rows of the classes it is confused with (the ranking
    that segmentation uses). ``class_ce_present`` limits that softmax to the classes labelled among the
    points (see :func:`pixel_loss`).
    """
    e, y = point_samples(embeddings, labels, points, class_balance, ignore_index, generator)
    if not len(y):
        return embeddings.sum() * 0.0
    return pixel_loss(e, y, centers, multihot, temperature, class_ce_weight, class_ce_scale, class_ce_present)


def pixel_loss(embeddings: torch.Tensor, labels: torch.Tensor, centers: torch.Tensor, multihot: torch.Tensor,
               temperature: float = DEFAULT_TEMPERATURE, class_ce_weight: float = 0.0,
               class_ce_scale: float = 16.0, class_ce_present: bool = False) -> torch.Tensor:
    """Mean of ``1 - cos(p, m_y)`` over (N, D) pixel embeddings with (N,) labels (none ignored), plus
    ``class_ce_weight`` x cross-entropy of ``class_ce_scale`` x the class scores (see
    :func:`prolab_point_loss`). With ``class_ce_present`` the softmax runs over the classes present in
    ``labels`` only: a pixel is pushed away from the classes it shares images with (what evaluation on a
    dataset's own classes ranks), not from every near-synonym of a merged label set (a CamVid sign and
    an ADE poster)."""
    p = property_activations(embeddings, centers, temperature)  # N K
    m = multihot.to(p.dtype)
    loss = cosine_distance_to_rows(p, m, labels).mean()
    if class_ce_weight > 0:
        if class_ce_present:
            present = torch.unique(labels)  # sorted
            scores = class_scores_from_activations(p, m[present])
            labels = torch.searchsorted(present, labels)
        else:
            scores = class_scores_from_activations(p, m)
        loss = loss + class_ce_weight * F.cross_entropy(class_ce_scale * scores, labels)
    return loss
