import numpy as np
import pytest
import torch

from prolab.scoring import (class_balance_weights, gather_points, pixel_loss, property_activations,
                            property_class_scores, prolab_loss, prolab_point_loss, sample_label_points)


def _numpy_reference(e, centers, multihot, T):
    c = centers / np.linalg.norm(centers, axis=1, keepdims=True)
    p = 1.0 / (1.0 + np.exp(-(e @ c.T) / T))
    m = multihot / np.linalg.norm(multihot, axis=1, keepdims=True)
    s = (p / np.linalg.norm(p, axis=1, keepdims=True)) @ m.T
    return p, s


@pytest.fixture
def setup():
    rng = np.random.default_rng(0)
    D, K, C = 16, 10, 4
    centers = rng.normal(size=(K, D)).astype(np.float32) * 3
    multihot = (rng.random((C, K)) < 0.4).astype(np.float32)
    multihot[:, 0] = 1
    e = (rng.normal(size=(50, D)) * 0.2).astype(np.float32)
    return e, centers, multihot


@pytest.mark.parametrize("T", [0.04, 0.01, 1.0])
def test_flat_layout_matches_numpy(setup, T):
    e, centers, multihot = setup
    p_ref, s_ref = _numpy_reference(e.astype(np.float64), centers.astype(np.float64), multihot, T)
    p = property_activations(e, centers, T)
    s = property_class_scores(e, centers, multihot, T)
    assert isinstance(p, np.ndarray) and p.shape == (50, 10) and s.shape == (50, 4)
    np.testing.assert_allclose(p, p_ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(s, s_ref, rtol=1e-4, atol=1e-5)


def test_image_layout_matches_flat(setup):
    e, centers, multihot = setup
    img = torch.from_numpy(e[:48].reshape(2, 4, 6, 16)).permute(0, 3, 1, 2)  # B D H W
    s_img = property_class_scores(img, torch.from_numpy(centers), torch.from_numpy(multihot))
    assert isinstance(s_img, torch.Tensor) and s_img.shape == (2, 4, 4, 6)
    _, s_ref = _numpy_reference(e[:48].astype(np.float64), centers.astype(np.float64), multihot, 0.04)
    np.testing.assert_allclose(s_img.permute(0, 2, 3, 1).reshape(48, 4).numpy(), s_ref, rtol=1e-4, atol=1e-5)


def test_loss_matches_definition_and_masks_ignored_pixels(setup):
    e, centers, multihot = setup
    emb = torch.from_numpy(e[:12].reshape(1, 3, 4, 16)).permute(0, 3, 1, 2).requires_grad_()
    labels = torch.tensor([[[0, 1, 2, 3], [255, 255, 1, 0], [2, 2, 255, 3]]])
    loss = prolab_loss(emb, labels, torch.from_numpy(centers), torch.from_numpy(multihot))
    p, _ = _numpy_reference(e[:12].astype(np.float64), centers.astype(np.float64), multihot, 0.04)
    flat = labels.reshape(-1).numpy()
    valid = flat != 255
    m = multihot[flat[valid]]
    cos = (p[valid] * m).sum(1) / (np.linalg.norm(p[valid], axis=1) * np.linalg.norm(m, axis=1))
    assert loss.item() == pytest.approx(float((1 - cos).mean()), rel=1e-4)
    loss.backward()
    grad = emb.grad.permute(0, 2, 3, 1).reshape(-1, 16)
    assert torch.all(grad[torch.from_numpy(~valid)] == 0) and grad[torch.from_numpy(valid)].abs().sum() > 0


def test_loss_all_ignored_is_zero_with_grad(setup):
    e, centers, multihot = setup
    emb = torch.zeros(1, 16, 2, 2, requires_grad=True)
    loss = prolab_loss(emb, torch.full((1, 2, 2), 255), torch.from_numpy(centers), torch.from_numpy(multihot))
    assert loss.item() == 0.0
    loss.backward()


def test_class_balance_weights_equalise_classes():
    labels = torch.tensor([0] * 90 + [1] * 9 + [2])
    plain = class_balance_weights(labels, 0.0)
    assert torch.allclose(plain, torch.ones(100))
    full = class_balance_weights(labels, 1.0)
    totals = [float(full[labels == c].sum()) for c in range(3)]
    assert totals == pytest.approx([100 / 3] * 3, rel=1e-5)  # every class the same total weight
    half = class_balance_weights(labels, 0.5)
    assert float(half.mean()) == pytest.approx(1.0, rel=1e-6)
    assert float(half[99] / half[0]) == pytest.approx(90 ** 0.5, rel=1e-5)  # rare pixel counts more


def test_class_balanced_loss_weights_rare_pixels(setup):
    e, centers, multihot = setup
    emb = torch.from_numpy(e[:12].reshape(1, 3, 4, 16)).permute(0, 3, 1, 2)
    labels = torch.tensor([[[0, 0, 0, 0], [0, 0, 0, 0], [0, 0, 255, 3]]])
    c, m = torch.from_numpy(centers), torch.from_numpy(multihot)
    p, _ = _numpy_reference(e[:12].astype(np.float64), centers.astype(np.float64), multihot, 0.04)
    flat = labels.reshape(-1).numpy()
    valid = flat != 255
    mm = multihot[flat[valid]]
    per_pixel = 1 - (p[valid] * mm).sum(1) / (np.linalg.norm(p[valid], axis=1) * np.linalg.norm(mm, axis=1))
    w = np.where(flat[valid] == 3, 1.0, 1 / 10)  # power 1: ten pixels of class 0, one of class 3
    expected = float((per_pixel * w / w.mean()).mean())
    assert prolab_loss(emb, labels, c, m, class_balance=1.0).item() == pytest.approx(expected, rel=1e-4)
    assert prolab_loss(emb, labels, c, m).item() == pytest.approx(float(per_pixel.mean()), rel=1e-4)


def test_gather_points_equals_bilinear_upsampling():
    torch.manual_seed(0)
    maps = torch.randn(2, 5, 6, 8)
    index = torch.randint(0, 24 * 32, (2, 300))
    up = torch.nn.functional.interpolate(maps, size=(24, 32), mode="bilinear", align_corners=False)
    expected = up.reshape(2, 5, -1).gather(2, index[:, None].expand(2, 5, 300)).transpose(1, 2)
    torch.testing.assert_close(gather_points(maps, index, (24, 32)), expected, atol=1e-5, rtol=1e-5)


def test_point_sampling_is_class_balanced_and_skips_ignored():
    labels = torch.full((2, 10, 10), 255)
    labels[0, :9] = 0  # 90 pixels of class 0
    labels[0, 9] = 1  # 10 pixels of class 1 (a thin row)
    torch.manual_seed(0)
    index, valid = sample_label_points(labels, 4000, class_balance=1.0)
    assert valid[0].all() and not valid[1].any()  # image 2 has no labelled pixel
    drawn = labels[0].reshape(-1)[index[0]]
    assert not (drawn == 255).any()
    assert float((drawn == 1).float().mean()) == pytest.approx(0.5, abs=0.04)  # equal classes at power 1
    index, _ = sample_label_points(labels, 4000, class_balance=0.0)
    assert float((labels[0].reshape(-1)[index[0]] == 1).float().mean()) == pytest.approx(0.1, abs=0.03)


def test_point_loss_estimates_the_full_resolution_loss(setup):
    e, centers, multihot = setup
    c, m = torch.from_numpy(centers), torch.from_numpy(multihot)
    torch.manual_seed(1)
    emb = torch.randn(1, 16, 4, 4) * 0.2
    labels = torch.randint(0, 4, (1, 16, 16))
    labels[0, :2] = 255
    full = prolab_loss(emb, labels, c, m, upsample=True).item()
    points = prolab_point_loss(emb, labels, c, m, points=40000).item()
    assert points == pytest.approx(full, rel=0.02)
    assert prolab_point_loss(emb, torch.full((1, 16, 16), 255), c, m).item() == 0.0


def test_point_loss_cross_entropy_pushes_away_from_confused_classes(setup):
    """The class-score cross-entropy is the extra term, and its gradient lowers the rival's score."""
    _, centers, multihot = setup
    c, m = torch.from_numpy(centers), torch.from_numpy(multihot)
    torch.manual_seed(2)
    emb = (torch.randn(1, 16, 4, 4) * 0.2).requires_grad_()
    labels = torch.zeros(1, 8, 8, dtype=torch.long)
    torch.manual_seed(3)
    plain = prolab_point_loss(emb, labels, c, m, points=64)
    torch.manual_seed(3)
    with_ce = prolab_point_loss(emb, labels, c, m, points=64, class_ce_weight=1.0, class_ce_scale=16.0)
    p = property_activations(emb.detach().permute(0, 2, 3, 1).reshape(-1, 16), c)
    scores = property_class_scores(emb.detach().permute(0, 2, 3, 1).reshape(-1, 16), c, m)
    assert with_ce.item() > plain.item() > 0
    with_ce.backward()
    stepped = emb.detach() - 0.05 * emb.grad / emb.grad.abs().max()
    after = property_class_scores(stepped.permute(0, 2, 3, 1).reshape(-1, 16), c, m)
    margin = lambda s: (s[:, 0] - s[:, 1:].max(dim=1).values).mean()  # noqa: E731
    assert margin(after) > margin(scores) and p.shape == (16, 10)


def test_class_ce_over_present_classes_ignores_absent_synonyms():
    """With class_ce_present the softmax runs over the labelled classes only: an absent class whose row
    duplicates the true class's row (a near-synonym from another dataset) costs nothing, and the value is
    the cross-entropy over exactly the present classes' scores."""
    torch.manual_seed(0)
    c = torch.randn(6, 8)
    m = torch.tensor([[1, 1, 0, 0, 0, 0], [0, 0, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0], [0, 0, 0, 0, 1, 1]],
                     dtype=torch.float32)  # class 2 = class 0's row, never labelled
    emb = torch.randn(32, 8)
    y = torch.tensor([0, 3] * 16)
    every = pixel_loss(emb, y, c, m, class_ce_weight=1.0)
    present = pixel_loss(emb, y, c, m, class_ce_weight=1.0, class_ce_present=True)
    cosine = pixel_loss(emb, y, c, m)
    scores = property_class_scores(emb, c, m)[:, [0, 3]]
    expected = torch.nn.functional.cross_entropy(16.0 * scores, (y == 3).long())
    assert present.item() == pytest.approx(cosine.item() + expected.item(), rel=1e-5)
    assert every.item() > present.item() + 0.5  # the duplicate row halves class 0's softmax share
