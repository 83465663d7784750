"""The one class scorer and the words-to-trained-classes bridge (prolab.class_scorer, prolab.alignment)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from prolab import labelsets
from prolab.alignment import Alignment, AlignmentSettings, explain_class, sentence_set_similarity
from prolab.class_scorer import ClassScorer, transport_scores
from prolab.descriptions import DescriptionSet
from prolab.images import load_image
from prolab.inference import embed_image_factored, segment
from prolab.model import PropertySegmenter

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO / "assets" / "models" / "default"
EXAMPLES = REPO / "assets" / "examples"


@pytest.fixture(scope="module")
def model():
    return PropertySegmenter.from_pretrained(DEFAULT_MODEL)


@pytest.fixture(scope="module")
def outputs(model):
    """(image, network output) of three example images, one forward pass each."""
    out = {}
    for name in ("chelsea.png", "astronaut.png", "rocket.jpg"):
        image = load_image(EXAMPLES / name)
        emb, factors = embed_image_factored(model, image)
        out[name] = (image, factors if factors is not None else emb)
    return out


def _mask(model, space, image, output):
    scorer = ClassScorer(model, space)
    return scorer.class_names, segment(scorer(output, scorer.prior_map(image)), image.shape[:2])


def _largest(names, labels) -> str:
    ids, counts = np.unique(labels[labels >= 0], return_counts=True)
    return names[int(ids[counts.argmax()])]


def test_sentence_set_similarity_is_one_for_the_same_sentences_and_ignores_order():
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((7, 8)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    owner = np.array([0, 0, 0, 1, 1, 2, 2])
    sim = sentence_set_similarity(emb, owner, 3, emb[::-1], owner[::-1], 3)
    np.testing.assert_allclose(np.diag(sim), 1.0, atol=1e-6)
    assert (sim[~np.eye(3, dtype=bool)] < 1.0).all()
    np.testing.assert_allclose(sim, sim.T, atol=1e-6)  # F1 is symmetric


def test_alignment_weights_novelty_and_transport():
    sim = np.array([[0.9, 0.2, 0.5],  # class 0 means trained 0
                    [0.3, 0.6, 0.49],  # class 1 best for trained 1, and nearly for trained 2
                    [0.1, 0.1, 0.1]])  # class 2 matches nothing: novel
    al = Alignment.from_similarity(["a", "b", "new"], ["t0", "t1", "t2"], sim,
                                   AlignmentSettings(temperature=0.02, weak_power=2.0, novel_below=0.55,
                                                     known_above=0.65))
    assert al.weight[0, 0] == 1.0 and al.weight[1, 1] == 1.0 and al.weight[0, 2] == 1.0
    assert al.weight[1, 2] == pytest.approx(np.exp(-0.01 / 0.02), rel=1e-5)  # a near-tie lends softly
    assert al.weight[2].sum() == 0.0 and al.weight[1, 0] == 0.0
    assert al.novelty.tolist() == [0.0, pytest.approx(0.5), 1.0]
    assert al.mutual[0, 0] and al.mutual[1, 1] and not al.mutual[0, 2]  # t2's best is a, a's best is t0
    trained = torch.tensor([[0.9, 0.1], [0.2, 0.8], [0.5, 0.7]])  # (T, N)
    out = transport_scores(trained, 3, al.pairs())
    # a: max(t0, t2 ** 2) (t2 is not a mutual match of a); b: max(t1, w * t2 ** 2); new: nothing
    torch.testing.assert_close(out[0], torch.maximum(trained[0], trained[2] ** 2))
    torch.testing.assert_close(out[1], torch.maximum(trained[1], al.weight[1, 2] * trained[2] ** 2))
    assert torch.all(out[2] == 0)


def test_transport_in_blocks_equals_the_dense_maximum(monkeypatch):
    """Blocks of pixels (reused buffers, a shorter last block) give exactly the dense max over pairs."""
    import prolab.class_scorer as cs

    monkeypatch.setattr(cs, "TRANSPORT_BLOCK_BYTES", 64 * 4 * 40)  # 40 pairs -> blocks of 64 pixels
    g = torch.Generator().manual_seed(3)
    trained = torch.rand(7, 64 * 5 + 13, generator=g) - 0.1  # some negatives: clamped to 0
    c, t = torch.randint(0, 9, (40,), generator=g), torch.randint(0, 7, (40,), generator=g)
    w = torch.rand(40, generator=g)
    p = torch.tensor([1.0, 2.0, 4.0, 0.5])[torch.randint(0, 4, (40,), generator=g)]
    expected = torch.zeros(9, trained.shape[1])
    for ci, ti, wi, pi in zip(c.tolist(), t.tolist(), w.tolist(), p.tolist()):
        expected[ci] = torch.maximum(expected[ci], wi * trained[ti].clamp(min=0) ** pi)
    torch.testing.assert_close(transport_scores(trained, 9, (c, t, w, p)), expected)


def test_trained_classes_under_other_names_score_like_the_trained_classes(model, outputs, encoder):
    """The model's own sentences given as descriptions under other names score exactly like the
    trained classes, and opaque ids score exactly like real names."""
    trained = model.label_space
    pick = ["person", "sky", "car", "road", "building", "cat", "floor", "tree"]
    given = trained.descriptions().subset(pick)
    renamed = DescriptionSet({f"class_{i:02d}": list(given[c]) for i, c in enumerate(pick)})
    for image, output in outputs.values():
        ref = trained.select([trained.class_index(c) for c in pick], pick)
        names, expected = _mask(model, ref, image, output)
        assert names == pick
        for ds in (given, renamed):
            got_names, got = _mask(model, trained.edited(ds, encoder), image, output)
            assert got_names == list(ds)
            np.testing.assert_array_equal(got, expected)


def test_opaque_ids_score_like_names_for_another_label_set(model, outputs, encoder):
    camvid = labelsets.load("camvid_11").descriptions
    renamed = DescriptionSet({f"class_{i:02d}": list(camvid[c]) for i, c in enumerate(camvid)})
    image, output = outputs["rocket.jpg"]
    a = ClassScorer(model, model.label_space.edited(camvid, encoder))
    b = ClassScorer(model, model.label_space.edited(renamed, encoder))
    np.testing.assert_array_equal(a.alignment.weight, b.alignment.weight)
    np.testing.assert_array_equal(a.alignment.novelty, b.alignment.novelty)
    torch.testing.assert_close(a(output, a.prior_map(image)), b(output, b.prior_map(image)))


def test_a_label_set_without_the_trained_class_gives_its_pixels_to_the_nearest_class(model, outputs, encoder):
    """The cat photo under ADE20K-150 (which has "animal", no "cat"): "animal" is the largest class. The
    astronaut under Cityscapes-19: the pixels the trained classes call "person" are "person" (not "rider")."""
    image, output = outputs["chelsea.png"]
    space = model.label_space.edited(labelsets.load("ade20k_150").descriptions, encoder)
    names, labels = _mask(model, space, image, output)
    assert _largest(names, labels) == "animal"

    image, output = outputs["astronaut.png"]
    own_names, own = _mask(model, model.label_space, image, output)
    person = own == own_names.index("person")
    assert person.mean() > 0.3
    space = model.label_space.edited(labelsets.load("cityscapes_19").descriptions, encoder)
    names, labels = _mask(model, space, image, output)
    assert (labels[person] == names.index("person")).mean() > 0.95
    assert (labels == names.index("rider")).mean() < 0.01


def test_pedestrian_from_its_sentences_aligns_to_person(model, encoder):
    space = model.label_space.edited(labelsets.load("camvid_11").descriptions, encoder)
    al = ClassScorer(model, space).alignment
    i = space.class_names.index("pedestrian")
    assert al.aligned(i, 1)[0][0] == "person"
    assert ("person", 1.0) in al.receives(i)
    ex = explain_class(space, al, i)
    assert ex.trained[0][0] == "person" and 0 < ex.trained[0][1] < 1
    assert ex.properties and all(0 < sim <= 1 for _, _, sim, _ in ex.properties)
    assert sum(n for *_, n in ex.properties) == len(space.descriptions()["pedestrian"])


def test_cli_evaluate_and_app_give_the_same_masks(model, outputs, encoder, tmp_path):
    """The same descriptions give identical masks from ``prolab predict``'s code path, ``evaluate``'s
    scorer and the app's editing session, on three images."""
    from prolab.evaluate import label_guide, make_scorer
    from prolab.novel_prior import PriorSettings
    from prolab.predict import predict_images
    from prolab.edit_session import EditSession, LabelSetChoice

    camvid = labelsets.load("camvid_11").descriptions
    ds = camvid.with_category("zebra", ["A wild horse-like animal with black and white stripes",
                                        "Grazes in herds on the African savanna", "Has a short upright mane"])
    classes = list(ds)
    custom = tmp_path / "zebra.json"
    custom.write_text(json.dumps(ds.to_dict()))
    session = EditSession(model, encoder, "camvid_11")
    session.select(LabelSetChoice("custom", str(custom)))
    for name, (image, _) in outputs.items():
        path = EXAMPLES / name
        predicted = predict_images(model, [path], tmp_path / name, label_space=model.label_space.edited(ds, encoder),
                                   top_properties=0)
        from PIL import Image

        cli = np.asarray(Image.open(tmp_path / name / f"{path.stem}_mask.png")).astype(np.int32)
        assert predicted["classes"] == classes
        scorer = make_scorer(model, classes, None, {}, descriptions=ds, encoder=encoder, prior=PriorSettings())
        emb, factors = embed_image_factored(model, image)
        output = factors if factors is not None else emb
        # evaluate()'s upsampling: the default quality step's (guided by the image)
        evaluated = segment(scorer(output, scorer.prior_map(image)), image.shape[:2],
                            guide=label_guide(image, image.shape[:2]))
        assert label_guide(image, image.shape[:2]) is image
        app = session.segment(path).labels.astype(np.int32)
        assert session.last.class_names == classes
        np.testing.assert_array_equal(cli, evaluated)
        np.testing.assert_array_equal(app, evaluated)


