"""Guided upsampling in ``segment(..., guide=image)``: the fast guided filter (He & Sun 2015) on the image's luma."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import prolab.inference as inference
from prolab.errors import ProLabError
from prolab.inference import segment

DARK, BRIGHT = (40, 60, 30), (230, 210, 190)  # different luma: the gray guide sees the edge


def edge_image(h: int, w: int, edge: int) -> np.ndarray:
    """Dark columns left of ``edge``, bright from ``edge`` on."""
    image = np.empty((h, w, 3), np.uint8)
    image[:, :edge], image[:, edge:] = DARK, BRIGHT
    return image


def textured(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def reference_gray_filter(image: np.ndarray, p: torch.Tensor, r: int, eps: float) -> torch.Tensor:
    """He & Sun's fast guided filter written out plainly (gray guide, avg_pool windows, float64): (C, H, W)."""
    def box(x):
        return F.avg_pool2d(F.pad(x, (r, r, r, r), mode="replicate"), 2 * r + 1, stride=1)
    gray = torch.from_numpy(image).double() @ torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64) / 255
    full = gray[None, None]
    low = F.interpolate(full, size=p.shape[-2:], mode="area")
    p = p[None].double()
    mean_i, mean_p = box(low), box(p)
    a = (box(low * p) - mean_i * mean_p) / (box(low * low) - mean_i ** 2 + eps)
    b = mean_p - a * mean_i
    up = lambda x: F.interpolate(box(x), size=image.shape[:2], mode="bilinear", align_corners=False)
    return (up(a) * full + up(b))[0]


def test_without_a_guide_the_bilinear_path_is_unchanged():
    torch.manual_seed(0)
    scores = torch.rand(20, 12, 10)
    scores[3:] -= 1.0  # classes 0..2 win: the exact candidate path
    expected = F.interpolate(scores[None], size=(47, 39), mode="bilinear", align_corners=False)[0].argmax(0)
    np.testing.assert_array_equal(segment(scores, (47, 39), guide=None), expected.numpy())
    np.testing.assert_array_equal(segment(scores, (47, 39)), expected.numpy())
    np.testing.assert_array_equal(segment(scores, (12, 10)), scores.argmax(0).numpy())


@pytest.mark.parametrize("edge", [13, 14, 18])
def test_the_class_boundary_snaps_to_the_image_edge(edge):
    """Low-res scores switch class at the cell boundary nearest the edge, which lies 1-2 pixels inside a
    low-res cell: bilinear puts the boundary halfway between cell centres, the guide on the edge."""
    h, w, scale = 8, 8, 4
    cut = round(edge / scale)  # the low-res column where the scores switch class
    scores = torch.full((3, h, w), 0.1)
    scores[0, :, :cut], scores[1, :, cut:] = 0.9, 0.9
    truth = np.broadcast_to(np.where(np.arange(w * scale) < edge, 0, 1), (h * scale, w * scale))
    guided = segment(scores, (h * scale, w * scale), guide=edge_image(h * scale, w * scale, edge))
    plain = segment(scores, (h * scale, w * scale))
    wrong_columns = lambda labels: int((labels != truth).any(0).sum())
    assert wrong_columns(guided) == 0
    assert wrong_columns(plain) >= 1


def test_flat_scores_give_the_bilinear_labels():
    """The filter keeps a constant map constant: near-tied flat classes keep their order at every pixel,
    even when every class is refined (through ``segment`` only the top class would be a candidate)."""
    values = torch.tensor([0.5000, 0.5003, 0.4998, 0.5001, 0.3])
    scores = values[:, None, None].expand(5, 6, 9).contiguous()
    image = textured(24, 36)
    plain = segment(scores, (24, 36))
    assert (plain == 1).all()
    np.testing.assert_array_equal(segment(scores, (24, 36), guide=image), plain)
    guide = inference._guide_channels(image)
    best, label = inference._guided_argmax(scores, torch.arange(5), guide)
    np.testing.assert_array_equal(label.numpy(), plain)
    torch.testing.assert_close(best, torch.full_like(best, 0.5003), rtol=0, atol=1e-6)


def test_a_flat_map_keeps_its_value_under_the_unknown_threshold():
    value = 0.6173
    scores = torch.stack([torch.full((10, 7), value), torch.full((10, 7), 0.2), torch.rand(10, 7) * 0.1])
    image = textured(37, 29, seed=3)
    assert (segment(scores, (37, 29), unknown_threshold=value - 1e-5, guide=image) == 0).all()
    assert (segment(scores, (37, 29), unknown_threshold=value + 1e-5, guide=image) == -1).all()


@pytest.mark.parametrize("guide, message", [
    (np.zeros((16, 16), np.uint8), r"\(H, W, 3\)"),
    (np.zeros((16, 16, 4), np.uint8), r"\(H, W, 3\)"),
    (np.zeros((16, 16, 1), np.uint8), r"\(H, W, 3\)"),
    (np.zeros((16, 16, 3), np.float32), "uint8"),
    (np.zeros((16, 16, 3), np.uint16), "uint8"),
    (np.zeros((15, 16, 3), np.uint8), "15x16 but the output size is 16x16"),
    (np.zeros((16, 16, 3), np.uint8).tolist(), "numpy array"),
])
def test_a_bad_guide_is_refused(guide, message):
    with pytest.raises(ProLabError, match=message):
        segment(torch.rand(3, 4, 4), (16, 16), guide=guide)


