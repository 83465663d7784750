"""EvalCache: re-evaluating label spaces from cached features gives evaluate()'s numbers; deltas,
confused pairs, the memory bound, labelled-set zips, ``evaluate --compare`` and the bench."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from prolab import labelsets
from prolab.class_scorer import ClassScorer
from prolab.cli import main
from prolab.data import read_folder
from prolab.data.readers import extract_zip
from prolab.errors import ProLabError
from prolab.eval_cache import EvalCache, estimate_nbytes
from prolab.eval_report import compare, confused_pairs, format_comparison, shared_properties
from prolab.evaluate import evaluate
from prolab.labelspace import LabelSpace
from prolab.model import PropertySegmenter, SegmenterConfig
from tests.builders import random_label_space, write_labelled_folder

REPO = Path(__file__).resolve().parents[1]
CLASSES = ["sky", "building", "road", "tree", "car"]  # CamVid classes, in another order than the label set


def _write_folder(root: Path, n: int = 4, seed: int = 0) -> Path:
    """``images/ + masks/ + classes.txt`` of :data:`CLASSES`: textured images, block masks, ignored pixels."""
    return write_labelled_folder(root, CLASSES, n, seed)


class ColourModel(PropertySegmenter):
    """A property model whose decoder features are fixed functions of each 4 x 4 cell's colour, so that
    its label map follows the image (an untrained network predicts nearly one class everywhere)."""

    def forward(self, x, return_aux=None, return_features=False):
        c = F.avg_pool2d(x, 4)
        f = torch.cat([c, c.roll(1, 1) * c, torch.sin(3 * c), torch.ones_like(c[:, :1])], 1)
        out = self.decode_head.classifier(f)
        return {"out": out, "features": f} if return_features else {"out": out}


def colour_model(space: LabelSpace) -> ColourModel:
    torch.manual_seed(0)
    config = SegmenterConfig(backbone="compact-cnn", backbone_options={"width": 0.25}, embed_dim=space.dim,
                             decoder_channels=10, ppm=False, aux_head=False, input_size=64)
    model = ColourModel(config, space).eval()
    with torch.no_grad():
        model.decode_head.classifier.weight.normal_(0, 3.0)
        model.decode_head.classifier.bias.zero_()
    return model


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, encoder):
    """A colour model over the CamVid label space, the same label space in a saved tiny untrained model
    (for the CLI), and a five-class folder dataset."""
    from tests.app_server import save_tiny_model

    base = tmp_path_factory.mktemp("evalcache")
    model_dir = save_tiny_model(base / "model", encoder)
    model = colour_model(LabelSpace.load(model_dir / "labelspace"))
    return model, model_dir, read_folder(_write_folder(base / "data"))


def _edited_descriptions():
    ds = labelsets.load("camvid_11").descriptions.subset(CLASSES)
    return ds.with_category("road", ds["road"][:2] + ["Covered in green grass and leaves"])


def _iou_vector(res):
    return np.array([np.nan if v is None else v for v in res["per_class_iou"].values()])


@pytest.mark.parametrize("guided", [None, False])
def test_rescore_gives_evaluates_numbers(tiny, encoder, guided):
    """float32 features: identical confusion counts to evaluate(), for the model's classes, for
    projected descriptions and for an edited label space; half precision: within rounding. Both with the
    default quality step's upsampling (guided by the image, kept in the cache for it) and bilinear."""
    model, _, src = tiny
    cache = EvalCache.build(model, src, half=False, guided=guided)
    half = EvalCache.build(model, src, guided=guided)
    assert cache.images[0].features.dtype == torch.float32 and half.images[0].features.dtype == torch.float16
    assert cache.guided is (guided is None) and all((im.guide is not None) is cache.guided for im in cache.images)
    desc = _edited_descriptions()
    space = model.label_space.edited(labelsets.load("camvid_11").descriptions, encoder)
    saved = model.label_space
    try:
        model.label_space = space
        ref_space = evaluate(model, src, guided=guided)
    finally:
        model.label_space = saved
    cases = [(evaluate(model, src, guided=guided), {}),
             (evaluate(model, src, descriptions=desc, guided=guided), {"descriptions": desc}),
             (ref_space, {"label_space": space})]
    assert all(ref["guided_upsampling"] is cache.guided for ref, _ in cases)
    for ref, kwargs in cases:
        kwargs.setdefault("encoder", encoder)
        res = cache.rescore(**kwargs)
        assert res["classes"] == CLASSES and res["images"] == len(src.samples) == 4
        conf = np.asarray(res["confusion"])
        assert conf.sum() == ref["labelled_pixels"]
        assert (conf.sum(0) > 0).sum() >= 2, "the test model should predict more than one class"
        for key in ("miou", "pixel_accuracy", "mean_accuracy", "per_class_iou", "per_class_pixels",
                    "labelled_pixels", "dataset", "split", "size", "flip"):
            assert res[key] == ref[key], key
        approx = half.rescore(**kwargs)
        assert np.abs(np.asarray(approx["confusion"]) - conf).sum() <= 0.002 * conf.sum()
        assert np.nanmax(np.abs(_iou_vector(approx) - _iou_vector(ref))) < 0.01
    # the cases really score different label spaces
    assert cases[0][0]["per_class_iou"] != cases[1][0]["per_class_iou"]


