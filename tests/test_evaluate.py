"""Evaluation metrics (hand-checked), class restriction, the evaluate/predict CLIs, the shipped model."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from prolab.cli import main
from prolab.data import read_shared
from prolab.errors import ProLabError
from prolab.evaluate import ConfusionMatrix, class_indices, evaluate, make_scorer
from prolab.model import PropertySegmenter, SegmenterConfig

REPO = Path(__file__).resolve().parents[1]
DEFAULT_MODEL = REPO / "assets" / "models" / "default"


def test_confusion_matrix_hand_checked():
    gt = np.array([[0, 0, 1], [1, 2, 255]])
    pred = np.array([[0, 1, 1], [1, 1, 0]])
    cm = ConfusionMatrix(4)
    cm.update(pred, gt)
    m = cm.metrics(["a", "b", "c", "d"])
    # a: TP 1, GT 2, pred 1 -> 1/2; b: TP 2, GT 2, pred 4 -> 2/4; c: TP 0, GT 1 -> 0; d: absent.
    assert m["per_class_iou"] == {"a": 0.5, "b": 0.5, "c": 0.0, "d": None}
    assert m["miou"] == pytest.approx(1 / 3)
    assert m["pixel_accuracy"] == pytest.approx(3 / 5)
    assert m["labelled_pixels"] == 5
    assert m["per_class_pixels"] == {"a": 2, "b": 2, "c": 1, "d": 0}


def test_unknown_prediction_counts_as_a_miss():
    cm = ConfusionMatrix(2)
    cm.update(np.array([0, -1, 1]), np.array([0, 0, 1]))
    m = cm.metrics()
    assert m["pixel_accuracy"] == pytest.approx(2 / 3)
    assert m["per_class_iou"]["0"] == pytest.approx(0.5)
    with pytest.raises(ProLabError, match="sizes differ"):
        cm.update(np.zeros(3), np.zeros(4))


def test_class_indices_through_mapping():
    mapping = {"camvid_11": {"pavement": "sidewalk", "sky": "sky"}}
    assert class_indices(["sky", "Sidewalk", "car"], ["sky", "pavement"], "camvid_11", mapping) == [0, 1]
    assert class_indices(["sky", "car"], ["car"], None, {}) == [1]
    with pytest.raises(ProLabError, match="no class for boat"):
        class_indices(["sky"], ["boat"], None, {})


def _constant_category_model(num_classes: int, winner: int) -> PropertySegmenter:
    """A category model whose output is the classifier bias everywhere: always predicts ``winner``."""
    model = PropertySegmenter(SegmenterConfig(supervision="category", num_classes=num_classes,
                                              class_names=[f"m{i}" for i in range(num_classes)],
                                              backbone_options={"width": 0.25}, decoder_channels=8,
                                              input_size=32, aux_head=False))
    with torch.no_grad():
        model.decode_head.classifier.weight.zero_()
        model.decode_head.classifier.bias.copy_(torch.full((num_classes,), -5.0))
        model.decode_head.classifier.bias[winner] = 5.0
    return model.eval()


@pytest.fixture()
def toy_root(tmp_path):
    root = tmp_path / "datasets"
    d = root / "toy"
    (d / "images").mkdir(parents=True)
    (d / "labels").mkdir()
    (d / "classes.txt").write_text("a\nb\n")
    (d / "val.txt").write_text("x\ny\n")
    t = root / "teacher_ade150" / "toy"
    t.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for stem, split_col in (("x", 16), ("y", 24)):
        Image.fromarray(rng.integers(0, 255, (32, 40, 3), dtype=np.uint8)).save(d / "images" / f"{stem}.jpg")
        lab = np.zeros((32, 40), np.uint8)
        lab[:, split_col:] = 1
        lab[:4] = 255
        Image.fromarray(lab).save(d / "labels" / f"{stem}.png")
        teacher = np.full((32, 40), 3, np.uint8)  # ADE "sky"
        teacher[:, :8] = 0  # other: not scored
        Image.fromarray(teacher).save(t / f"{stem}.png")
        Image.fromarray(np.full((32, 40), 255, np.uint8)).save(t / f"{stem}_conf.png")
    return root


def test_evaluate_constant_model_hand_checked(toy_root):
    # Model classes m0..m3; the dataset's "a" -> m2, "b" -> m3; the model always says m3 (= "b").
    model = _constant_category_model(4, winner=3)
    mapping = {"toy": {"a": "m2", "b": "m3"}}
    src = read_shared(toy_root, "toy", "val")
    src.label_key = "toy"
    res = evaluate(model, src, mapping=mapping)
    rows = 28  # 32 rows minus 4 ignored
    b_pixels = rows * (40 - 16) + rows * (40 - 24)
    total = rows * 40 * 2
    assert res["pixel_accuracy"] == pytest.approx(b_pixels / total)
    assert res["per_class_iou"]["a"] == 0.0
    assert res["per_class_iou"]["b"] == pytest.approx(b_pixels / total)
    assert res["miou"] == pytest.approx(b_pixels / total / 2)
    assert res["images"] == 2 and res["mode"] == "whole"
    slide = evaluate(model, src, mapping=mapping, mode="slide", crop=32, stride=16)
    assert slide["miou"] == pytest.approx(res["miou"])


def test_evaluate_scores_what_image_transform_makes(toy_root, monkeypatch):
    """``image_transform`` (another camera's rendering, bench.camera_shift) maps each loaded image before
    the network sees it; the labels stay as they are."""
    import prolab.evaluate as ev

    model = _constant_category_model(4, winner=3)
    src = read_shared(toy_root, "toy", "val")
    src.label_key = "toy"
    mapping = {"toy": {"a": "m2", "b": "m3"}}
    seen, real = [], ev.embed_image_factored

    def spy(net, image, **kw):
        seen.append(image.copy())
        return real(net, image, **kw)

    monkeypatch.setattr(ev, "embed_image_factored", spy)
    plain = evaluate(model, src, mapping=mapping)
    shifted = evaluate(model, src, mapping=mapping, image_transform=lambda im: 255 - im)
    assert len(seen) == 4 and all(x.dtype == np.uint8 and x.shape == (32, 40, 3) for x in seen)
    assert np.array_equal(seen[2], 255 - seen[0]) and np.array_equal(seen[3], 255 - seen[1])
    assert shifted["per_class_iou"] == plain["per_class_iou"]  # a constant model: same labels, same scores
    with pytest.raises(ProLabError, match="image_transform must return"):  # scored against labels of another size
        evaluate(model, src, mapping=mapping, image_transform=lambda im: im[::2, ::2])


def test_teacher_agreement(toy_root):
    from prolab.data.readers import ade_classes

    ade = ade_classes()
    # Model classes = the 150 ADE names; constant "sky" matches every scored teacher pixel.
    model = _constant_category_model(150, winner=ade.index("sky"))
    model.config.class_names = ade
    src = read_shared(toy_root, "toy", "val")
    res = evaluate(model, src, teacher=True, mapping={"toy": {"a": "wall", "b": "sky"}})
    assert res["teacher_ade150"]["pixel_agreement"] == 1.0
    assert res["teacher_ade150"]["labelled_pixels"] == 2 * 32 * 32  # "other" columns skipped
    model2 = _constant_category_model(150, winner=ade.index("wall"))
    model2.config.class_names = ade
    assert evaluate(model2, src, teacher=True,
                    mapping={"toy": {"a": "wall", "b": "sky"}})["teacher_ade150"]["pixel_agreement"] == 0.0


def test_property_scorer_restricts_to_dataset_classes():
    from tests.test_train import tiny_model

    model = tiny_model("property")  # classes a, b, c
    scorer = make_scorer(model, ["c", "a"], None, {})
    assert scorer.space.class_names == ["c", "a"] == scorer.class_names
    assert np.array_equal(scorer.space.class_matrix, model.label_space.class_matrix[[2, 0]])
    space = model.label_space  # the classes keep their own sentences (the bridge reads them)
    for new, old in ((0, 2), (1, 0)):
        assert [t for t, c in zip(scorer.space.sentences, scorer.space.sentence_class) if c == new] == \
            [t for t, c in zip(space.sentences, space.sentence_class) if c == old]
    out = torch.randn(16, 5, 6)
    assert scorer(out).shape == (2, 5, 6)


def test_evaluate_and_predict_cli(toy_root, tmp_path, monkeypatch):
    model = _constant_category_model(4, winner=3)
    model.save_pretrained(tmp_path / "m")
    (tmp_path / "m" / "dataset_mapping.json").write_text(json.dumps({"toy": {"a": "m2", "b": "m3"}}))
    out = tmp_path / "eval.json"
    assert main(["evaluate", "--model", str(tmp_path / "m"), "--dataset", "toy", "--data-root", str(toy_root),
                 "--out", str(out)]) == 0
    res = json.loads(out.read_text())["results"]["toy/val"]
    assert res["per_class_iou"]["a"] == 0.0 and 0 < res["miou"] < 1 and res["flip"] is False
    assert main(["evaluate", "--model", str(tmp_path / "m"), "--dataset", "toy", "--data-root", str(toy_root),
                 "--mode", "slide", "--crop", "32", "--stride", "32", "--flip", "--out", str(out)]) == 0
    tta = json.loads(out.read_text())["results"]["toy/val"]
    assert tta["flip"] is True and (tta["mode"], tta["crop"], tta["stride"]) == ("slide", 32, 32)
    pred_dir = tmp_path / "pred"
    assert main(["predict", str(toy_root / "toy" / "images"), "--model", str(tmp_path / "m"),
                 "--out", str(pred_dir)]) == 0
    mask = np.asarray(Image.open(pred_dir / "x_mask.png"))
    assert mask.shape == (32, 40) and (mask == 3).all()
    assert Image.open(pred_dir / "x_overlay.png").size == (40, 32)
    assert main(["evaluate", "--model", str(tmp_path / "m"), "--data-root", str(toy_root)]) == 2


def test_predict_writes_property_heatmaps(tmp_path):
    from prolab.predict import predict_images
    from tests.test_train import tiny_model

    img = tmp_path / "in.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (30, 50, 3), dtype=np.uint8)).save(img)
    summary = predict_images(tiny_model("property").eval(), [img], tmp_path / "out", top_properties=3)
    entry = summary["images"][str(img)]
    assert len(entry["properties"]) == 3
    acts = [p["mean_activation"] for p in entry["properties"]]
    assert acts == sorted(acts, reverse=True)
    for p in entry["properties"]:
        assert Image.open(tmp_path / "out" / p["heatmap"]).size == (50, 30)
    assert math.isclose(sum(entry["classes"].values()), 1.0, abs_tol=1e-3)


def _majority_metrics(source, limit):
    """mIoU and pixel accuracy of predicting each image set's most frequent GT class everywhere."""
    from prolab.data.dataset import read_index_png

    gts = [read_index_png(s.label) for s in source.samples[:limit]]
    counts = np.bincount(np.concatenate([g[g != 255] for g in gts]), minlength=len(source.classes))
    cm = ConfusionMatrix(len(source.classes))
    for g in gts:
        cm.update(np.full(g.shape, counts.argmax()), g)
    return cm.metrics()


@pytest.mark.parametrize("name", ["camvid", "msrc_v2"])
def test_shipped_default_model_beats_majority_class(datasets_dir, name):
    if not (DEFAULT_MODEL / "model.safetensors").is_file():
        pytest.fail(f"The shipped default model is missing from {DEFAULT_MODEL}")
    from prolab.evaluate import load_mapping

    model = PropertySegmenter.from_pretrained(DEFAULT_MODEL)
    src = read_shared(datasets_dir, name, "val")
    # Val files are sorted by scene/object group; an evenly spaced subset covers all of them.
    limit = 10
    src.samples = src.samples[:: max(1, len(src.samples) // limit)][:limit]
    res = evaluate(model, src, mapping=load_mapping(DEFAULT_MODEL), limit=limit)
    base = _majority_metrics(src, limit)
    assert res["miou"] > base["miou"]
    assert res["pixel_accuracy"] > base["pixel_accuracy"]


def test_predict_goes_on_after_a_bad_image_and_checks_flags(tmp_path, capsys):
    """An unreadable image is reported and skipped: the others are predicted, predictions.json lists
    both, and the command ends with one error line and status 2. Impossible sizes fail up front."""
    from tests.test_train import tiny_model

    tiny_model("property").save_pretrained(tmp_path / "m")
    inputs = tmp_path / "in"
    inputs.mkdir()
    rng = np.random.default_rng(0)
    for name in ("a.png", "c.png"):
        Image.fromarray(rng.integers(0, 255, (30, 50, 3), dtype=np.uint8)).save(inputs / name)
    (inputs / "b.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 20)
    out = tmp_path / "out"
    capsys.readouterr()
    assert main(["predict", str(inputs), "--model", str(tmp_path / "m"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("error: 1 of 3 image(s) could not be read") and "Traceback" not in "".join(err)
    assert any("b.png" in line and "not a readable image" in line for line in err[:-1])
    summary = json.loads((out / "predictions.json").read_text())
    assert sorted(Path(p).name for p in summary["images"]) == ["a.png", "c.png"]
    assert [Path(p).name for p in summary["errors"]] == ["b.png"]
    assert (out / "a_mask.png").is_file() and (out / "c_mask.png").is_file()
    for flags, message in [(["--size", "100000"], "between 32 and"), (["--size", "0"], "between 32 and"),
                           (["--unknown-threshold", "nan"], "must be a number")]:
        capsys.readouterr()
        assert main(["predict", str(inputs / "a.png"), "--model", str(tmp_path / "m"),
                     "--out", str(tmp_path / "o2"), *flags]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error:") and message in lines[0], lines


def test_pickle_backbone_weights_are_a_one_line_error(tmp_path):
    """A config whose transformers backbone folder holds a pickle pytorch_model.bin: a ProLabError
    (one CLI line), and the pickle is never executed."""
    import os

    from safetensors.torch import load_file
    from transformers import ConvNextBackbone, ConvNextConfig

    src = tmp_path / "bb"
    ConvNextBackbone(ConvNextConfig(depths=[1, 1, 1, 1], hidden_sizes=[8, 16, 24, 32])).save_pretrained(src)
    state = load_file(str(src / "model.safetensors"))
    (src / "model.safetensors").unlink()
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    state["evil"] = Evil()
    torch.save(state, src / "pytorch_model.bin")
    with pytest.raises(ProLabError, match="pickle"):
        PropertySegmenter(SegmenterConfig(backbone=str(src), backbone_options={}, embed_dim=16, decoder_channels=16))
    assert not marker.exists()


@pytest.mark.parametrize("n, mode, unknown", [(3, "L", 255), (255, "L", 255), (256, "I;16", 65535)])
def test_mask_png_depth_and_unknown_value_follow_the_class_count(tmp_path, n, mode, unknown):
    """One rule for predict and the app's export: 8-bit while every class index and "unknown" fit."""
    from PIL import Image

    from prolab.predict import save_mask

    labels = np.array([[-1, 0], [n - 1, 1]])
    image = Image.open(save_mask(labels, [f"c{i}" for i in range(n)], tmp_path / "m.png"))
    assert image.mode == mode and image.text["unknown"] == str(unknown)
    assert np.asarray(image).tolist() == [[unknown, 0], [n - 1, 1]]
    assert len(json.loads(image.text["classes"])) == n


def test_predict_credits_classes_the_model_never_trained_on(tmp_path, encoder):
    """A class whose sentences no trained class explains gets the open-set credit wherever the trained
    classes leave room; a twin of a trained class (the same sentences under another name) is not novel:
    it ties with it and never wins, with the credit or without."""
    from prolab.descriptions import DescriptionSet
    from prolab.novel_prior import PriorSettings
    from prolab.predict import predict_images

    model = PropertySegmenter.from_pretrained(DEFAULT_MODEL)
    space = model.label_space
    sky = [s for s, c in zip(space.sentences, space.sentence_class) if space.class_names[c] == "sky"]
    alien = ["A creature from another planet", "Glows with an eerie green light", "Has six thin tentacles",
             "Floats above the ground without wings", "Its skin shimmers like oil on water"]
    extra = space.extended(DescriptionSet({"heavens": list(sky), "alien": alien}), encoder)
    img = REPO / "assets" / "examples" / "rocket.jpg"  # a launch pad under the sky
    plain = predict_images(model, [img], tmp_path / "plain", label_space=extra, size=96, prior=None)
    # a flat share (high temperature, strong weight) credits the novel class wherever the trained classes
    # leave room
    credited = predict_images(model, [img], tmp_path / "credit", label_space=extra, size=96,
                              prior=PriorSettings(weight=1000.0, temperature=1.0))
    for result in (plain, credited):
        assert "heavens" not in result["images"][str(img)]["classes"]
        assert result["images"][str(img)]["classes"]["sky"] > 0.1
    assert "alien" not in plain["images"][str(img)]["classes"]
    assert credited["images"][str(img)]["classes"].get("alien", 0.0) > 0.0
