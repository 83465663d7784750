"""Shipped sentence maps (assets/layouts): the shipped label sets open without running UMAP, an
edited or custom label set never gets a shipped map, and the shipped maps match the shipped
descriptions (re-run ``python -m tools.make_layouts`` after editing them)."""
from __future__ import annotations

import numpy as np
import pytest

import prolab.explore as ex
from prolab import labelsets
from prolab.assets import DEFAULT_MODEL_DIR, LAYOUTS_DIR
from prolab.explore import cached_layout, sentence_layout, shipped_layout
from prolab.labelspace import LabelSpace
from tools import make_layouts

RERUN = "re-run `python -m tools.make_layouts`"


@pytest.fixture(scope="module")
def model_space():
    return LabelSpace.load(DEFAULT_MODEL_DIR / "labelspace")


@pytest.fixture
def no_umap(monkeypatch):
    """UMAP that must not run; ``calls`` lists the sizes it was asked for when allowed."""
    calls = []

    def umap_forbidden(emb, seed):
        calls.append(len(emb))
        raise AssertionError("UMAP ran for a label set whose map is shipped")

    monkeypatch.setattr(ex, "umap_2d", umap_forbidden)
    return calls


def _shipped_xy(name: str) -> np.ndarray:
    entry = next(e for e in make_layouts.read_index() if e["name"] == name)
    with np.load(LAYOUTS_DIR / entry["file"]) as z:
        return z["xy"].astype(np.float32)


def test_shipped_maps_are_up_to_date():
    """One map per shipped label set and per shipped model's label space, each keyed by the current
    sentences, encoder and UMAP settings; nothing stale or unused."""
    wanted = make_layouts.targets()
    assert {t.name for t in wanted} >= {k for k, _ in labelsets.available()} | {"model-default"}
    assert make_layouts.problems(wanted=wanted) == [], RERUN
    total = sum((LAYOUTS_DIR / e["file"]).stat().st_size for e in make_layouts.read_index())
    assert total < 400_000  # small: float16 maps and 4 floats per sentence


@pytest.mark.parametrize("key", ["ade20k_150", "camvid_11"])
def test_shipped_label_set_map_needs_no_umap(key, model_space, encoder, no_umap, tmp_path):
    """As the app asks for it: the label set over the default model's properties; empty user cache."""
    space = model_space.edited(labelsets.load(key).descriptions, encoder)
    quick = cached_layout(space.sentence_embeddings, "umap", cache_dir=tmp_path)
    assert quick is not None and np.array_equal(quick, _shipped_xy(key))
    xy = sentence_layout(space.sentence_embeddings, "umap", cache_dir=tmp_path)
    assert xy.shape == (len(space.sentences), 2) and xy.dtype == np.float32 and np.isfinite(xy).all()
    assert no_umap == [] and not (tmp_path / "layouts").exists()


def test_model_training_classes_map_is_shipped(model_space, no_umap, tmp_path):
    xy = sentence_layout(model_space.sentence_embeddings, "umap", cache_dir=tmp_path)
    assert np.array_equal(xy, _shipped_xy("model-default")) and no_umap == []


def test_same_sentences_encoded_elsewhere_still_match(model_space):
    """Another machine's encoder output differs in the last bits: the map is still found."""
    emb = model_space.sentence_embeddings
    noise = np.random.default_rng(0).normal(scale=1e-6, size=emb.shape).astype(np.float32)
    assert shipped_layout(emb + noise) is not None
    assert shipped_layout(emb, seed=1) is None  # other UMAP settings: not this map


def test_edited_or_custom_label_set_is_computed(model_space, encoder, monkeypatch, tmp_path):
    calls = []

    def fake_umap(emb, seed):
        calls.append(len(emb))
        return ex._pca_2d(emb)

    monkeypatch.setattr(ex, "umap_2d", fake_umap)
    ds = labelsets.load("camvid_11").descriptions
    sky = ds["sky"]
    edited = ds.with_category("sky", sky[:-1] + ["Pale blue with a few thin clouds near the horizon"])
    for variant in (edited, ds.without(["sky"]), ds.with_category("sky", list(reversed(sky)))):
        emb = model_space.edited(variant, encoder).sentence_embeddings
        assert shipped_layout(emb) is None and cached_layout(emb, "umap", cache_dir=tmp_path) is None
        sentence_layout(emb, "umap", cache_dir=tmp_path)
    assert len(calls) == 3  # each variant computed once (then cached for this user)


def test_broken_index_is_ignored(tmp_path, model_space):
    (tmp_path / "index.json").write_text("{not json", encoding="utf-8")
    assert shipped_layout(model_space.sentence_embeddings, layouts_dir=tmp_path) is None
    assert shipped_layout(model_space.sentence_embeddings, layouts_dir=tmp_path / "absent") is None
