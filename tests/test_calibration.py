"""Per-class score offsets (prolab.calibration): the fit, the file, the model round trip, the scorer, the CLI."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from prolab.calibration import (OFFSETS_FILE, PixelSample, StaleOffsetsError, check_offsets, fit_offsets,
                                load_offsets, sample_miou, sample_pixels, save_offsets, weights_fingerprint)
from prolab.class_scorer import ClassScorer
from prolab.cli import main
from prolab.data import read_shared
from prolab.errors import ProLabError
from prolab.evaluate import evaluate, make_scorer
from prolab.model import PropertySegmenter
from tests.builders import write_labelled_folder
from tests.test_train import tiny_model


def _handicapped(n: int = 3000, handicap: float = 0.25, seed: int = 0) -> PixelSample:
    """Three classes whose scores separate them perfectly, except that class "b" scores ``handicap`` too
    low everywhere: argmax loses most of its pixels to the runner-up until an offset gives it back."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 3, (n,), generator=g)
    scores = torch.rand((n, 3), generator=g) * 0.3
    scores[torch.arange(n), labels] += 0.4
    scores[:, 1] -= handicap
    return PixelSample(scores, labels, ["a", "b", "c"], "toy")


def test_fit_recovers_a_handicapped_class():
    sample = _handicapped()
    before = sample_miou(sample, torch.zeros(3))
    offsets, history = fit_offsets([sample])
    after = sample_miou(sample, torch.tensor([offsets.get(n, 0.0) for n in "abc"]))
    assert before < 0.9 and after == pytest.approx(1.0)
    # relative to its rivals, b gets back at least what it lost (and not more than the margin allows)
    lift = offsets.get("b", 0.0) - max(offsets.get("a", 0.0), offsets.get("c", 0.0))
    assert 0.15 < lift < 0.35 and all(abs(v) <= 0.24 for v in offsets.values())
    assert history[0]["objective"] == pytest.approx(before) and history[-1]["objective"] == pytest.approx(after)


def test_fit_keeps_offsets_as_small_as_the_gain_allows():
    # any lift of b from 0.16 to 0.24 is perfect: the smallest is taken, and a class that gains nothing stays 0
    offsets, _ = fit_offsets([_handicapped()], min_gain=0.0)
    assert offsets == {"b": pytest.approx(0.16)}
    # with a tolerance of 1.0 (every value "as good"), nothing moves
    assert fit_offsets([_handicapped()], min_gain=1.0)[0] == {}


def test_fit_leaves_a_perfect_scorer_alone():
    offsets, history = fit_offsets([_handicapped(handicap=0.0)])
    assert offsets == {} and len(history) == 2  # one sweep that changed nothing


def test_fit_shares_one_offset_across_datasets():
    # "b" is handicapped in both datasets, whose other classes differ: one offset for b serves both
    one = _handicapped(seed=1)
    two = _handicapped(seed=2)
    two.trained_names = ["b", "d", "e"]
    two.scores = two.scores[:, [1, 0, 2]]
    two.labels = torch.tensor([{0: 1, 1: 0, 2: 2}[int(v)] for v in two.labels])
    offsets, _ = fit_offsets([one, two], min_gain=0.0)
    for s in (one, two):
        vec = torch.tensor([offsets.get(n, 0.0) for n in s.trained_names])
        assert sample_miou(s, vec) == pytest.approx(1.0)


def test_own_pixel_means_reads_each_class_on_its_own_pixels():
    from prolab.calibration import own_pixel_means

    sample = PixelSample(torch.tensor([[0.9, 0.1], [0.7, 0.2], [0.3, 0.4]]), torch.tensor([0, 0, 1]), ["x", "y"])
    assert own_pixel_means(sample) == {"x": 0.8, "y": 0.4}
    sample.labels = torch.tensor([0, 0, 0])
    assert own_pixel_means(sample) == {"x": pytest.approx(0.6333, abs=1e-4)}


