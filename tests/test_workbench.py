"""prolab.workbench (the image side: one forward pass per image, its ImageCache) with the label side of
prolab.edit_session: cheap re-scoring with edited / extended spaces."""
import functools

import numpy as np
import pytest
import torch

from prolab import labelsets
from prolab.class_scorer import ClassScorer, ImageCache
from prolab.descriptions import DescriptionSet, description_changes
from prolab.edit_session import EditClass, EditSession, LabelSetChoice, Rebuild, SetNovel, UseModelProperties
from prolab.errors import ProLabError
from prolab.labelspace import LabelSpace, suggested_k
from prolab.model import untrained_model
from prolab.workbench import Network, Workbench


@pytest.fixture(scope="module")
def camvid():
    return labelsets.load("camvid_11")


@pytest.fixture(scope="module")
def model(camvid, encoder):
    space = LabelSpace.build(camvid.descriptions, encoder, k=suggested_k(camvid.descriptions.num_sentences))
    return untrained_model(space, input_size=64)


IMAGE = np.random.default_rng(0).integers(0, 255, (80, 120, 3), dtype=np.uint8)


def make_session(model, encoder, **kw):
    calls = []
    handle = model.register_forward_hook(lambda *a: calls.append(1))
    session = EditSession(model, encoder, "camvid_11", **kw)
    session.open_image(IMAGE)
    return session, calls, handle


@pytest.fixture()
def bench(model, encoder):
    session, calls, handle = make_session(model, encoder)
    session.forward_calls = calls
    yield session
    handle.remove()


def test_segment_once_then_rescore_without_forward(bench, camvid):
    first = bench.segment()
    assert first.labels.shape == (80, 120) and first.class_names == camvid.class_names
    assert first.activations.shape[0] == bench.model.label_space.k
    assert first.palette.tolist() == camvid.palette.tolist()
    bench.segment(threshold=1.01)
    assert (bench.last.labels == -1).all()  # nothing reaches a cosine above 1
    assert len(bench.forward_calls) == 1 and bench.last.seconds["forward"] == 0.0


def test_novel_category_scores_like_its_twin(model, encoder, camvid):
    # plain ProLab scores: a twin scores exactly like its original
    bench, calls, handle = make_session(model, encoder, prior=None)
    try:
        sky = camvid.descriptions["sky"]
        bench.segment()
        res = bench.apply(SetNovel(DescriptionSet({"heavens": sky})))
        assert res.class_names[-1] == "heavens" and res.num_novel == 1
        assert res.palette.shape == (12, 3) and tuple(res.palette[-1]) not in {tuple(c) for c in camvid.palette}
        i = res.class_names.index("sky")
        scores = bench.class_scores()
        np.testing.assert_allclose(scores[-1], scores[i], atol=1e-6)
        assert len(calls) == 1
        assert bench.apply(SetNovel()).class_names == camvid.class_names
        assert bench.changed_fraction() is not None
    finally:
        handle.remove()


ALIEN = ["A creature from another planet", "Glows with an eerie green light", "Has six thin tentacles",
         "Floats above the ground without wings"]


def test_novel_category_gets_the_open_set_credit(bench, model, encoder, camvid):
    bench.segment()
    novel = DescriptionSet({"heavens": camvid.descriptions["sky"], "alien": ALIEN})
    res = bench.apply(SetNovel(novel))
    space = bench.space()
    output = bench.workbench.forward(Network(model))
    scorer, cache = ClassScorer(model, space, encoder=encoder), ImageCache(IMAGE)
    scores, act = scorer.score(output, cache=cache)
    # a twin of a trained class is not novel; a class no trained class explains is
    credit = cache.credit[2]
    assert credit.credit.novel.tolist() == [False] * (len(camvid.class_names) + 1) + [True]
    assert credit.shares.shape[1:] == res.grid_shape
    plain, _ = ClassScorer(model, space, prior=None).score(output)
    np.testing.assert_allclose(scores[:-1].numpy(), plain[:-1].numpy(), atol=1e-6)  # known classes untouched
    assert (scores[-1] >= plain[-1] - 1e-6).all() and (scores[-1] > plain[-1] + 1e-3).any()
    assert scores.max() <= 1.0
    np.testing.assert_allclose(bench.class_scores(), scores.numpy(), atol=1e-6)  # what the session scored
    # only the threshold changes: the credited scores are the same, not credited twice
    bench.segment(threshold=0.0)
    np.testing.assert_allclose(bench.class_scores(), scores.numpy(), atol=1e-6)
    assert len(bench.forward_calls) == 1


def test_the_image_cache_keeps_what_the_output_alone_gives(model, encoder, camvid):
    """Edited classes over the same centres reuse the activations, the trained classes' scores are computed
    once per output, and the cached path gives the scores of the uncached one."""
    wb = Workbench()
    wb.set_image(IMAGE)
    output = wb.forward(Network(model))
    first = ClassScorer(model, model.label_space.edited(camvid.descriptions, encoder), encoder=encoder)
    edited = camvid.descriptions.with_category("road", ["Flat grey asphalt surface for cars"])
    second = ClassScorer(model, model.label_space.edited(edited, encoder), encoder=encoder)
    first.score(output, cache=wb.cache)
    act, trained = wb.cache.activations[1], wb.cache.trained
    scores, _ = second.score(output, cache=wb.cache)
    assert wb.cache.activations[1] is act and wb.cache.trained is trained
    torch.testing.assert_close(scores, second.score(output, second.prior_map(IMAGE))[0])
    assert wb.forward(Network(model)) is output
    assert wb.needs_forward(Network(model, size=96))  # another input size: another output


