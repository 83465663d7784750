"""The ONNX Runtime backend: parity with eager PyTorch on the shipped model and examples, dynamic
shapes, the CLI (`export`, `--backend onnx`, `--quality`), and refusal of a graph from other weights."""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from prolab.assets import DEFAULT_MODEL_DIR, EXAMPLES_DIR
from prolab.cli import main
from prolab.images import load_image
from prolab.class_scorer import model_class_scores
from prolab.inference import embed_image_factored, segment

EXAMPLES = sorted(p for p in EXAMPLES_DIR.iterdir() if p.suffix.lower() in (".png", ".jpg"))


@pytest.fixture(scope="module")
def model():
    from prolab.model import PropertySegmenter

    if not (DEFAULT_MODEL_DIR / "model.safetensors").is_file():
        pytest.skip("the shipped default model is absent")
    return PropertySegmenter.from_pretrained(DEFAULT_MODEL_DIR)


REPO = Path(__file__).resolve().parents[1]
EXPORT_OUTPUT = {}  # what `prolab export` printed in onnx_model_dir


@pytest.fixture(scope="module")
def onnx_model_dir(model, tmp_path_factory):
    """A copy of the default model's folder with its graph exported by the CLI (once per module, in a
    process of its own: its stderr is what a user sees)."""
    d = tmp_path_factory.mktemp("onnx") / "default"
    shutil.copytree(DEFAULT_MODEL_DIR, d, ignore=shutil.ignore_patterns("model.onnx", "*.jsonl"))
    env = dict(os.environ, PYTHONPATH=str(REPO), PYTHONWARNINGS="default")
    res = subprocess.run([sys.executable, "-m", "prolab", "export", "--model", str(d), "--format", "onnx"],
                         capture_output=True, text=True, env=env, cwd=REPO)
    assert res.returncode == 0, res.stderr
    EXPORT_OUTPUT.update(stdout=res.stdout, stderr=res.stderr)
    assert (d / "model.onnx").is_file()
    return d


def test_export_prints_no_irrelevant_warning(onnx_model_dir):
    """`prolab export` says what it wrote, without torch's "training mode" warning (the model is exported
    in eval mode) or the exporter's notes about torchvision ops prolab does not use (issue #28)."""
    assert EXPORT_OUTPUT["stdout"].startswith("Wrote ")
    err = EXPORT_OUTPUT["stderr"]
    assert "training mode" not in err
    assert "torchvision" not in err
    assert "LeafSpec" not in err
    assert err.strip() == "", err


@pytest.fixture(scope="module")
def onnx_net(model, onnx_model_dir):
    from prolab.onnx_backend import OnnxSegmenter

    return OnnxSegmenter(model, onnx_model_dir / "model.onnx")


@pytest.mark.parametrize("size", [320, 416])
def test_parity_on_examples(model, onnx_net, size):
    """Embeddings within 1e-3 of eager PyTorch and >= 99.5 % identical masks, at two input sizes
    (neither is the export's example size, so the dynamic height/width is exercised)."""
    for path in EXAMPLES:
        image = load_image(path)
        emb_t, fac_t = embed_image_factored(model, image, size=size)
        emb_o, fac_o = embed_image_factored(onnx_net, image, size=size)
        assert emb_t.shape == emb_o.shape
        assert float((emb_t - emb_o).abs().max()) < 1e-3, path.name
        assert float((fac_t.features - fac_o.features).abs().max()) < 1e-3, path.name
        # the label-space scoring is the same function for both backends
        mask_t = segment(model_class_scores(model, fac_t), image.shape[:2])
        mask_o = segment(model_class_scores(onnx_net, fac_o), image.shape[:2])
        assert (mask_t == mask_o).mean() >= 0.995, path.name


def test_dynamic_batch_slide_and_flip(model, onnx_net):
    """Sliding windows (batched crops) and flips go through the same graph."""
    image = load_image(EXAMPLES[0])
    kw = dict(size=384, mode="slide", crop=256, stride=192, batch_size=3, flip=True)
    a = embed_image_factored(model, image, **kw)[0]
    b = embed_image_factored(onnx_net, image, **kw)[0]
    assert float((a - b).abs().max()) < 1e-3


def test_onnx_model_is_a_drop_in(model, onnx_net):
    assert onnx_net.config is model.config and onnx_net.label_space is model.label_space
    assert onnx_net.backend == "onnx" and not onnx_net.training
    with pytest.raises(Exception, match="multiples of 32"):
        onnx_net(torch.zeros(1, 3, 40, 64))