def test_sample_pixels_reads_bilinear_scores_and_skips_ignored():
    scores = torch.tensor([[[0.0, 1.0]], [[1.0, 0.0]]])  # (2, 1, 2)
    label = np.array([[0, 1, 1, 255]], np.uint8)  # upsampled to 1 x 4
    rows, labels = sample_pixels(scores, label, 1.0, np.random.default_rng(0))
    expected = torch.nn.functional.interpolate(scores[None], size=(1, 4), mode="bilinear",
                                               align_corners=False)[0].reshape(2, -1).T[:3]
    assert torch.equal(labels, torch.tensor([0, 1, 1])) and torch.allclose(rows, expected)
    with pytest.raises(ProLabError, match="fraction"):
        sample_pixels(scores, label, 0.0, np.random.default_rng(0))


@pytest.mark.parametrize("bad, match", [([1.0], "expected an object"), ({"a": "x"}, "must be a number"),
                                        ({"a": float("nan")}, "must be a number"), ({"a": 3.0}, "within"),
                                        ({"a": True}, "must be a number"), ({"zz": 0.1}, "not trained on: zz")])
def test_check_offsets_refuses_bad_values(bad, match):
    with pytest.raises(ProLabError, match=match):
        check_offsets(bad, known=["a", "b"])


def test_offsets_file_round_trip_and_bad_files(tmp_path):
    assert load_offsets(tmp_path) == {}
    save_offsets(tmp_path, {"b": 0.2, "a": -0.1}, "w1", {"fitted_on": ["toy/train"]})
    assert load_offsets(tmp_path, known=["a", "b"]) == {"a": -0.1, "b": 0.2}
    assert json.loads((tmp_path / OFFSETS_FILE).read_text())["fitted_on"] == ["toy/train"]
    (tmp_path / OFFSETS_FILE).write_text("{not json")
    with pytest.raises(ProLabError, match="Cannot read"):
        load_offsets(tmp_path)
    (tmp_path / OFFSETS_FILE).write_text('{"a": 0.1}')
    with pytest.raises(ProLabError, match='"offsets" entry'):
        load_offsets(tmp_path)


def test_model_round_trip_and_a_save_without_offsets_drops_the_file(tmp_path):
    model = tiny_model("property")
    model.score_offsets = {"b": 0.3}
    model.save_pretrained(tmp_path / "m")
    loaded = PropertySegmenter.from_pretrained(tmp_path / "m")
    assert loaded.score_offsets == {"b": 0.3}
    loaded.score_offsets = {}
    assert (tmp_path / "m" / OFFSETS_FILE).is_file()
    loaded.save_pretrained(tmp_path / "m")  # new weights, no offsets: the old file must not survive
    assert not (tmp_path / "m" / OFFSETS_FILE).exists()
    assert PropertySegmenter.from_pretrained(tmp_path / "m").score_offsets == {}
    from safetensors.torch import load_file

    weights = weights_fingerprint(load_file(str(tmp_path / "m" / "model.safetensors")))
    save_offsets(tmp_path / "m", {"nope": 0.1}, weights)
    with pytest.raises(ProLabError, match="not trained on: nope.*prolab calibrate"):
        PropertySegmenter.from_pretrained(tmp_path / "m")
    # a bad file does not lock the model: it loads without offsets when asked
    assert PropertySegmenter.from_pretrained(tmp_path / "m", score_offsets=False).score_offsets == {}


