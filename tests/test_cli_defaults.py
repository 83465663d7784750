"""The CLI names models and label sets the way the app does (issue #28): ``evaluate`` defaults to the
shipped model like ``predict`` and ``export``; every ``--descriptions`` takes a shipped label-set key
(``cityscapes_19``), ``model`` or a descriptions JSON file, through one resolver
(:func:`prolab.labelsets.resolve`)."""
from __future__ import annotations

import json

import pytest

from prolab import labelsets
from prolab.assets import DEFAULT_MODEL_DIR, EXAMPLES_DIR
from prolab.cli import main
from prolab.errors import ProLabError
from tests.builders import write_labelled_folder

pytestmark = pytest.mark.skipif(not (DEFAULT_MODEL_DIR / "model.safetensors").is_file(),
                                reason="the shipped default model is absent")


@pytest.fixture(autouse=True)
def _encoder_cache(encoder, monkeypatch):
    monkeypatch.setenv("PROLAB_CACHE_DIR", str(encoder.cache.path.parent))


def test_evaluate_defaults_to_the_shipped_model(tmp_path, capsys):
    folder = write_labelled_folder(tmp_path / "set", ["grass", "cow", "sky"], n=1)
    out = tmp_path / "eval.json"
    assert main(["evaluate", "--folder", str(folder), "--size", "64", "--out", str(out)]) == 0, \
        capsys.readouterr().err
    result = json.loads(out.read_text())
    assert result["model"] == str(DEFAULT_MODEL_DIR)
    (res,) = result["results"].values()
    assert res["images"] == 1 and 0 <= res["miou"] <= 1


def test_predict_takes_a_shipped_label_set_key(tmp_path, capsys):
    out = tmp_path / "pred"
    assert main(["predict", str(EXAMPLES_DIR / "astronaut.png"), "--descriptions", "cityscapes_19",
                 "--size", "64", "--top-properties", "0", "--out", str(out)]) == 0, capsys.readouterr().err
    classes = json.loads((out / "predictions.json").read_text())["classes"]
    assert classes == labelsets.load("cityscapes_19").class_names


def test_predict_takes_model_and_a_file_and_explains_a_wrong_name(tmp_path, capsys):
    own = tmp_path / "own"
    assert main(["predict", str(EXAMPLES_DIR / "astronaut.png"), "--descriptions", "model", "--size", "64",
                 "--top-properties", "0", "--out", str(own)]) == 0
    assert json.loads((own / "predictions.json").read_text())["classes"][:3] == \
        labelsets.for_model(_default_model()).class_names[:3]
    path = tmp_path / "two.json"
    path.write_text(json.dumps({"cat": ["A small furry pet"], "sky": ["The blue sky above"]}))
    assert main(["predict", str(EXAMPLES_DIR / "astronaut.png"), "--descriptions", str(path), "--size", "64",
                 "--top-properties", "0", "--out", str(tmp_path / "file")]) == 0
    assert json.loads((tmp_path / "file" / "predictions.json").read_text())["classes"] == ["cat", "sky"]
    capsys.readouterr()
    assert main(["predict", str(EXAMPLES_DIR / "astronaut.png"), "--descriptions", "cityscape",
                 "--out", str(tmp_path / "bad")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "'cityscape' is neither" in err and "cityscapes_19" in err


def test_labelspace_build_takes_a_shipped_key(tmp_path):
    assert main(["labelspace", "build", "--descriptions", "camvid_11", "--k", "8", "--out",
                 str(tmp_path / "ls")]) == 0
    from prolab.labelspace import LabelSpace

    assert LabelSpace.load(tmp_path / "ls").class_names == labelsets.load("camvid_11").class_names


def test_resolve_is_the_one_reader_of_a_label_set_name(tmp_path, monkeypatch):
    assert labelsets.resolve("msrc_23").key == "msrc_23"
    model = _default_model()
    assert labelsets.resolve("model", model).key == labelsets.MODEL_KEY
    path = tmp_path / "d.json"
    path.write_text(json.dumps({"cat": ["A small furry pet"]}))
    assert labelsets.resolve(path).class_names == ["cat"]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "msrc_23").write_text(json.dumps({"dog": ["A loyal pet"]}))  # a file of that name wins
    assert labelsets.resolve("msrc_23").class_names == ["dog"]
    with pytest.raises(ProLabError, match="Descriptions file not found"):
        labelsets.resolve("missing.json")
    with pytest.raises(ProLabError, match="neither a descriptions JSON file nor a shipped label set"):
        labelsets.resolve("model")  # no model given: not a name here


def _default_model():
    from prolab.model import PropertySegmenter

    return PropertySegmenter.from_pretrained(DEFAULT_MODEL_DIR)
