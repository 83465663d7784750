"""prolab.workbench: one forward pass per image, cheap re-scoring with edited / extended spaces."""
import numpy as np
import pytest

from prolab import labelsets
from prolab.descriptions import DescriptionSet
from prolab.errors import ProLabError
from prolab.labelspace import LabelSpace
from prolab.workbench import Workbench, description_changes, suggested_k, untrained_model


@pytest.fixture(scope="module")
def camvid():
    return labelsets.load("camvid_11")


@pytest.fixture(scope="module")
def model(camvid, encoder):
    space = LabelSpace.build(camvid.descriptions, encoder, k=suggested_k(camvid.descriptions.num_sentences))
    return untrained_model(space, input_size=64)


@pytest.fixture()
def bench(model, encoder, camvid):
    calls = []
    handle = model.register_forward_hook(lambda *a: calls.append(1))
    wb = Workbench(model, encoder, camvid)
    rng = np.random.default_rng(0)
    wb.set_image(rng.integers(0, 255, (80, 120, 3), dtype=np.uint8))
    wb.forward_calls = calls
    yield wb
    handle.remove()


def test_segment_once_then_rescore_without_forward(bench, camvid):
    first = bench.segment()
    assert first.labels.shape == (80, 120) and first.class_names == camvid.class_names
    assert first.activations.shape[0] == bench.model.label_space.k
    assert first.palette.tolist() == camvid.palette.tolist()
    bench.segment(unknown_threshold=1.01)
    assert (bench.last.labels == -1).all()  # nothing reaches a cosine above 1
    assert len(bench.forward_calls) == 1 and bench.last.seconds["forward"] == 0.0


def test_novel_category_scores_like_its_twin(bench, camvid):
    bench.prior = None  # plain ProLab scores: a twin scores exactly like its original
    sky = camvid.descriptions["sky"]
    bench.set_novel(DescriptionSet({"heavens": sky}))
    res = bench.segment()
    assert res.class_names[-1] == "heavens" and res.num_novel == 1
    assert res.palette.shape == (12, 3) and tuple(res.palette[-1]) not in {tuple(c) for c in camvid.palette}
    i = res.class_names.index("sky")
    np.testing.assert_allclose(res.class_scores[-1], res.class_scores[i], atol=1e-6)
    assert len(bench.forward_calls) == 1
    assert bench.changed_fraction() is None  # first segmentation of this image
    bench.set_novel(DescriptionSet({}))
    assert bench.segment().class_names == camvid.class_names
    assert bench.changed_fraction() is not None


ALIEN = ["A creature from another planet", "Glows with an eerie green light", "Has six thin tentacles",
         "Floats above the ground without wings"]


def test_novel_category_gets_the_open_set_credit(bench, camvid):
    import torch

    plain_first = bench.segment()
    assert plain_first.credit is None  # every class of the label set was trained: nothing to credit
    bench.set_novel(DescriptionSet({"heavens": camvid.descriptions["sky"], "alien": ALIEN}))
    res = bench.segment()
    # a twin of a trained class is not novel; a class no trained class explains is
    assert res.credit.credit.novel.tolist() == [False] * (len(camvid.class_names) + 1) + [True]
    assert res.credit.shares.shape[1:] == res.grid_shape
    act = torch.from_numpy(res.activations)
    plain = res.scorer.score_activations(act, res.scorer.trained_scores(None, act), res.inv_norm).numpy()
    scores = res.class_scores
    np.testing.assert_allclose(scores[:-1], plain[:-1], atol=1e-6)  # known classes untouched
    assert (scores[-1] >= plain[-1] - 1e-6).all() and (scores[-1] > plain[-1] + 1e-3).any()
    assert scores.max() <= 1.0
    # only the threshold changes: the credited scores are reused, not credited twice
    again = bench.segment(unknown_threshold=0.0)
    np.testing.assert_allclose(again.class_scores, scores, atol=1e-6)
    assert len(bench.forward_calls) == 1


def test_edit_rebuild_and_switch_label_set(bench, camvid):
    edited = camvid.descriptions.with_category("road", ["Flat grey asphalt surface for cars"])
    bench.set_descriptions(edited)
    changes = description_changes(camvid.descriptions, edited)
    assert [c.name for c in changes] == ["road"] and changes[0].added == ["Flat grey asphalt surface for cars"]
    space = bench.space()
    assert space.class_matrix[space.class_index("road")].sum() == 1
    assert np.array_equal(space.centers, bench.model.label_space.centers)  # model's properties kept
    bench.rebuild(8)
    assert bench.mode == "own" and bench.space().k == 8
    assert bench.segment().activations.shape[0] == 8
    bench.use_model_properties()
    assert bench.space().k == bench.model.label_space.k
    bench.set_label_set(labelsets.load("msrc_23"))
    assert len(bench.segment().class_names) == 23
    assert len(bench.forward_calls) == 1
    with pytest.raises(ProLabError):
        bench.rebuild(10_000)


def test_no_image_is_a_clear_error(model, encoder, camvid):
    with pytest.raises(ProLabError, match="No image"):
        Workbench(model, encoder, camvid).segment()


def test_memory_per_user_is_bounded_and_released(model, encoder, camvid):
    """What one user's workbench holds: the image, the compact low-rank factors instead of the
    (D, h, w) embeddings, the trained classes' scores, one result (int16 labels) and only the labels of
    the previous one; release()
    drops it all. Unedited label sets derive their space once for every user (SharedSpaces)."""
    from prolab.inference import LowRankFactors
    from app.services.text import SharedSpaces

    shared = SharedSpaces()
    wb = Workbench(model, encoder, camvid, shared_spaces=shared)
    other = Workbench(model, encoder, camvid, shared_spaces=shared)
    rng = np.random.default_rng(1)
    wb.set_image(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8))
    first = wb.segment()
    wb.set_label_set(labelsets.load("msrc_23"))
    second = wb.segment()
    out = wb.forward()
    assert isinstance(out, LowRankFactors) and out.features.shape[0] < out.dim
    assert first.labels.dtype == np.int16
    d, h, w = out.shape
    assert second.scores is None  # class scores are re-derived from the activations when asked for
    assert second.class_scores.shape == (23, h, w)
    trained = wb.model.label_space.num_classes  # the trained classes' scores, kept once per image
    assert second.trained.shape == (trained, h, w)
    expected = (wb.image.nbytes + out.nbytes + second.labels.nbytes + second.activations.nbytes
                + first.labels.nbytes + 4 * h * w + 4 * trained * h * w)  # + the inverse norms
    # msrc_23 classes this camvid model never trained on get the open-set credit: + its ImageNet
    # sentence map (D, h/8, w/8 of the output grid) and one share map per credited class
    novel, shares = second.credit.credit.novel, second.credit.shares
    smap = wb._prior_map[1]
    assert shares.shape == (int(novel.sum()), h, w) and smap.shape[0] == d
    expected += 4 * shares.nelement() + 4 * smap.nelement()
    assert wb.nbytes() == expected
    assert wb.nbytes() < wb.image.nbytes + 4 * d * h * w  # less than the embeddings alone would take
    assert wb.changed_fraction() is not None
    wb.release()
    assert wb.nbytes() == 0 and wb.image is None and wb.last is None
    other.set_label_set(labelsets.load("msrc_23"))
    assert other.space() is wb.base_space() or other.space() is shared.get_or_build(
        model, other.descriptions, lambda: None)