def test_offsets_fitted_for_other_weights_are_not_applied(tmp_path, monkeypatch):
    from safetensors.torch import load_file, save_file

    import prolab.model.segmenter as segmenter

    said = []  # the loader's warnings (a logger another test's library may have reconfigured: no caplog)
    monkeypatch.setattr(segmenter.log, "warning", lambda msg, *args: said.append(msg % args))
    model = tiny_model("property")
    model.score_offsets = {"b": 0.3}
    d = model.save_pretrained(tmp_path / "m")
    state = load_file(str(d / "model.safetensors"))
    assert json.loads((d / OFFSETS_FILE).read_text())["weights_sha256"] == weights_fingerprint(state)
    assert weights_fingerprint(state) == weights_fingerprint(model.state_dict())
    # other weights copied over by hand beside the file: one value changed
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name] = state[name] + 1e-3
    save_file(state, str(d / "model.safetensors"), metadata={"format": "pt"})
    stale = PropertySegmenter.from_pretrained(d)
    assert stale.score_offsets == {} and "fitted for other weights" in stale.score_offsets_note
    assert len(said) == 1 and "fitted for other weights" in said[0] and "prolab calibrate" in said[0]
    with pytest.raises(StaleOffsetsError):
        load_offsets(d, weights=weights_fingerprint(state))
    assert load_offsets(d) == {"b": 0.3}  # without weights to check against
    # beside other weights the file is stale before it is checked: another label space's classes only warn
    (d / OFFSETS_FILE).write_text(json.dumps({"offsets": {"zebra": 0.3}, "weights_sha256": "0" * 64}))
    assert PropertySegmenter.from_pretrained(d).score_offsets == {}
    # a file that names no weights (made before they were named) is not applied either
    (d / OFFSETS_FILE).write_text(json.dumps({"offsets": {"b": 0.3}}))
    assert PropertySegmenter.from_pretrained(d).score_offsets == {}
    assert "does not say which weights" in said[-1]
    # the fingerprint follows values, dtypes and names
    base = {"w": torch.zeros(2, 2), "n": torch.tensor(3)}
    variants = [base, {**base, "w": torch.zeros(2, 2, dtype=torch.float64)}, {"v": base["w"], "n": base["n"]},
                {**base, "n": torch.tensor(4)}]
    prints = {weights_fingerprint(v) for v in variants}
    assert len(prints) == 4


def test_the_shipped_offsets_are_for_the_shipped_weights():
    from pathlib import Path

    for name in ("default", "baseline_category"):
        d = Path(__file__).resolve().parents[1] / "assets" / "models" / name
        payload = json.loads((d / OFFSETS_FILE).read_text())
        assert PropertySegmenter.from_pretrained(d).score_offsets == payload["offsets"] != {}


def test_a_pixel_sample_refuses_columns_that_do_not_match():
    with pytest.raises(ProLabError, match="3 column names, 2 shares"):
        PixelSample(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long), ["a", "b", "c"], "s", [1.0, 1.0])
    with pytest.raises(ProLabError, match="2 column names"):
        PixelSample(torch.zeros(4, 3), torch.zeros(4, dtype=torch.long), ["a", "b"], "s")
    with pytest.raises(ProLabError, match="labels"):
        PixelSample(torch.zeros(4, 3), torch.zeros(5, dtype=torch.long), ["a", "b", "c"], "s")


def test_calibrate_hashes_the_weights_file_as_read(tmp_path, toy_data):
    from safetensors.torch import load_file, save_file

    d = tiny_model("property").save_pretrained(tmp_path / "m")
    half = {k: (v.half() if v.is_floating_point() else v) for k, v in load_file(str(d / "model.safetensors")).items()}
    save_file(half, str(d / "model.safetensors"), metadata={"format": "pt"})  # a float16 checkpoint
    # the loader keeps the fingerprint of the file's float16 tensors, not of the float32 model it builds
    model = PropertySegmenter.from_pretrained(d, score_offsets=False)
    assert model.source_fingerprint == weights_fingerprint(half) != weights_fingerprint(model.state_dict())
    assert main(["calibrate", "--model", str(d), "--dataset", "toy", "--data-root", str(toy_data), "--fraction", "1",
                 "--sweeps", "1", "--threads", "1"]) == 0
    loaded = PropertySegmenter.from_pretrained(d)
    assert loaded.score_offsets_note is None
    assert loaded.score_offsets == json.loads((d / OFFSETS_FILE).read_text())["offsets"]


