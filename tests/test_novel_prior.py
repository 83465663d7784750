"""prolab.novel_prior: the open-set credit for classes a model never trained on."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from prolab.errors import ProLabError
from prolab.images import load_image
from prolab.novel_prior import (PriorSettings, apply_credit, class_text_embeddings, credit_scores,
                                imagenet_class_names, load_prior)
from tests.builders import random_label_space

EXAMPLES = Path(__file__).resolve().parents[1] / "assets" / "examples"


def test_imagenet_names_are_in_classifier_order():
    names = imagenet_class_names()
    assert len(names) == 1000
    assert names[281] == "tabby cat" and names[967] == "espresso" and names[345] == "ox"


def test_credit_goes_to_novel_rows_where_trained_classes_do_not_explain_the_pixel():
    # 2 trained-aligned classes, 1 novel; pixel 0 is explained (best trained score 1), pixel 1 is not (0.2)
    scores = torch.tensor([[[1.0, 0.2]], [[0.1, 0.1]], [[0.0, 0.0]]])  # (3, 1, 2)
    explained = torch.tensor([[1.0, 0.2]])
    text = torch.nn.functional.normalize(torch.eye(3, 4), dim=1)
    smap = torch.zeros(4, 1, 2)
    smap[2] = 1.0  # the ImageNet map points at the novel class's text everywhere
    out = credit_scores(scores, np.array([0.0, 0.0, 1.0]), text, smap, explained, PriorSettings(weight=4.0))
    assert torch.equal(out[:2], scores[:2])  # known rows untouched
    assert out[2, 0, 0] == pytest.approx(0.0, abs=1e-6)  # explained pixel: no credit
    # unexplained: raised towards 1 by 1 - exp(-weight * (1 - 0.2) * share), share ~1
    assert out[2, 0, 1] == pytest.approx(1 - np.exp(-4.0 * 0.8), rel=1e-3)
    assert float(out.max()) <= 1.0
    assert int(out[:, 0, 1].argmax()) == 2 and int(out[:, 0, 0].argmax()) == 0
    # half as novel: half the exponent
    half = credit_scores(scores, np.array([0.0, 0.0, 0.5]), text, smap, explained, PriorSettings(weight=4.0))
    assert half[2, 0, 1] == pytest.approx(1 - np.exp(-2.0 * 0.8), rel=1e-3)


def test_credit_is_split_by_the_imagenet_map_and_off_when_not_needed():
    scores = torch.full((3, 1, 1), 0.1)
    explained = torch.full((1, 1), 0.1)
    text = torch.nn.functional.normalize(torch.eye(3, 4), dim=1)
    smap = torch.zeros(4, 1, 1)
    smap[1] = 1.0  # points at novel class 1, not novel class 2
    novel = np.array([0.0, 1.0, 1.0])
    out = credit_scores(scores, novel, text, smap, explained, PriorSettings(weight=1.0, temperature=0.02))
    assert out[1, 0, 0] > 0.6 and out[2, 0, 0] < 0.11
    assert credit_scores(scores, np.zeros(3), text, smap, explained) is scores
    with pytest.raises(ProLabError):
        credit_scores(scores, np.array([1.0, 0.0]), text, smap, explained)
    with pytest.raises(ProLabError):
        PriorSettings(temperature=0.0)


def test_apply_credit_matches_credit_scores():
    rng = np.random.default_rng(0)
    scores = torch.from_numpy(rng.random((4, 3, 5), dtype=np.float32))
    explained = torch.from_numpy(rng.random((3, 5), dtype=np.float32))
    text = torch.nn.functional.normalize(torch.from_numpy(rng.standard_normal((4, 8), dtype=np.float32)), dim=1)
    smap = torch.from_numpy(rng.standard_normal((8, 2, 2), dtype=np.float32))
    novelty = np.array([0.0, 1.0, 0.0, 0.3], np.float32)
    from prolab.novel_prior import credit_shares

    shares = credit_shares(text, novelty > 0, smap, (3, 5))
    assert shares.shape == (2, 3, 5) and bool((shares >= 0).all()) and bool((shares <= 1).all())
    torch.testing.assert_close(apply_credit(scores, novelty, shares, explained),
                               credit_scores(scores, novelty, text, smap, explained))


def test_class_text_embeddings_are_the_classes_mean_sentence():
    space = random_label_space(dim=6, classes=3)
    text = class_text_embeddings(space)
    for c in range(3):
        mean = space.sentence_embeddings[space.sentence_class == c].mean(0)
        np.testing.assert_allclose(text[c].numpy(), mean / np.linalg.norm(mean), rtol=1e-5, atol=1e-6)


def test_imagenet_sentence_map_knows_a_cat_from_a_car(encoder):
    prior = load_prior("efficientnet-lite0")
    image = load_image(EXAMPLES / "chelsea.png")
    probs = prior.probabilities(image, 224)
    assert probs.shape[0] == 1000
    torch.testing.assert_close(probs.sum(0), torch.ones(probs.shape[1:]), rtol=1e-4, atol=1e-4)
    smap = prior.sentence_map(image, encoder, PriorSettings(short_side=224))
    labels = torch.nn.functional.normalize(torch.as_tensor(encoder.encode(["a cat", "a car"])), dim=1)
    cos = torch.einsum("cd,dhw->chw", labels, smap).mean((1, 2))
    assert cos[0] > cos[1] + 0.1


def test_open_set_credit_is_built_only_when_a_class_needs_it(encoder):
    from types import SimpleNamespace

    from prolab.novel_prior import ImageCredit, OpenSetCredit

    space = random_label_space(dim=6, classes=3)
    model = SimpleNamespace(label_space=space, config=SimpleNamespace(backbone="efficientnet-lite0"))
    rng = np.random.default_rng(1)
    text = torch.nn.functional.normalize(torch.from_numpy(rng.standard_normal((3, 8), dtype=np.float32)), dim=1)
    calls = []

    def lazy():
        calls.append(1)
        return text

    novelty = np.array([0.0, 0.0, 1.0], np.float32)
    assert OpenSetCredit.for_novelty(model, np.zeros(3), lazy, encoder=encoder) is None  # nothing novel
    assert OpenSetCredit.for_novelty(model, novelty, lazy, None, encoder=encoder) is None
    assert OpenSetCredit.for_novelty(model, novelty, lazy, PriorSettings(weight=0.0), encoder=encoder) is None
    assert calls == []  # class texts are encoded only for a credit that is used
    credit = OpenSetCredit.for_novelty(model, novelty, lazy, encoder=encoder)
    assert credit.novel.tolist() == [False, False, True] and calls == [1]
    with pytest.raises(ProLabError):
        OpenSetCredit.for_novelty(model, np.array([0.0, 1.0]), text, encoder=encoder)  # 3 texts, 2 classes

    scores = torch.from_numpy(rng.random((3, 4, 5), dtype=np.float32))
    explained = torch.from_numpy(rng.random((4, 5), dtype=np.float32))
    smap = torch.from_numpy(rng.standard_normal((8, 2, 3), dtype=np.float32))
    bound = ImageCredit(credit, credit.shares(smap, (4, 5)))
    torch.testing.assert_close(bound.apply(scores, explained), credit(scores, smap, explained))
    torch.testing.assert_close(credit(scores, smap, explained),
                               credit_scores(scores, novelty, text, smap, explained, PriorSettings()))
    assert bound.nbytes == 1 * 4 * 5 * 4
    image = load_image(EXAMPLES / "chelsea.png")
    assert credit.sentence_map(image).shape[0] == encoder.dim