ZEBRA = ["A wild horse-like animal of the African savanna", "Covered in bold black and white stripes",
         "Has a short upright mane and a tufted tail", "Grazes on grass in herds", "Four thin legs ending in hooves"]


def test_untrained_classes_get_the_open_set_credit_as_in_evaluate(tiny, encoder):
    """A dataset class whose sentences no trained class explains (a "car" class described as a zebra)
    gets the open-set credit from the cached ImageNet maps: the numbers equal evaluate()'s, with the credit
    and without. A trained class under another name ("automobile" with the car's sentences) gets none."""
    from prolab.descriptions import DescriptionSet
    from prolab.novel_prior import PriorSettings

    model, _, src = tiny
    base = labelsets.load("camvid_11").descriptions
    desc = DescriptionSet({c: (ZEBRA if c == "car" else base[c]) for c in CLASSES})
    credited = EvalCache.build(model, src, half=False)
    plain = EvalCache.build(model, src, half=False, prior=None)
    assert credited.scorer(descriptions=desc, encoder=encoder).novel_classes() == ["car"]
    assert credited.prior == PriorSettings() and all(im.sentence_map is not None for im in credited.images)
    assert all(im.sentence_map is None for im in plain.images)
    assert plain.scorer(descriptions=desc, encoder=encoder).credit is None
    assert credited.nbytes == estimate_nbytes(model, src.samples, half=False, prior=PriorSettings(), guided=True)
    assert credited.nbytes > plain.nbytes == estimate_nbytes(model, src.samples, half=False, guided=True)
    results = []
    for cache, prior in ((credited, PriorSettings()), (plain, None)):
        ref = evaluate(model, src, descriptions=desc, prior=prior)
        res = cache.rescore(descriptions=desc, encoder=encoder)
        assert np.asarray(res["confusion"]).sum() == ref["labelled_pixels"]
        for key in ("miou", "pixel_accuracy", "per_class_iou"):
            assert res[key] == ref[key], key
        results.append(res)
    assert results[0]["confusion"] != results[1]["confusion"]  # the credit changed predictions
    with pytest.raises(ProLabError, match="without the open-set credit"):
        plain.score(credited.scorer(descriptions=desc, encoder=encoder))
    # the trained classes under other names are not novel: no credit, the trained classes' numbers
    renamed = dataclasses.replace(src, classes=[{"car": "automobile"}.get(c, c) for c in src.classes])
    auto = DescriptionSet({("automobile" if c == "car" else c): base[c] for c in CLASSES})
    scorer = EvalCache.build(model, renamed, half=False).scorer(descriptions=auto, encoder=encoder)
    assert scorer.novel_classes() == [] and scorer.credit is None
    assert evaluate(model, renamed, descriptions=auto)["per_class_iou"]["automobile"] == \
        evaluate(model, src)["per_class_iou"]["car"]