def test_calibrate_checks_that_the_descriptions_cover_every_dataset_first(tmp_path, toy_data, capsys, monkeypatch):
    import prolab.evaluate as ev

    d = tiny_model("property").save_pretrained(tmp_path / "m")
    words = tmp_path / "words.json"
    words.write_text(json.dumps({"a": ["s0", "s1"], "b": ["s2", "s3"]}))
    monkeypatch.setattr(ev, "collect_pixels", lambda *a, **k: pytest.fail("scored before checking the words"))
    assert main(["calibrate", "--model", str(d), "--dataset", "toy", "--data-root", str(toy_data),
                 "--descriptions", str(words)]) == 2
    assert "no entry for toy's c" in capsys.readouterr().err


def test_a_pixel_sample_column_takes_its_share_of_its_trained_classs_offset():
    sample = PixelSample(torch.zeros(1, 3), torch.zeros(1, dtype=torch.long), ["a", None, "a"], "s", [1.0, 0.0, 0.5])
    assert sample.offset_vector({"a": 0.2}).tolist() == pytest.approx([0.2, 0.0, 0.1])
    # a column without a trained class is in the fit but gets no offset, and is not fitted as a class
    handicapped = _handicapped()
    offsets, history = fit_offsets([_with_names(handicapped, ["a", None, "c"])])
    assert set(offsets) <= {"a", "c"} and offsets  # b's rivals are pushed down instead of b lifted
    assert history[-1]["objective"] > history[0]["objective"]


def _with_names(sample: PixelSample, names: list) -> PixelSample:
    return PixelSample(sample.scores, sample.labels, names, sample.name)


class _StubEncoder:
    """Sentence "s<i>" -> the tiny space's centre i; any other sentence -> a fixed random direction."""

    id, template = "tiny", "plain"

    def __init__(self, space):
        self.space = space

    def encode(self, sentences):
        rng = np.random.default_rng(7)
        out = []
        for s in sentences:
            if s.startswith("s") and s[1:].isdigit():
                out.append(self.space.normalised_centers[int(s[1:])])
            else:
                v = rng.normal(size=self.space.dim).astype(np.float32)
                out.append(v / np.linalg.norm(v))
        return np.stack(out)


def test_collect_pixels_with_descriptions_puts_a_novel_class_in_the_fit_without_an_offset(toy_data):
    from prolab.evaluate import collect_pixels

    model = tiny_model("property")
    encoder = _StubEncoder(model.label_space)
    src = read_shared(toy_data, "toy", "train")
    words = {"a": ["s0", "s1"], "b": ["s2", "s3"], "c": ["Long neck and patched coat", "Browses on acacia trees"]}
    sample = collect_pixels(model, src, {}, fraction=1.0, descriptions=words, encoder=encoder)
    assert sample.trained_names[:2] == ["a", "b"] and sample.shares[:2] == [1.0, 1.0]
    assert sample.trained_names[2] is None and sample.shares[2] == 0.0  # c means no trained class (novelty 1)
    # the columns are what `evaluate --descriptions` scores (without offsets)
    scorer = make_scorer(model, src.classes, "toy", {}, words, encoder=encoder, calibrated=False)
    assert [t for t, _ in scorer.offset_sources()] == sample.trained_names
    plain = collect_pixels(model, src, {}, fraction=1.0)
    assert plain.trained_names == ["a", "b", "c"] and torch.equal(plain.labels, sample.labels)
    assert torch.allclose(plain.scores[:, :2], sample.scores[:, :2], atol=1e-5)
    # with the open-set credit (as `evaluate --descriptions` scores): c is raised where a and b explain little
    from prolab.novel_prior import PriorSettings

    credited = collect_pixels(model, src, {}, fraction=1.0, descriptions=words, encoder=encoder, prior=PriorSettings())
    rise = credited.scores[:, 2] - sample.scores[:, 2]
    assert float(rise.min()) >= 0 and float(rise.max()) > 0.05
    assert torch.equal(credited.scores[:, :2], sample.scores[:, :2])


