"""Inference API: embedding an image (whole / sliding window), re-scoring, and label maps."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from prolab.errors import ProLabError
from prolab.class_scorer import model_class_scores, predict
from prolab.inference import (embed_image, embed_image_factored, embedding_activations, inverse_norms,
                              rescore_activations, score_embeddings, segment)
from prolab.input_shape import resized_shape
from prolab.labelspace import LabelSpace
from prolab.model import PropertySegmenter, SegmenterConfig
from prolab.scoring import property_class_scores, property_activations
from tests.builders import random_label_space

D = 16


def tiny_space(k: int = 10, classes: int = 5, seed: int = 0, dim: int = D) -> LabelSpace:
    return random_label_space(dim, k=k, classes=classes, seed=seed)


@pytest.fixture(scope="module")
def model() -> PropertySegmenter:
    torch.manual_seed(0)
    m = PropertySegmenter(SegmenterConfig(backbone_options={"width": 0.25}, embed_dim=D, decoder_channels=16,
                                          input_size=64), tiny_space())
    with torch.no_grad():  # larger outputs so that scores differ between pixels
        m.decode_head.classifier.weight.mul_(100)
    return m.eval()


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    return (np.random.default_rng(0).random((50, 70, 3)) * 255).astype(np.uint8)


def test_resized_shape_short_side_rule():
    assert resized_shape(50, 70, 64) == (64, 88)  # short side = size, long side rounded to a multiple of 4
    assert resized_shape(512, 512, 512) == (512, 512)
    assert resized_shape(100, 1000, 64) == (24, 256)  # long side capped at 4 x size
    with pytest.raises(ProLabError):
        resized_shape(10, 10, 8)


def test_embed_image_whole_and_slide_shapes(model, image):
    whole = embed_image(model, image)  # size defaults to config.input_size = 64
    assert whole.shape == (D, 16, 22) and whole.dtype == torch.float32 and not whole.requires_grad
    slide = embed_image(model, image, size=96, mode="slide", crop=64, stride=40)
    assert slide.shape == (D, 24, 34)  # 96 x 136
    assert torch.isfinite(slide).all()
    bigger = embed_image(model, image, size=128)
    assert bigger.shape == (D, 32, 45)


def test_single_window_slide_equals_whole(model):
    square = (np.random.default_rng(1).random((40, 40, 3)) * 255).astype(np.uint8)
    whole = embed_image(model, square, size=64)
    slide = embed_image(model, square, size=64, mode="slide", crop=64, stride=64)
    torch.testing.assert_close(slide, whole)


def test_slide_averages_overlapping_windows(model):
    img = (np.random.default_rng(2).random((64, 96, 3)) * 255).astype(np.uint8)
    slide = embed_image(model, img, size=64, mode="slide", crop=64, stride=32)
    x = model.normalize(torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255)
    with torch.no_grad():
        a, b = model(x[..., :64])["out"][0], model(x[..., 32:96])["out"][0]
    torch.testing.assert_close(slide[:, :, :8], a[:, :, :8])
    torch.testing.assert_close(slide[:, :, 8:16], (a[:, :, 8:] + b[:, :, :8]) / 2)
    torch.testing.assert_close(slide[:, :, 16:], b[:, :, 8:])


def test_embed_image_restores_training_mode_and_checks_args(model, image):
    model.train()
    try:
        embed_image(model, image)
        assert model.training
    finally:
        model.eval()
    with pytest.raises(ProLabError, match="mode"):
        embed_image(model, image, mode="tiles")
    with pytest.raises(ProLabError, match="crop"):
        embed_image(model, image, mode="slide", crop=50)
    with pytest.raises(ProLabError):
        embed_image(model, np.zeros((4, 4, 3), np.uint8))


def test_score_embeddings_matches_scoring_module(model, image):
    emb = embed_image(model, image)
    space = tiny_space(seed=3)  # a label space the model was not built with
    act, scores = score_embeddings(emb, space, 0.04)
    assert act.shape == (space.k, 16, 22) and scores.shape == (space.num_classes, 16, 22)
    torch.testing.assert_close(act, property_activations(emb[None], space.centers, 0.04)[0])
    torch.testing.assert_close(scores, property_class_scores(emb[None], space.centers, space.class_matrix, 0.04)[0])
    assert scores.std() > 1e-3
    torch.testing.assert_close(rescore_activations(act, space), scores)
    with pytest.raises(ProLabError, match="dimensional"):
        score_embeddings(emb, tiny_space(dim=D + 1))


def test_scoring_is_pure_and_kept_activations_rescore_exactly(model, image):
    emb = embed_image(model, image)
    space = tiny_space(seed=3)
    act1, scores1 = score_embeddings(emb, space, 0.04)
    act2, _ = score_embeddings(emb, space, 0.04)
    assert act2 is not act1 and torch.equal(act2, act1)  # nothing remembered between calls
    assert not torch.allclose(score_embeddings(emb, space, 0.05)[0], act1)
    # a caller that keeps the activations (and norms) re-scores edited classes exactly
    act = embedding_activations(emb, space, 0.04)
    inv = inverse_norms(act)
    edited = replace(space, class_names=space.class_names[:3], class_matrix=space.class_matrix[:3].copy())
    scores3 = rescore_activations(act, edited, inv)
    assert scores3.shape[0] == 3
    torch.testing.assert_close(scores3, property_class_scores(emb[None], edited.centers, edited.class_matrix, 0.04)[0])
    emb.mul_(0.5)  # an in-place change is always seen: there is no cache to go stale
    act4, scores4 = score_embeddings(emb, space, 0.04)
    torch.testing.assert_close(scores4, property_class_scores(emb[None], space.centers, space.class_matrix, 0.04)[0])
    assert not torch.allclose(scores4, scores1)


def test_embedding_is_reentrant_across_threads(model):
    """Concurrent forward passes of one shared model (as the app's users do) give each caller its own
    result, exactly as when run one after the other; nothing is left attached to the model."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(7)
    images = [(rng.random(shape) * 255).astype(np.uint8) for shape in [(64, 64, 3), (48, 96, 3)] * 4]
    reference = [embed_image_factored(model, im) for im in images]
    for _ in range(3):
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda im: embed_image_factored(model, im), images))
        for (emb, fac), (ref_emb, ref_fac) in zip(results, reference):
            torch.testing.assert_close(emb, ref_emb, rtol=0, atol=0)
            torch.testing.assert_close(fac.features, ref_fac.features, rtol=0, atol=0)
    assert not model.decode_head.classifier._forward_hooks and not model._forward_hooks