def test_rescore_after_an_edit_needs_no_forward_pass(tiny, encoder, monkeypatch):
    """The app's flow: build once, then edit descriptions and re-score with the network out of reach."""
    model, _, src = tiny
    cache = EvalCache.build(model, src)
    base = labelsets.load("camvid_11").descriptions

    def no_network(*a, **k):
        raise AssertionError("a re-evaluation must not run the network")

    monkeypatch.setattr(ColourModel, "forward", no_network)
    before = cache.rescore(model.label_space.edited(base, encoder))
    edit = base.with_category("building", base["sky"])  # building now looks exactly like sky
    after = cache.rescore(model.label_space.edited(edit, encoder))
    c = compare(before, after)
    rows = {r.name: r for r in c.rows}
    assert before["per_class_iou"]["building"] > 0 and after["per_class_iou"]["building"] == 0.0
    assert np.asarray(after["confusion"])[:, CLASSES.index("building")].sum() == 0  # ties go to sky (first)
    assert rows["building"].delta == -before["per_class_iou"]["building"]
    assert c.miou == (before["miou"], after["miou"])
    deltas = [abs(r.delta) for r in c.rows if r.delta is not None]
    assert deltas == sorted(deltas, reverse=True) and deltas[0] > 0
    restricted = cache.scorer(model.label_space.edited(edit, encoder)).space
    assert restricted.class_names == CLASSES and np.array_equal(restricted.centers, model.label_space.centers)


def test_missing_classes_and_mismatched_spaces(tiny, encoder):
    model, _, src = tiny
    cache = EvalCache.build(model, src)
    partial = labelsets.load("camvid_11").descriptions.without(["car"])
    with pytest.raises(ProLabError, match="no entry for car"):
        cache.rescore(descriptions=partial, encoder=encoder)
    res = cache.rescore(descriptions=partial, encoder=encoder, allow_missing=True)
    conf = np.asarray(res["confusion"])
    assert conf[:, CLASSES.index("car")].sum() == 0  # never predicted
    if res["per_class_pixels"]["car"]:
        assert res["per_class_iou"]["car"] == 0.0
    with pytest.raises(ProLabError, match="dimensional"):
        cache.rescore(random_label_space(dim=16))
    with pytest.raises(ProLabError, match="dataset's classes"):
        cache.score(ClassScorer(model))


def test_cache_memory_is_reported_and_bounded(tiny, monkeypatch):
    model, _, src = tiny
    cache = EvalCache.build(model, src, prior=None)  # without the ImageNet maps (counted in the credit test)
    features = sum(im.features.nelement() * 2 for im in cache.images)
    labels = sum(48 + 8 * i for i in range(4)) * 64  # the masks' pixels, one byte each
    guides = 3 * labels  # guided upsampling (the default step) keeps each image, RGB at its mask's size
    head = 4 * model.label_space.dim * (10 + 1)
    assert cache.nbytes == features + labels + guides + head == estimate_nbytes(model, src.samples, guided=True)
    cache.rescore()
    assert cache.nbytes == features + labels + guides + head  # scoring keeps nothing
    full = EvalCache.build(model, src, half=False, prior=None, guided=False)
    assert full.nbytes == estimate_nbytes(model, src.samples, half=False) == 2 * features + labels + head

    import prolab.evaluate

    def no_forward(*a, **k):
        raise AssertionError("the bound must be checked before any forward pass")

    monkeypatch.setattr(prolab.evaluate, "embed_image_factored", no_forward)  # the name build()'s loop calls
    with pytest.raises(ProLabError, match=r"takes 0.1 MB, more than the limit of 0.0 MB"):
        EvalCache.build(model, src, max_bytes=1000, prior=None)