def test_training_from_a_calibrated_model_drops_its_offsets(tmp_path):
    from prolab.train import TrainConfig, load_initial_model

    model = tiny_model("property")
    model.score_offsets = {"a": 0.2}
    model.save_pretrained(tmp_path / "init")
    started = load_initial_model(TrainConfig(init_from=str(tmp_path / "init")), model.label_space)
    assert started.score_offsets == {}


def test_a_novel_class_gets_no_offset_and_a_known_one_its_trained_classs():
    from prolab.alignment import Alignment

    model = tiny_model("property")
    model.score_offsets = {"a": -0.2, "b": 0.1}
    scorer = ClassScorer(model, prior=None)
    # giraffe is novel (nothing explains it) though it is cow-like enough to be a mutual match; "street" means b
    scorer.alignment = Alignment.from_similarity(["giraffe", "street"], ["a", "b", "c"],
                                                 np.array([[0.30, 0.10, 0.05], [0.05, 0.95, 0.20]]))
    scorer.class_names = ["giraffe", "street"]
    novelty = scorer.alignment.novelty
    assert novelty[0] > 0.5 and scorer.alignment.mutual[0, 0]
    offsets = scorer._offset_vector(model, True)
    assert scorer.offset_sources()[1] == ("b", pytest.approx(1 - novelty[1]))
    novel = scorer.alignment.novelty.copy()
    scorer.alignment.novelty[0] = 1.0  # wholly novel, though still a mutual match: no trained class to name
    assert scorer.offset_sources()[0] == (None, 0.0)
    scorer.alignment.novelty[:] = novel
    assert offsets[1] == pytest.approx(0.1 * (1 - novelty[1]))
    assert abs(float(offsets[0])) <= 0.2 * (1 - novelty[0]) + 1e-6 < 0.1


def test_scorer_adds_the_offset_of_the_class_meant():
    model = tiny_model("property")
    x = torch.randn(model.config.embed_dim, 4, 5)
    plain = ClassScorer(model, prior=None)(x)
    model.score_offsets = {"b": 0.25}
    calibrated = ClassScorer(model, prior=None)(x)
    assert torch.allclose(calibrated - plain, torch.tensor([0.0, 0.25, 0.0])[:, None, None])
    assert torch.equal(ClassScorer(model, prior=None, calibrated=False)(x), plain)
    # the same class under another name (its own sentences) takes its offset; a class made of another
    # class's sentences takes that one's
    space = model.label_space.select([1, 0], ["bee", "ay"])
    renamed = ClassScorer(model, space, prior=None)
    assert renamed.offsets.tolist() == pytest.approx([0.25, 0.0])


def test_category_scorer_offsets_follow_its_rows():
    model = tiny_model("category")
    model.score_offsets = {model.class_names[2]: -0.5}
    scorer = ClassScorer(model, rows=[2, 0], class_names=["two", "zero"])
    x = torch.randn(model.config.num_classes, 3, 3)
    assert torch.allclose(scorer(x) - torch.softmax(x[[2, 0]], 0), torch.tensor([-0.5, 0.0])[:, None, None])


@pytest.fixture()
def toy_data(tmp_path):
    root = tmp_path / "datasets"
    d = write_labelled_folder(root / "toy", ["a", "b", "c"], n=3, shared=True)
    (d / "train.txt").write_text((d / "val.txt").read_text())
    return root


def test_evaluate_scores_with_the_models_offsets(tmp_path, toy_data):
    model = tiny_model("property")
    src = read_shared(toy_data, "toy", "val")
    plain = evaluate(model, src)
    model.score_offsets = {"c": 1.0}  # c wins every pixel
    forced = evaluate(model, src)
    labels = forced["per_class_pixels"]
    assert forced["pixel_accuracy"] == pytest.approx(labels["c"] / sum(labels.values()))
    assert forced != plain
    assert make_scorer(model, src.classes, "toy", {}, calibrated=False).offsets is None


