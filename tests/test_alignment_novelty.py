"""Novelty of the words-to-trained-classes bridge does not depend on how many sentences a class has (issue #27):
a class in anyone's few words must not be read as novel, a truly new class must stay novel."""
from pathlib import Path

import numpy as np
import pytest

from prolab import labelsets
from prolab.alignment import Alignment, sentence_set_scores, sentence_set_similarity
from prolab.assets import MODELS_DIR
from prolab.descriptions import DescriptionSet, load_descriptions
from prolab.labelspace import LabelSpace


def _unit(x):
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_a_three_sentence_paraphrase_of_a_trained_class_is_not_novel_and_an_unrelated_class_is():
    rng = np.random.default_rng(0)
    trained = _unit(rng.standard_normal((24, 64)))  # two trained classes of 12 sentences each
    trained_owner = np.repeat([0, 1], 12)
    paraphrase = _unit(trained[:3] + 0.25 * _unit(rng.standard_normal((3, 64))))  # 3 of class 0's sentences, reworded
    unrelated = _unit(rng.standard_normal((3, 64)))
    emb = np.concatenate([paraphrase, unrelated])
    owner = np.repeat([0, 1], 3)
    f1, matched = sentence_set_scores(emb, owner, 2, trained, trained_owner, 2)
    np.testing.assert_allclose(f1, sentence_set_similarity(emb, owner, 2, trained, trained_owner, 2))
    assert f1[0, 0] < 0.5  # the plain F1: 3 sentences cannot recall 12, however well they match
    assert matched[0, 0] > 0.9 and matched[1].max() < 0.3
    al = Alignment.from_similarity(["paraphrase", "unrelated"], ["t0", "t1"], f1, matched=matched)
    assert al.novelty.tolist() == [0.0, 1.0]
    assert al.weight[0, 0] == 1.0  # the best match by the plain F1 keeps its full weight
    np.testing.assert_array_equal(al.similarity, f1)


def test_size_matched_similarity_equals_f1_for_same_sized_sets_and_counts_only_the_best_sentences():
    rng = np.random.default_rng(1)
    b = _unit(rng.standard_normal((5, 16)))
    a = b[[0, 1, 2]].copy()  # class 0 of a: three of b's five sentences, verbatim
    f1, matched = sentence_set_scores(a, np.zeros(3, np.int64), 1, b, np.zeros(5, np.int64), 1)
    assert matched[0, 0] == pytest.approx(1.0, abs=1e-6)  # the three best of b's sentences match exactly
    assert f1[0, 0] < 1.0
    same, same_matched = sentence_set_scores(b, np.zeros(5, np.int64), 1, b[::-1], np.zeros(5, np.int64), 1)
    np.testing.assert_allclose(same, same_matched, atol=1e-6)


@pytest.fixture(scope="module")
def spaces(encoder):
    default = LabelSpace.load(MODELS_DIR / "default" / "labelspace")
    animals = LabelSpace.load(MODELS_DIR / "unseen_animals" / "labelspace")
    return default, animals, encoder


def test_plain_words_classes_are_known_while_unseen_animals_stay_novel(spaces):
    default, animals, encoder = spaces
    plain = DescriptionSet({
        "road": ["the flat grey tarmac cars drive on", "a street with painted white lines",
                 "asphalt lanes between the pavements"],
        "pavement": ["the footpath where people walk beside the road", "paving slabs next to the kerb",
                     "a sidewalk in front of the shops"],
        "sky": ["the blue or grey air over the town", "clouds high above the street",
                "bright empty space at the top of the picture"]})
    al = Alignment.between(default.edited(plain, encoder), default)
    assert al.novelty.tolist() == [0.0, 0.0, 0.0]
    old_rule = Alignment.from_similarity(al.class_names, al.trained_names, al.similarity)  # novelty from plain F1
    assert (old_rule.novelty > 0.4).all()
    shipped = labelsets.load("msrc_23").descriptions.subset(["cat", "dog", "horse", "sheep", "tree"])
    al = Alignment.between(animals.edited(shipped, encoder), animals)
    novelty = dict(zip(al.class_names, al.novelty.tolist()))
    assert novelty["horse"] == novelty["sheep"] == 1.0 and novelty["tree"] == 0.0
    assert novelty["cat"] > 0.4 and novelty["dog"] > 0.25  # close to "teddy bear", still novel
    one = DescriptionSet({a: [f"A photo of a {a}."] for a in ("cow", "horse", "sheep", "bird", "cat", "dog")})
    al = Alignment.between(animals.edited(one, encoder), animals)
    assert (al.novelty == 1.0).all()  # one sentence echoing one trained sentence does not make a class known


def test_a_trained_class_goes_to_its_best_class_by_the_f1_and_by_the_size_matched_f1():
    # trained class t0: "long" (15 sentences) recalls more of it, "short" (3 sentences) matches it better
    f1 = np.array([[0.45], [0.40]], np.float32)
    matched = np.array([[0.50], [0.60]], np.float32)
    al = Alignment.from_similarity(["long", "short"], ["t0"], f1, matched=matched)
    assert al.weight[:, 0].tolist() == [1.0, 1.0]  # the F1 alone gave "short" exp(-5): dropped
    assert al.mutual[:, 0].tolist() == [True, True]  # each is t0's best by one of the two
    c, t, w, power = al.pairs()
    assert power.tolist() == [1.0, 1.0]
    same = Alignment.from_similarity(["long", "short"], ["t0"], f1)  # no size-matched similarity: the F1's
    assert same.weight[:, 0].tolist() == [1.0, 0.0]


def test_plain_fence_and_water_receive_their_trained_classes_at_full_strength(spaces):
    default, _, encoder = spaces
    tables = Path(__file__).resolve().parents[1] / "bench" / "tables"

    def lent(key: str) -> dict:
        al = Alignment.between(default.edited(load_descriptions(tables / f"plain_{key}.json"), encoder), default)
        c, t, w, power = al.pairs()
        return {(al.class_names[i], al.trained_names[j]): (float(x), float(p))
                for i, j, x, p in zip(c.tolist(), t.tolist(), w.tolist(), power.tolist())}

    # the F1 alone: plain CamVid "fence" got the trained fence at power 8 (its best F1 match is "railing")
    assert lent("camvid_11")[("fence", "fence")] == (1.0, 1.0)
    # the size-matched F1 alone: plain MSRC "water" got no trained water (it went to "boat")
    assert lent("msrc_23")[("water", "water")][0] == 1.0


def test_classes_whose_sentences_point_away_from_each_other_do_not_match():
    # the cosines between the two classes are -0.6 and -0.96: precision and recall are both negative, and
    # the F1 of two negatives (their sum clamped near 0 as a denominator) used to come out near +1e5
    a = np.array([[1.0, 0.0], [0.8, 0.6]], np.float32)
    b = np.array([[-0.6, -0.8]], np.float32)
    f1, matched = sentence_set_scores(np.vstack([a, b]), np.array([0, 0, 1]), 2, np.vstack([a, b]),
                                      np.array([0, 0, 1]), 2)
    assert f1[0, 1] == 0.0 and matched[0, 1] == 0.0 and f1[0, 0] == pytest.approx(1.0)