def test_remap_scores_another_label_set_by_name():
    from prolab.eval_cache import Remap
    from prolab.errors import ProLabError

    remap = Remap.by_name(["person", "animal", "sky", "lamp"], ["face", "cow", "sky", "body", "cat"],
                          {"person": "person", "animal": "animal", "sky": "sky"},
                          {"person": ["face", "body"], "animal": ["cow", "cat"]})
    assert remap.classes == ["person", "animal", "sky"]
    assert remap.predicted.tolist() == [0, 1, 2, -1]  # lamp counts as a miss
    assert remap.truth.tolist() == [0, 1, 2, 0, 1]
    np.testing.assert_array_equal(remap.predictions(np.array([[0, 3], [-1, 1]])), [[0, -1], [-1, 1]])
    np.testing.assert_array_equal(remap.ground_truth(np.array([[4, 255], [3, 2]], np.uint8)), [[1, 255], [0, 2]])
    with pytest.raises(ProLabError, match="does not have: tree"):
        Remap.by_name(["tree"], ["sky"], {"tree": "tree"})


def test_similarity_memo_gives_the_full_computation_and_recomputes_only_edited_classes(model, encoder, monkeypatch):
    import prolab.alignment as alignment

    trained = model.label_space
    ds = labelsets.load("camvid_11").descriptions
    memo = alignment.SimilarityMemo(trained)
    first = model.label_space.edited(ds, encoder)
    np.testing.assert_allclose(Alignment.between(first, trained, memo=memo).similarity,
                               Alignment.between(first, trained).similarity, atol=1e-6)
    sizes = []
    full = alignment.sentence_set_scores

    def counting(emb_a, owner_a, n_a, *rest):
        sizes.append(n_a)
        return full(emb_a, owner_a, n_a, *rest)

    monkeypatch.setattr(alignment, "sentence_set_scores", counting)
    edited = model.label_space.edited(ds.with_category("pole", ["A thin vertical metal post"]), encoder)
    got = Alignment.between(edited, trained, memo=memo)
    assert sizes == [1]  # only the edited class was compared again
    monkeypatch.setattr(alignment, "sentence_set_scores", full)
    fresh = Alignment.between(edited, trained)
    np.testing.assert_allclose(got.similarity, fresh.similarity, atol=1e-6)
    np.testing.assert_allclose(got.matched, fresh.matched, atol=1e-6)
    np.testing.assert_allclose(got.novelty, fresh.novelty, atol=1e-6)