def test_calibrate_cli_fits_writes_and_refuses_val(tmp_path, toy_data, capsys):
    model = tiny_model("property")
    d = tmp_path / "m"
    model.save_pretrained(d)
    args = ["calibrate", "--model", str(d), "--dataset", "toy", "--data-root", str(toy_data), "--fraction", "1",
            "--sweeps", "1", "--threads", "1"]
    assert main(args + ["--dry-run"]) == 0 and not (d / OFFSETS_FILE).exists()
    assert main(args) == 0
    payload = json.loads((d / OFFSETS_FILE).read_text())
    assert payload["fitted_on"] == ["toy/train"] and payload["pixels"]["toy"] > 0
    means = payload["mean_own_score"]["toy"]
    assert set(means) <= {"a", "b", "c"} and all(-1.0 <= v <= 1.0 for v in means.values())
    assert PropertySegmenter.from_pretrained(d).score_offsets == payload["offsets"]
    assert payload["weights_sha256"] == weights_fingerprint(model.state_dict())
    assert main(args[:-2] + ["--split", "val"]) == 2
    assert "training split" in capsys.readouterr().err
    # calibrate reads the model without its (possibly broken) file and replaces it
    (d / OFFSETS_FILE).write_text("{broken")
    assert main(args) == 0 and "offsets" in json.loads((d / OFFSETS_FILE).read_text())


def test_calibrate_cli_with_descriptions_fits_only_trained_classes(tmp_path, toy_data, capsys, monkeypatch):
    import prolab.evaluate as ev

    model = tiny_model("property")
    d = model.save_pretrained(tmp_path / "m")
    monkeypatch.setattr(ev, "TextEncoder", lambda *a, **k: _StubEncoder(model.label_space))
    words = tmp_path / "words.json"
    words.write_text(json.dumps({"a": ["s0", "s1"], "b": ["s2", "s3"],
                                 "c": ["Long neck and patched coat", "Browses on acacia trees"]}))
    args = ["calibrate", "--model", str(d), "--dataset", "toy", "--data-root", str(toy_data), "--fraction", "1",
            "--sweeps", "2", "--threads", "1", "--descriptions", str(words), "--no-open-set-credit"]
    assert main(args) == 0
    out = capsys.readouterr().out
    payload = json.loads((d / OFFSETS_FILE).read_text())
    assert f"--descriptions {words} --no-open-set-credit" in payload["command"]
    # c means no trained class: it is scored, competes for its pixels, and is never given an offset
    assert "without an offset (no trained class means them): c" in out and "c" not in payload["offsets"]
    assert set(payload["mean_own_score"]["toy"]) <= {"a", "b", "c"}


def test_calibrate_refuses_a_folder_it_cannot_write_before_fitting(tmp_path, toy_data, capsys, monkeypatch):
    import prolab.evaluate as ev

    d = tmp_path / "m"
    tiny_model("property").save_pretrained(d)
    (d / OFFSETS_FILE).mkdir()  # the file's place is taken: writing it must fail
    monkeypatch.setattr(ev, "collect_pixels", lambda *a, **k: pytest.fail("fitted before checking the output"))
    assert main(["calibrate", "--model", str(d), "--dataset", "toy", "--data-root", str(toy_data)]) == 2
    assert OFFSETS_FILE in capsys.readouterr().err


def test_no_score_offsets_flag_skips_a_broken_file(tmp_path, toy_data, capsys):
    d = tmp_path / "m"
    tiny_model("property").save_pretrained(d)
    (d / OFFSETS_FILE).write_text("{broken")
    args = ["evaluate", "--model", str(d), "--dataset", "toy", "--data-root", str(toy_data), "--threads", "1"]
    assert main(args) == 2 and "prolab calibrate" in capsys.readouterr().err
    assert main(args + ["--no-score-offsets", "--out", str(tmp_path / "e.json")]) == 0
    assert json.loads((tmp_path / "e.json").read_text())["results"]["toy/val"]["score_offsets"] == 0