def test_bad_inputs_are_clear_errors(tiny, tmp_path):
    from tests.app_server import save_tiny_category_model
    from prolab.model import PropertySegmenter

    model, _, src = tiny
    category = PropertySegmenter.from_pretrained(save_tiny_category_model(tmp_path / "cat"))
    with pytest.raises(ProLabError, match="property"):
        EvalCache.build(category, src)
    bad = _write_folder(tmp_path / "bad", n=2)
    w, h = Image.open(next((bad / "images").glob("im1.*"))).size  # a mask must have its image's size
    Image.fromarray(np.full((h, w), 7, np.uint8)).save(bad / "masks" / "im1.png")
    with pytest.raises(ProLabError, match=r"im1.png: value 7 is not a class index"):
        EvalCache.build(model, read_folder(bad))


def test_compare_rows_and_table():
    a = {"dataset": "d", "split": "val", "miou": 0.4, "pixel_accuracy": 0.8,
         "per_class_iou": {"cat": 0.269, "dog": 0.002, "sky": 0.9, "boat": None},
         "per_class_pixels": {"cat": 10, "dog": 5, "sky": 50, "boat": 0}}
    b = {**a, "miou": 0.45, "per_class_iou": {"cat": 0.312, "dog": 0.04, "sky": 0.85, "boat": None}}
    c = compare(a, b)
    assert [r.name for r in c.rows] == ["sky", "cat", "dog", "boat"]
    assert c.rows[0].delta == pytest.approx(-0.05) and c.rows[-1].delta is None
    assert c.miou_delta == pytest.approx(0.05)
    text = format_comparison(c)
    assert "cat" in text and "26.90" in text and "31.20" in text and "+4.30" in text
    assert "mIoU" in text and "40.00" in text and "+5.00" in text
    assert text.splitlines()[-1] == "no pixels and never predicted (no IoU): boat"
    assert json.loads(json.dumps(c.to_dict()))["per_class"][0]["class"] == "sky"
    with pytest.raises(ProLabError, match="different data"):
        compare(a, {**b, "dataset": "other"})


def test_confused_pairs_with_shared_properties():
    space = random_label_space(dim=8, k=10, classes=4)
    matrix = np.zeros((4, 10), np.float32)
    matrix[0, [1, 2, 5]] = matrix[3, [1, 2, 7]] = matrix[1, [0, 5]] = matrix[2, [3, 4]] = 1
    space = dataclasses.replace(space, class_matrix=matrix)
    names = space.class_names
    confusion = [[50, 3, 0, 9],
                 [1, 40, 0, 0],
                 [0, 0, 30, 2],
                 [8, 0, 0, 20]]
    metrics = {"classes": names, "confusion": confusion}
    pairs = confused_pairs(metrics, space, top=5)
    assert [(p.a, p.b, p.a_as_b, p.b_as_a) for p in pairs] == [
        (names[0], names[3], 9, 8), (names[0], names[1], 3, 1), (names[2], names[3], 2, 0)]
    assert pairs[0].shared_properties == ["p1", "p2"] == shared_properties(space, names[3].upper(), names[0])
    assert pairs[1].shared_properties == ["p5"] and pairs[2].shared_properties == []
    assert confused_pairs(metrics, space, top=1) == pairs[:1]
    assert confused_pairs(metrics, None)[0].shared_properties == []
    with pytest.raises(ProLabError, match="confusion matrix"):
        confused_pairs({"per_class_iou": {}}, space)


# ---------------------------------------------------------------------------- zips
def _zip(path: Path, files: dict[str, bytes], links: tuple[str, ...] = ()) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
        for name in links:
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o120777 << 16)
            zf.writestr(info, "/etc/passwd")
    return path


