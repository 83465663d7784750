"""prolab.explore: sentence layouts, rankings, pixel lookup, class areas."""
import numpy as np
import pytest

from prolab.errors import ProLabError
from prolab.explore import (changed_fraction, class_areas, image_to_grid, image_top_properties,
                            pixel_top, sentence_layout)


def test_pca_layout_separates_two_groups():
    rng = np.random.default_rng(0)
    a = rng.normal(0, 0.05, (10, 16)) + np.eye(16)[0]
    b = rng.normal(0, 0.05, (10, 16)) + np.eye(16)[1]
    xy = sentence_layout(np.concatenate([a, b]), method="pca")
    assert xy.shape == (20, 2)
    ca, cb = xy[:10].mean(0), xy[10:].mean(0)
    spread = max(xy[:10].std(0).max(), xy[10:].std(0).max())
    assert np.linalg.norm(ca - cb) > 5 * spread
    with pytest.raises(ProLabError):
        sentence_layout(np.zeros((0, 4)))
    with pytest.raises(ProLabError):
        sentence_layout(a, method="tsne")


def test_rankings_and_pixel_lookup():
    act = np.zeros((4, 3, 5), np.float32)
    act[2] = 0.9
    act[1, 1, 4] = 1.0
    top = image_top_properties(act, 2)
    assert top.indices == [2, 1]
    at = pixel_top(act, 1, 4, k=2)
    assert at.indices == [1, 2] and at.values[0] == pytest.approx(1.0)
    with pytest.raises(ProLabError):
        pixel_top(act, 3, 0)
    assert image_to_grid(0, 0, (300, 500), (3, 5)) == (0, 0)
    assert image_to_grid(499, 299, (300, 500), (3, 5)) == (2, 4)
    assert image_to_grid(250, 150, (300, 500), (3, 5)) == (1, 2)
    with pytest.raises(ProLabError):
        image_to_grid(500, 0, (300, 500), (3, 5))


def test_class_areas_and_changes():
    lab = np.array([[0, 0, 1, -1]])
    areas, unknown = class_areas(lab, 3)
    assert areas.tolist() == [0.5, 0.25, 0.0] and unknown == 0.25
    assert changed_fraction(lab, np.array([[0, 2, 1, -1]])) == 0.25


def test_umap_layout_is_cached_on_disk(tmp_path, monkeypatch):
    import prolab.explore as ex

    calls = []

    def fake_umap(emb, seed):  # UMAP itself takes ~1 min to JIT; the cache is what is tested here
        calls.append(seed)
        return ex._pca_2d(emb)

    monkeypatch.setattr(ex, "umap_2d", fake_umap)
    emb = np.random.default_rng(1).normal(size=(12, 8)).astype(np.float32)
    assert ex.cached_layout(emb, "umap", cache_dir=tmp_path) is None
    first = sentence_layout(emb, "umap", cache_dir=tmp_path)
    second = sentence_layout(emb, "umap", cache_dir=tmp_path)
    assert calls == [0] and np.array_equal(first, second)
    assert np.array_equal(ex.cached_layout(emb, "umap", cache_dir=tmp_path), first)
    assert len(list((tmp_path / "layouts").glob("*.npy"))) == 1
    sentence_layout(emb + 1e-3, "umap", cache_dir=tmp_path)
    assert len(calls) == 2


def test_real_umap_layout_separates_two_groups(tmp_path):
    """The real UMAP (not a stand-in): two well-separated groups of sentences stay apart in 2-D."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(20, 16)) + 5.0
    b = rng.normal(size=(20, 16)) - 5.0
    emb = np.concatenate([a, b]).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    xy = sentence_layout(emb, "umap", cache_dir=tmp_path)
    assert xy.shape == (40, 2) and np.isfinite(xy).all()
    ca, cb = xy[:20].mean(0), xy[20:].mean(0)
    spread = max(np.linalg.norm(xy[:20] - ca, axis=1).mean(), np.linalg.norm(xy[20:] - cb, axis=1).mean())
    assert np.linalg.norm(ca - cb) > 2 * spread