def test_segment_few_winners_is_exact_bilinear_argmax():
    torch.manual_seed(0)
    scores = torch.rand(20, 12, 10)
    scores[3:] -= 1.0  # only classes 0..2 can win anywhere: the exact candidate path
    full = F.interpolate(scores[None], size=(47, 39), mode="bilinear", align_corners=False)[0]
    labels = segment(scores, (47, 39))
    assert labels.shape == (47, 39) and labels.dtype == np.int32
    np.testing.assert_array_equal(labels, full.argmax(0).numpy())
    same = segment(scores, (12, 10))
    np.testing.assert_array_equal(same, scores.argmax(0).numpy())


def test_segment_with_many_competing_classes():
    import prolab.inference as inference

    torch.manual_seed(0)
    smooth = F.interpolate(torch.rand(1, 30, 6, 6), size=(24, 24), mode="bicubic", align_corners=False)[0]
    full = F.interpolate(smooth[None], size=(96, 96), mode="bilinear", align_corners=False)[0]
    winners = smooth.argmax(0)
    assert len(winners.unique()) > inference.MAX_CANDIDATES  # the four-corner scheme
    threshold = float(full.max(0).values.median())
    labels = segment(smooth, (96, 96), unknown_threshold=threshold)
    expected = full.argmax(0).numpy()
    agree = labels == expected
    assert agree[labels >= 0].mean() > 0.97
    assert abs((labels == -1).mean() - 0.5) < 0.05
    # Where the four low-res pixels an output pixel interpolates from share one winner, the result is
    # exact (a convex combination keeps the order), including the score used for the threshold.
    y0, y1, _ = inference._bilinear_taps(96, 24)
    x0, x1, _ = inference._bilinear_taps(96, 24)
    corners = [winners[yy][:, xx] for yy in (y0, y1) for xx in (x0, x1)]
    uniform = ((corners[0] == corners[1]) & (corners[0] == corners[2]) & (corners[0] == corners[3])).numpy()
    assert 0.1 < uniform.mean() < 0.9  # both kinds of pixels are exercised
    unthresholded = segment(smooth, (96, 96))
    np.testing.assert_array_equal(unthresholded[uniform], expected[uniform])
    above = full.max(0).values.numpy() >= threshold
    np.testing.assert_array_equal((labels >= 0)[uniform], above[uniform])