def test_training_a_given_calibrated_model_saves_no_offsets(tmp_path):
    from prolab.train import train
    from tests.test_train import Synthetic, _cfg

    model = tiny_model("property")
    model.score_offsets, model.score_offsets_note = {"a": 0.2}, "x/score_offsets.json was fitted for other weights"
    model.source_fingerprint = "0" * 64
    out = train(_cfg(tmp_path, steps=1), model=model, dataset=Synthetic(2))
    assert not (out / OFFSETS_FILE).exists() and model.score_offsets == {}
    assert model.score_offsets_note is None  # the note described the weights before training
    assert model.source_fingerprint is None  # and so did the file they came from


def test_evaluate_and_predict_pass_the_image_as_guide(tmp_path, toy_data, monkeypatch):
    import prolab.evaluate as ev
    import prolab.frames as fr
    from prolab.predict import predict_images

    seen = []

    def spy(original):
        def wrapped(scores, size, unknown_threshold=None, guide=None):
            seen.append(None if guide is None else guide.shape)
            return original(scores, size, unknown_threshold, guide=guide)
        return wrapped

    monkeypatch.setattr(ev, "segment", spy(ev.segment))
    monkeypatch.setattr(fr, "segment", spy(fr.segment))
    model = tiny_model("property")
    src = read_shared(toy_data, "toy", "val")
    plain = evaluate(model, src, guided=False)
    assert seen == [None] * 3 and plain["guided_upsampling"] is False
    seen.clear()
    guided = evaluate(model, src)  # the default quality step upsamples with the image as guide
    assert seen == [(48, 64, 3), (56, 64, 3), (64, 64, 3)] and guided["guided_upsampling"] is True
    seen.clear()
    predict_images(model, [s.image for s in src.samples[:1]], tmp_path / "pred", guided=True, top_properties=0)
    assert seen == [(48, 64, 3)]
    model.score_offsets = {"b": 0.1}
    assert evaluate(model, src)["score_offsets"] == 1


def test_without_an_alignment_no_class_gets_an_offset():
    # plain ProLab scores (alignment=None) have nothing that says which trained class a class means
    model = tiny_model("property")
    model.score_offsets = {"a": 0.2}
    assert ClassScorer(model, prior=None, alignment=None).offsets is None


def test_the_model_tab_lists_the_score_offsets(tmp_path):
    from app.services.models import ModelEntry
    from app.views.model import describe

    model = tiny_model("property")
    entry = ModelEntry(model, str(tmp_path), tmp_path)
    assert "score offsets" not in describe(entry)
    model.score_offsets = {"a": -0.05, "c": 0.2}
    text = describe(entry)
    assert "score offsets" in text and text.index("c +0.20") < text.index("a -0.05")
    model.score_offsets, model.score_offsets_note = {}, "m/score_offsets.json was fitted for other weights <x>"
    assert "⚠ m/score_offsets.json was fitted for other weights &lt;x&gt;" in describe(entry)


def test_sample_miou_counts_as_the_confusion_matrix_does():
    # the fit's fast mIoU must be evaluate's: over classes in the labels or the predictions
    from prolab.evaluate import ConfusionMatrix

    sample = _handicapped(n=500)
    sample.scores[:40, 2] += 5.0  # class c predicted on pixels of a and b too
    for offsets in (torch.zeros(3), torch.tensor([0.0, 0.3, -0.1])):
        cm = ConfusionMatrix(4)  # a class that is neither labelled nor predicted is left out
        cm.update((sample.scores + offsets).argmax(1).numpy(), sample.labels.numpy())
        assert sample_miou(sample, offsets) == pytest.approx(cm.metrics()["miou"])