def _folder_files(root: Path, prefix: str = "") -> dict[str, bytes]:
    return {prefix + str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def test_read_folder_from_a_zip(tmp_path):
    files = _folder_files(_write_folder(tmp_path / "src", n=3), "mydata/")
    files["__MACOSX/mydata/._classes.txt"] = b"junk"
    z = _zip(tmp_path / "mydata.zip", files)
    src = read_folder(z, extract_to=tmp_path / "out")
    assert src.name == "mydata" and src.classes == CLASSES and [s.stem for s in src.samples] == ["im0", "im1", "im2"]
    assert Path(src.meta["extracted_to"]) == tmp_path / "out" and src.samples[0].image.is_file()
    flat = read_folder(_zip(tmp_path / "flat.zip", _folder_files(tmp_path / "src")))  # layout at the top level
    assert len(flat.samples) == 3 and Path(flat.meta["extracted_to"]).is_dir()


@pytest.mark.parametrize("name, files, links, message", [
    ("traversal", {"images/a.png": b"x", "../evil.txt": b"x"}, (), "unsafe path"),
    ("absolute", {"/tmp/prolab-test-evil.txt": b"x"}, (), "unsafe path"),
    ("link", {"images/a.png": b"x"}, ("masks",), "symbolic link"),
    ("no_masks", {"data/images/a.png": b"x", "data/classes.txt": b"a\n"}, (), "images/ and masks/"),
    ("two_folders", {"a/images/x.png": b"x", "b/images/y.png": b"x"}, (), "at its top level or inside one"),
    ("file_and_folder", {"images": b"x", "images/a.png": b"x"}, (), "cannot extract"),
])
def test_bad_zips_are_refused(tmp_path, name, files, links, message):
    z = _zip(tmp_path / f"{name}.zip", files, links)
    out = tmp_path / "out" / "inner"
    with pytest.raises(ProLabError, match=message):
        read_folder(z, extract_to=out)
    assert not (tmp_path / "out" / "evil.txt").exists() and not Path("/tmp/prolab-test-evil.txt").exists()
    assert not any(p.is_symlink() for p in tmp_path.rglob("*"))


def test_zip_limits_and_non_zips(tmp_path):
    z = _zip(tmp_path / "big.zip", {"images/a.png": b"0" * 5000, "masks/a.png": b"0" * 5000})
    with pytest.raises(ProLabError, match="unpacks to"):
        extract_zip(z, tmp_path / "o1", max_bytes=8000)
    with pytest.raises(ProLabError, match="holds 2 files; the limit is 1"):
        extract_zip(z, tmp_path / "o2", max_files=1)
    assert not (tmp_path / "o1").exists() and not (tmp_path / "o2").exists()  # refused before writing
    (tmp_path / "notzip.zip").write_text("hello")
    with pytest.raises(ProLabError, match="not a readable zip"):
        read_folder(tmp_path / "notzip.zip")


# ---------------------------------------------------------------------------- CLI and bench
def test_evaluate_compare_cli(tiny, tmp_path, capsys, encoder, monkeypatch):
    monkeypatch.setenv("PROLAB_CACHE_DIR", str(encoder.cache.path.parent))
    model, model_dir, src = tiny
    a = tmp_path / "A.json"
    b = tmp_path / "B.json"
    a.write_text(json.dumps(labelsets.load("camvid_11").descriptions.subset(CLASSES).to_dict()))
    b.write_text(json.dumps(_edited_descriptions().to_dict()))
    folder = src.samples[0].image.parents[1]
    out = tmp_path / "cmp.json"
    capsys.readouterr()
    assert main(["evaluate", "--model", str(model_dir), "--folder", str(folder), "--descriptions", str(a),
                 "--compare", str(b), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "mIoU" in text and "A IoU" in text and "road" in text
    saved = json.loads(out.read_text())
    entry = saved["results"][f"{folder.name}/all"]
    assert saved["a"] == str(a) and saved["b"] == str(b)
    rows = entry["comparison"]["per_class"]
    assert [abs(r["delta"]) for r in rows] == sorted((abs(r["delta"]) for r in rows), reverse=True)
    deltas = {r["class"]: r["delta"] for r in rows}
    assert deltas["road"] == pytest.approx(entry["b"]["per_class_iou"]["road"] - entry["a"]["per_class_iou"]["road"])
    # A equals what plain evaluate --descriptions A reports (half-precision cache: within rounding)
    plain = tmp_path / "plain.json"
    assert main(["evaluate", "--model", str(model_dir), "--folder", str(folder), "--descriptions", str(a),
                 "--out", str(plain)]) == 0
    ref = json.loads(plain.read_text())["results"][f"{folder.name}/all"]
    assert "confusion" not in ref and entry["a"]["miou"] == pytest.approx(ref["miou"], abs=0.01)
    # both upsample as the default quality step does (guided), and --no-guided-upsampling turns both to bilinear
    assert entry["a"]["guided_upsampling"] is ref["guided_upsampling"] is True and "guided upsampling" in text
    common = ["evaluate", "--model", str(model_dir), "--folder", str(folder), "--descriptions", str(a),
              "--no-guided-upsampling"]
    assert main(common + ["--compare", str(b), "--out", str(out)]) == 0
    bilinear = json.loads(out.read_text())["results"][f"{folder.name}/all"]["a"]
    assert main(common + ["--out", str(plain)]) == 0
    ref_b = json.loads(plain.read_text())["results"][f"{folder.name}/all"]
    assert bilinear["guided_upsampling"] is ref_b["guided_upsampling"] is False
    assert bilinear["miou"] == pytest.approx(ref_b["miou"], abs=0.01)
    # a zip works the same way, and its extracted copy is removed afterwards
    z = _zip(tmp_path / "set.zip", _folder_files(folder))
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))
    capsys.readouterr()
    assert main(["evaluate", "--model", str(model_dir), "--folder", str(z), "--compare", str(b)]) == 0
    assert "set all (4 images" in capsys.readouterr().out
    assert list((tmp_path / "tmp").iterdir()) == []
    for flags, message in [(["--mode", "slide"], "drop --mode slide"), (["--teacher"], "drop --teacher"),
                           (["--compare", str(tmp_path / "missing.json")], "not found")]:
        args = ["evaluate", "--model", str(model_dir), "--folder", str(folder), "--compare", str(b), *flags]
        capsys.readouterr()
        assert main(args) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:") and message in err[0], err


def test_eval_rescore_bench_runs(tiny, tmp_path, encoder):
    _, model_dir, src = tiny
    env = {**os.environ, "PROLAB_CACHE_DIR": str(encoder.cache.path.parent), "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-m", "bench.eval_rescore", "--model", str(model_dir), "--folder",
                          str(src.samples[0].image.parents[1]), "--label-set", "camvid_11", "--runs", "2",
                          "--threads", "1", "--json", str(tmp_path / "b.json")],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    for row in ("first evaluation", "re-evaluation after editing 'sky'", "cache memory"):
        assert row in out.stdout, out.stdout
    saved = json.loads((tmp_path / "b.json").read_text())
    assert saved["images"] == 4 and saved["re_evaluation"]["runs"] == 2 and saved["cache_mb"] > 0


def test_labelled_sets_are_found_under_the_data_root(tmp_path):
    from prolab.data.readers import find_data_root, labelled_sets

    _write_folder(tmp_path / "folder_layout", n=1)  # masks/, not labels/: not a shared dataset
    write_labelled_folder(tmp_path / "mine", CLASSES, n=2, shared=True)
    assert labelled_sets(tmp_path) == [("mine", 2)] and labelled_sets(tmp_path, "train") == []
    assert find_data_root(tmp_path) == tmp_path and find_data_root(tmp_path / "nope") is None