def test_segment_unknown_threshold():
    scores = torch.zeros(3, 4, 4)
    scores[0, :, :2] = 0.9
    scores[1, :, 2:] = 0.3
    labels = segment(scores, (8, 8), unknown_threshold=0.5)
    assert set(np.unique(labels)) == {-1, 0}
    assert (labels[:, :3] == 0).all() and (labels[:, 5:] == -1).all()
    assert set(np.unique(segment(scores, (8, 8)))) == {0, 1}
    with pytest.raises(ProLabError):
        segment(scores[0], (8, 8))


def test_category_model_scores_are_probabilities(image):
    model = PropertySegmenter(SegmenterConfig(backbone_options={"width": 0.25}, supervision="category",
                                              num_classes=3, decoder_channels=16, input_size=64)).eval()
    logits = embed_image(model, image)
    probs = model_class_scores(model, logits)
    torch.testing.assert_close(probs.sum(0), torch.ones(probs.shape[1:]))
    with pytest.raises(ProLabError, match="category model"):
        model_class_scores(model, logits, tiny_space())
    labels = predict(model, image)
    assert labels.shape == image.shape[:2] and labels.min() >= 0 and labels.max() < 3


def test_predict_with_model_and_new_label_space(model, image):
    labels = predict(model, image)
    assert labels.shape == (50, 70) and 0 <= labels.min() and labels.max() < 5
    other = predict(model, image, label_space=tiny_space(classes=7, seed=5), unknown_threshold=1.01)
    assert (other == -1).all()  # cosine scores never exceed 1


def test_low_rank_and_sparse_fast_paths_match_the_formula(model, image):
    emb, factors = embed_image_factored(model, image)  # whole mode gives the head's low-rank factors
    assert factors is not None and factors.shape == tuple(emb.shape)
    torch.testing.assert_close(factors.embeddings(), emb, atol=1e-4, rtol=1e-4)
    assert embed_image_factored(model, image, mode="slide", crop=64, stride=40)[1] is None
    space = tiny_space(seed=5)
    matrix = space.class_matrix.copy()
    matrix[0] = 0.0  # an all-zero row scores 0
    sparse = replace(space, class_matrix=matrix)
    dense = replace(space, class_matrix=np.random.default_rng(0).random(matrix.shape).astype(np.float32))
    for s in (sparse, dense):
        expected = property_class_scores(emb[None].double(), s.centers.astype(np.float64),
                                s.class_matrix.astype(np.float64), 0.04)[0].float()
        fast = score_embeddings(factors, s, 0.04)[1]  # factor path
        slow = score_embeddings(emb, s, 0.04)[1]  # full product path
        torch.testing.assert_close(fast, expected, atol=2e-5, rtol=1e-4)
        torch.testing.assert_close(slow, expected, atol=2e-5, rtol=1e-4)
    assert torch.all(score_embeddings(factors, sparse, 0.04)[1][0] == 0)
    torch.testing.assert_close(model_class_scores(model, factors), model_class_scores(model, emb),
                               atol=2e-5, rtol=1e-4)


@pytest.mark.parametrize("mode", ["whole", "slide"])
def test_flip_averages_the_mirrored_pass(model, image, mode):
    # 50 x 70 at short side 64 -> 64 x 88: not a multiple of 32, so the padding must stay on the right.
    opts = dict(size=64, mode=mode, crop=64, stride=40)
    plain = embed_image(model, image, **opts)
    mirrored = embed_image(model, np.ascontiguousarray(image[:, ::-1]), **opts)
    both = embed_image(model, image, flip=True, **opts)
    assert both.shape == plain.shape
    torch.testing.assert_close(both, (plain + mirrored.flip(-1)) / 2)
    assert not torch.allclose(both, plain)
    if mode == "whole":  # the averaged low-rank factors still reproduce the averaged embeddings
        # predict upsamples as the default quality step does: with the image as guide
        expected = segment(model_class_scores(model, (plain + mirrored.flip(-1)) / 2), image.shape[:2], guide=image)
        assert np.array_equal(predict(model, image, size=64, flip=True), expected)
        emb, factors = embed_image_factored(model, image, flip=True, **opts)
        torch.testing.assert_close(emb, both, rtol=0, atol=0)
        space = tiny_space(seed=3)
        torch.testing.assert_close(score_embeddings(factors, space, 0.04)[1],
                                   score_embeddings(both, space, 0.04)[1], atol=2e-5, rtol=1e-4)
