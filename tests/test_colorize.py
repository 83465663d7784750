"""prolab.colorize: palettes, label colouring, blending, heatmaps, resizing."""
import numpy as np
import pytest

from prolab.colorize import UNKNOWN_COLOR, blend, colorize, heatmap, make_palette, resize_map
from prolab.errors import ProLabError


def test_palette_keeps_base_then_adds_distinct_colours():
    base = [[10, 20, 30], [40, 50, 60]]
    pal = make_palette(12, base)
    assert pal.shape == (12, 3) and pal.dtype == np.uint8
    assert pal[:2].tolist() == base
    assert len({tuple(c) for c in pal}) == 12
    assert np.array_equal(make_palette(12, base), pal)  # deterministic
    with pytest.raises(ProLabError):
        make_palette(3, [[0, 0, 300]])


def test_colorize_maps_unknown_and_rejects_missing_colours():
    pal = make_palette(3)
    labels = np.array([[0, 1], [2, -1]])
    rgb = colorize(labels, pal)
    assert rgb.shape == (2, 2, 3)
    assert rgb[0, 0].tolist() == pal[0].tolist() and rgb[1, 0].tolist() == pal[2].tolist()
    assert tuple(rgb[1, 1]) == UNKNOWN_COLOR
    with pytest.raises(ProLabError, match="no colour"):
        colorize(np.array([[3]]), pal)


def test_blend_and_heatmap():
    img = np.full((4, 4, 3), 200, np.uint8)
    col = np.zeros((4, 4, 3), np.uint8)
    assert blend(img, col, 0.0).tolist() == img.tolist()
    assert blend(img, col, 0.5)[0, 0].tolist() == [100, 100, 100]
    with pytest.raises(ProLabError):
        blend(img, col[:2], 0.5)
    v = np.linspace(0, 1, 16, dtype=np.float32).reshape(4, 4)
    h = heatmap(v, 0, 1)
    assert h.shape == (4, 4, 3) and h.dtype == np.uint8
    # inferno gets brighter with the value
    assert h[0, 0].sum() < h[2, 0].sum() < h[3, 3].sum()
    assert heatmap(np.ones((2, 2))).tolist() == heatmap(np.zeros((2, 2))).tolist()


def test_resize_map_nearest_keeps_labels():
    lab = np.array([[0, 1], [2, -1]], np.int64)
    big = resize_map(lab, (4, 4), nearest=True)
    assert big.dtype == np.int64 and set(np.unique(big)) == {-1, 0, 1, 2}
    assert resize_map(np.ones((2, 2), np.float32), (3, 5)).shape == (3, 5)