def test_graph_from_other_weights_is_refused(model, onnx_model_dir):
    import copy

    from prolab.errors import ProLabError
    from prolab.onnx_backend import OnnxSegmenter

    other = copy.deepcopy(model)
    with torch.no_grad():
        other.decode_head.classifier.bias += 0.1
    with pytest.raises(ProLabError, match="re-run `prolab export"):
        OnnxSegmenter(other, onnx_model_dir / "model.onnx")


def test_backends_are_kept_only_in_the_pool_the_caller_holds(model, onnx_model_dir):
    """Without a pool every call loads its own backend (the library keeps nothing process-wide); an
    :class:`OnnxPool` loads each model's once and drops the least recently used beyond its size."""
    import copy

    from prolab.onnx_backend import OnnxPool, OnnxSegmenter, with_backend

    a, b = (with_backend(model, "onnx", onnx_model_dir) for _ in range(2))
    assert isinstance(a, OnnxSegmenter) and a is not b and a.eager is model
    pool = OnnxPool(size=1)
    first = with_backend(model, "onnx", onnx_model_dir, pool=pool)
    assert with_backend(model, "onnx", onnx_model_dir, pool=pool) is first and len(pool) == 1
    assert with_backend(first, "torch", pool=pool) is model and with_backend(first, "onnx", pool=pool) is first
    other = copy.deepcopy(model)  # same weights: the same graph serves it, with its own session
    assert pool.get(other, onnx_model_dir).eager is other and len(pool) == 1
    assert pool.get(model, onnx_model_dir) is not first  # dropped for ``other``: loaded again


def test_pool_export_blocks_only_its_own_model(model, monkeypatch):
    """While one model's backend is being exported, another model's request goes on, and a second
    request for the model being exported waits for that export instead of starting its own."""
    import copy
    import threading
    import types

    from prolab import onnx_backend

    other = copy.deepcopy(model)
    started, release, calls = threading.Event(), threading.Event(), []

    def fake_onnx_model(m, model_dir=None, export_if_missing=True):
        calls.append(m)
        if m is model:
            started.set()
            assert release.wait(10)
        return types.SimpleNamespace(eager=m)

    monkeypatch.setattr(onnx_backend, "onnx_model", fake_onnx_model)
    pool = onnx_backend.OnnxPool(size=4)
    got = {}
    slow = [threading.Thread(target=lambda i=i: got.__setitem__(i, pool.get(model))) for i in range(2)]
    slow[0].start()
    assert started.wait(10)
    slow[1].start()
    quick = threading.Thread(target=lambda: got.__setitem__("other", pool.get(other)))
    quick.start()
    quick.join(10)  # one lock for the whole pool would keep it waiting behind the export
    before_release = dict(got)
    release.set()
    for t in [quick, *slow]:
        t.join(10)
    assert list(before_release) == ["other"] and before_release["other"].eager is other
    assert got[0] is got[1] and got[0].eager is model
    assert calls.count(model) == 1 and calls.count(other) == 1


def test_pool_retries_a_failed_load_one_thread_at_a_time(model, monkeypatch):
    """A load that fails is retried by the next waiting request, never by two threads at once, and the
    pool keeps no bookkeeping for it afterwards."""
    import threading
    import time
    import types

    from prolab import onnx_backend
    from prolab.errors import ProLabError

    running, most, attempts = [0], [0], []
    guard, retrying = threading.Lock(), threading.Event()

    def flaky_onnx_model(m, model_dir=None, export_if_missing=True):
        with guard:
            running[0] += 1
            most[0] = max(most[0], running[0])
            attempts.append(m)
            first = len(attempts) == 1
        if not first:
            retrying.set()
        time.sleep(0.05 if first else 0.3)
        with guard:
            running[0] -= 1
        if first:
            raise ProLabError("export failed")
        return types.SimpleNamespace(eager=m)

    monkeypatch.setattr(onnx_backend, "onnx_model", flaky_onnx_model)
    pool = onnx_backend.OnnxPool(size=4)
    results, errors = [], []

    def ask():
        try:
            results.append(pool.get(model))
        except ProLabError as exc:
            errors.append(exc)

    early = [threading.Thread(target=ask) for _ in range(2)]
    for t in early:
        t.start()
    assert retrying.wait(10)  # the second request retries the failed load; now two more arrive
    late = [threading.Thread(target=ask) for _ in range(2)]
    for t in late:
        t.start()
    for t in early + late:
        t.join(10)
    assert most[0] == 1 and len(errors) == 1 and len(attempts) == 2
    assert len(results) == 3 and all(r is results[0] for r in results)
    assert pool._loading == {} and pool.get(model) is results[0]