def test_edit_rebuild_and_switch_label_set(bench, camvid):
    edited = camvid.descriptions.with_category("road", ["Flat grey asphalt surface for cars"])
    bench.apply(EditClass("road", ["Flat grey asphalt surface for cars"]))
    changes = description_changes(camvid.descriptions, edited)
    assert [c.name for c in changes] == ["road"] and changes[0].added == ["Flat grey asphalt surface for cars"]
    assert bench.changes() == changes
    space = bench.space()
    assert space.class_matrix[space.class_index("road")].sum() == 1
    assert np.array_equal(space.centers, bench.model.label_space.centers)  # model's properties kept
    bench.apply(Rebuild(8))
    assert bench.mode == "own" and bench.space().k == 8 and bench.own_k == 8
    assert bench.segment().activations.shape[0] == 8
    bench.apply(UseModelProperties())
    assert bench.space().k == bench.model.label_space.k
    assert len(bench.segment(on=LabelSetChoice("msrc_23")).class_names) == 23
    assert len(bench.forward_calls) == 1
    with pytest.raises(ProLabError):
        bench.apply(Rebuild(10_000))


def test_no_image_is_a_clear_error(model, encoder):
    with pytest.raises(ProLabError, match="No image"):
        EditSession(model, encoder, "camvid_11").segment()
    with pytest.raises(ProLabError, match="No image"):
        Workbench().forward(Network(model))


def test_memory_per_user_is_bounded_and_released(model, encoder, camvid):
    """What one user's workbench holds: the image, the compact low-rank factors instead of the
    (D, h, w) embeddings, its ImageCache (activations, inverse norms, trained classes' scores, the open-set
    credit's map and shares), one result (int16 labels) and only the labels of the previous one; release()
    drops it all. Unedited label sets derive their space once for every user (SharedSpaces)."""
    from app.services.text import SharedSpaces
    from prolab.inference import LowRankFactors

    shared, load = SharedSpaces(), functools.cache(labelsets.load)  # as the app shares them
    session = EditSession(model, encoder, "camvid_11", shared_spaces=shared, label_sets=load)
    other = EditSession(model, encoder, "camvid_11", shared_spaces=shared, label_sets=load)
    rng = np.random.default_rng(1)
    first = session.segment(rng.integers(0, 255, (120, 160, 3), dtype=np.uint8))
    second = session.segment(on=LabelSetChoice("msrc_23"))
    wb = session.workbench
    out = wb.forward(Network(model))
    assert isinstance(out, LowRankFactors) and out.features.shape[0] < out.dim
    assert first.labels.dtype == np.int16
    d, h, w = out.shape
    assert not hasattr(second, "class_scores")  # plain data: the session derives them when asked
    assert session.class_scores().shape == (23, h, w)
    cache = wb.cache
    trained = model.label_space.num_classes  # the trained classes' scores, kept once per image
    assert cache.trained.shape == (trained, h, w)
    assert np.shares_memory(second.activations, cache.activations[1].numpy())  # counted once
    expected = (wb.image.nbytes + out.nbytes + second.labels.nbytes + second.activations.nbytes
                + first.labels.nbytes + 4 * h * w + 4 * trained * h * w)  # + the inverse norms
    # msrc_23 classes this camvid model never trained on get the open-set credit: + its ImageNet
    # sentence map (D, h/8, w/8 of the output grid) and one share map per credited class
    credit = cache.credit[2]
    novel, shares = credit.credit.novel, credit.shares
    assert shares.shape == (int(novel.sum()), h, w) and cache.prior_map.shape[0] == d
    expected += 4 * shares.nelement() + 4 * cache.prior_map.nelement()
    assert session.nbytes() == expected
    assert session.nbytes() < wb.image.nbytes + 4 * d * h * w  # less than the embeddings alone would take
    assert session.changed_fraction() is not None
    session.release()
    assert session.nbytes() == 0 and session.image is None and session.last is None
    other.select(LabelSetChoice("msrc_23"))
    assert other.space() is session.base_space()  # one derived space for every user of the shipped set


def test_memory_is_read_safely_while_the_owner_drops_what_it_holds():
    """The app's memory bound sums every user's bytes from other threads without their locks: a field the
    owner drops meanwhile is counted or not, never read half-way (an AttributeError in another user's action)."""
    from prolab.workbench import Segmentation
    from tests.builders import dropped_after_one_read

    cache = dropped_after_one_read(ImageCache, {"activations", "credit"})()
    cache.activations = ("key", torch.zeros(3, 4, 4), torch.zeros(16))
    assert cache.nbytes == (3 * 16 + 16) * 4
    wb = dropped_after_one_read(Workbench, {"cache", "last", "_previous"})()
    wb.image = np.zeros((4, 4, 3), np.uint8)
    wb.cache = ImageCache()
    wb.last = Segmentation(None, ["a"], np.zeros((1, 3), np.uint8), np.zeros((4, 4), np.int16), None, (4, 4))
    wb._previous = (["a"], np.zeros((4, 4), np.int16))
    assert wb.nbytes() == 48 + 32 + 32