def test_chunked_candidates_match_all_at_once(monkeypatch):
    rng = np.random.default_rng(0)
    classes, h, w, out = 45, 16, 16, (64, 64)
    winner = rng.permutation(np.arange(h * w) % 40).reshape(h, w)  # each of classes 0..39 wins somewhere
    scores = torch.from_numpy(rng.random((classes, h, w)).astype(np.float32) * 0.3)
    scores.view(classes, -1)[torch.from_numpy(winner.ravel()), torch.arange(h * w)] += 0.5
    image = textured(*out, seed=1)
    threshold = 0.55
    calls = []
    coefficients = inference._guided_coefficients
    monkeypatch.setattr(inference, "_guided_coefficients", lambda p, *a: calls.append(len(p)) or coefficients(p, *a))
    monkeypatch.setattr(inference, "GUIDED_CHUNK_VALUES", 10**12)
    at_once = segment(scores, out, guide=image), segment(scores, out, threshold, guide=image)
    assert calls == [40, 40]
    monkeypatch.setattr(inference, "GUIDED_CHUNK_VALUES", 3 * 2 * out[0] * out[1])  # 3 classes per chunk
    calls.clear()
    chunked = segment(scores, out, guide=image), segment(scores, out, threshold, guide=image)
    assert calls == [3] * 13 + [1] + [3] * 13 + [1]
    assert len(np.unique(at_once[0])) > 30 and 0.05 < (at_once[1] == -1).mean() < 0.95
    np.testing.assert_array_equal(chunked[0], at_once[0])
    np.testing.assert_array_equal(chunked[1], at_once[1])


def test_the_filter_is_he_and_suns():
    """Best score and label agree with the plain formula (up to float rounding)."""
    torch.manual_seed(1)
    scores = torch.rand(6, 12, 10) * 0.4 + 0.3
    image = textured(47, 39, seed=2)
    expected = reference_gray_filter(image, scores, inference.GUIDED_RADIUS, inference.GUIDED_EPS)
    best, label = inference._guided_argmax(scores, torch.arange(6), inference._guide_channels(image))
    torch.testing.assert_close(best, expected.max(0).values.float(), rtol=0, atol=2e-6)
    assert (label == expected.argmax(0)).float().mean() > 0.999
    # through segment: only the low-res winners compete, so the labels are the reference's over those
    winners = scores.argmax(0).unique()
    restricted = expected[winners].argmax(0)
    assert (segment(scores, (47, 39), guide=image) == winners[restricted].numpy()).mean() > 0.999


def test_edge_cases():
    # the output at the scores' size: the guide still applies (boundary pixels are smoothed, a plain
    # argmax would keep their best score at 0.9)
    scores = torch.full((2, 16, 16), 0.1)
    scores[0, :, :8], scores[1, :, 8:] = 0.9, 0.9
    image = edge_image(16, 16, 7)
    assert (segment(scores, (16, 16), unknown_threshold=0.8) >= 0).all()
    guided = segment(scores, (16, 16), unknown_threshold=0.8, guide=image)
    assert (guided[:, 6:9] == -1).any() and (guided[:, :5] == 0).all() and (guided[:, 11:] == 1).all()
    # one pixel high, at low resolution and at the output
    row = torch.full((2, 1, 8), 0.1)
    row[0, :, :4], row[1, :, 4:] = 0.9, 0.9
    np.testing.assert_array_equal(segment(row, (1, 32), guide=edge_image(1, 32, 14))[0], np.arange(32) >= 14)
    np.testing.assert_array_equal(segment(row.expand(2, 4, 8), (1, 32), guide=edge_image(1, 32, 14))[0],
                                  np.arange(32) >= 14)
    # a single class, and a guide that is a non-contiguous, read-only view
    single = torch.full((1, 4, 4), 0.25)
    view = textured(7, 18)[:, ::-2]
    view.flags.writeable = False
    assert (segment(single, (7, 9), guide=view) == 0).all()
    assert (segment(single, (7, 9), unknown_threshold=0.2501, guide=view) == -1).all()


def test_only_pixels_near_a_class_boundary_are_refined():
    """Where one class wins every low-res pixel around, the guided labels and scores are the bilinear ones: a
    region whose scores nearly tie with another class's, following the image's texture, is not turned into
    that class (plain-words "boat" took MSRC-v2 water this way). Near the boundary the filter still acts."""
    torch.manual_seed(3)
    h, w, scale = 12, 16, 4
    texture = torch.rand(h, w)
    scores = torch.stack([0.5 + 0.05 * texture, 0.5 + 0.05 * texture.flip(1)])  # near-ties along the texture
    scores[0, :, :6] += 0.3  # class 0 clearly wins the left block
    scores[1, :, 6:] = torch.maximum(scores[1, :, 6:], scores[0, :, 6:] + 1e-3)  # class 1 wins the rest by a hair
    image = textured(h * scale, w * scale, seed=4)
    out = (h * scale, w * scale)
    guided, plain = segment(scores, out, guide=image), segment(scores, out)
    win = scores.argmax(0)
    band = inference._boundary_band(win, *out).numpy()
    assert band.any() and not band.all()
    np.testing.assert_array_equal(guided[~band], plain[~band])
    assert (guided[band] != plain[band]).any()  # the filter does act where classes meet
    # the whole filter, band or not, would have moved labels inside the near-tied region
    everywhere = inference._guided_argmax(scores, torch.arange(2), inference._guide_channels(image))[1].numpy()
    assert (everywhere[~band] != plain[~band]).any()