def test_cli_predict_with_onnx_matches_torch(onnx_model_dir, tmp_path):
    from PIL import Image

    image = str(EXAMPLES[1])
    for backend in ("torch", "onnx"):
        assert main(["predict", image, "--model", str(onnx_model_dir), "--out", str(tmp_path / backend),
                     "--backend", backend, "--top-properties", "0"]) == 0
    stem = EXAMPLES[1].stem
    a = np.asarray(Image.open(tmp_path / "torch" / f"{stem}_mask.png"))
    b = np.asarray(Image.open(tmp_path / "onnx" / f"{stem}_mask.png"))
    assert (a == b).mean() >= 0.995


def test_cli_quality_and_errors(onnx_model_dir, tmp_path, capsys):
    import json

    assert main(["predict", str(EXAMPLES[1]), "--model", str(onnx_model_dir), "--out", str(tmp_path / "fast"),
                 "--quality", "fast", "--top-properties", "0"]) == 0
    assert json.loads((tmp_path / "fast" / "predictions.json").read_text())["images"]
    assert main(["export", "--model", str(onnx_model_dir), "--out", str(tmp_path)]) == 2
    assert "is a folder" in capsys.readouterr().err


def test_multiscale_factors_stay_exact(model):
    """Multi-scale + flip averages the head's features too, so the low-rank re-scoring path gives the
    averaged embeddings exactly."""
    image = load_image(EXAMPLES[2])
    emb, factors = embed_image_factored(model, image, size=160, scales=(1.0, 1.5), flip=True)
    assert factors is not None and tuple(factors.shape) == tuple(emb.shape)
    assert float((factors.embeddings() - emb).abs().max()) < 1e-4
    single = embed_image_factored(model, image, size=160)[0]
    assert single.shape == emb.shape and float((single - emb).abs().max()) > 1e-3  # it does change the output


def test_quality_dial_settings(model):
    from prolab.errors import ProLabError
    from prolab.quality import QUALITIES, get_quality

    assert list(QUALITIES) == ["fast", "default", "accurate"]
    assert get_quality("fast").backend == "onnx"
    assert get_quality("fast").size(416) < get_quality("default").size(416) == 416
    assert get_quality("accurate").flip and len(get_quality("accurate").scales) > 1
    assert [q.guided for q in QUALITIES.values()] == [False, True, True]  # docs/RESULTS.md, the dial
    assert get_quality(None) is QUALITIES["default"] and get_quality(QUALITIES["fast"]) is QUALITIES["fast"]
    with pytest.raises(ProLabError, match="fast, default, accurate"):
        get_quality("turbo")


def test_cli_quality_steps_and_the_flag_choose_the_upsampling(onnx_model_dir, tmp_path):
    import json

    from tests.builders import write_labelled_folder

    folder = write_labelled_folder(tmp_path / "set", ["sky", "road", "tree"], n=2)
    for flags, guided in ((["--quality", "default"], True), (["--quality", "accurate"], True),
                          (["--quality", "fast"], False), (["--quality", "fast", "--guided-upsampling"], True),
                          (["--quality", "accurate", "--no-guided-upsampling"], False),
                          (["--no-guided-upsampling"], False), ([], True)):
        out = tmp_path / "e.json"
        assert main(["evaluate", "--model", str(onnx_model_dir), "--folder", str(folder), "--size", "96",
                     *flags, "--out", str(out)]) == 0
        res = next(iter(json.loads(out.read_text())["results"].values()))
        assert res["guided_upsampling"] is guided, flags


def test_cli_evaluate_with_onnx_matches_torch(onnx_model_dir, tmp_path):
    import json

    from tests.builders import write_labelled_folder

    folder = write_labelled_folder(tmp_path / "set", ["sky", "road", "tree"], n=3)
    res = {}
    for backend in ("torch", "onnx"):
        out = tmp_path / f"{backend}.json"
        assert main(["evaluate", "--model", str(onnx_model_dir), "--folder", str(folder), "--size", "128",
                     "--backend", backend, "--out", str(out)]) == 0
        res[backend] = next(iter(json.loads(out.read_text())["results"].values()))
    assert res["onnx"]["backend"] == "onnx" and res["torch"]["backend"] == "torch"
    assert abs(res["onnx"]["miou"] - res["torch"]["miou"]) < 0.005
