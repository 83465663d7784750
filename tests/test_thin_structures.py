"""bench.thin_structures and tools.ground_class_rows on a tiny untrained CamVid model (two val images)."""
from __future__ import annotations

import json

import numpy as np
import pytest

from tests.app_server import save_tiny_model


@pytest.fixture(scope="module")
def tiny_camvid(tmp_path_factory, encoder):
    return save_tiny_model(tmp_path_factory.mktemp("thin"), encoder, output_scale=40.0)


def test_thin_structures_smoke(tiny_camvid, datasets_dir, tmp_path):
    from bench.thin_structures import THIN, main

    out = tmp_path / "thin.json"
    res = main(["--model", str(tiny_camvid), "--data-root", str(datasets_dir), "--limit", "2", "--size", "128",
                "--means-images", "2", "--json", str(out)])
    assert set(res["camvid_val"]) == {"evaluate (aligned)", "property scores only", "class means of train activations"}
    assert json.loads(out.read_text())["camvid_val"] == res["camvid_val"]
    for cls in THIN:
        ls = res["label_space"][cls]
        assert 0 < ls["max_containment"] <= 1 and ls["properties"] == len(ls["property_names"])
        assert 0 <= res["camvid_train_labels"][cls]["stride4_kept_pct"] <= 100
        for scored in res["camvid_val"].values():
            c = scored["classes"][cls]
            assert 0 <= c["rank1_pct"] <= c["rank_le2_pct"] <= 100
            assert c["iou_at_best_bias_pct"] >= c["iou_pct"] - 1e-6  # bias 0 is in the sweep
    # a label grid at stride 4 keeps less of the thin poles than of the road
    labels = res["camvid_train_labels"]
    assert labels["pole"]["stride4_kept_pct"] < labels["road"]["stride4_kept_pct"]


def test_ground_class_rows_drops_exactly_the_sentences_below_the_threshold(tiny_camvid, datasets_dir, tmp_path):
    from prolab.labelspace import LabelSpace
    from tools.ground_class_rows import main

    out = tmp_path / "grounded"
    def run(threshold: float) -> dict:
        main(["--model", str(tiny_camvid), "--data-root", str(datasets_dir), "--classes", "pole", "--limit", "2",
              "--threshold", str(threshold), "--out", str(out)])
        return json.loads((out / "grounded_rows.json").read_text())["classes"]["pole"]

    report = run(0.0)
    assert not report["dropped"]
    means = {s: a for s, _, a in report["kept"]}
    threshold = float(np.median(sorted(set(means.values()))))  # some properties below it, some above
    report = run(threshold)
    assert report["kept"] and report["dropped"]
    assert all(a >= threshold for _, _, a in report["kept"]) and all(a < threshold for _, _, a in report["dropped"])
    assert {s for s, _, _ in report["kept"] + report["dropped"]} == set(means)
    before, after = LabelSpace.load(tiny_camvid / "labelspace"), LabelSpace.load(out / "labelspace")
    pole = after.class_names.index("pole")
    kept = {p for _, p, _ in report["kept"]}
    assert set(np.flatnonzero(after.class_matrix[pole])) == kept
    np.testing.assert_array_equal(after.centers, before.centers)  # the properties themselves are unchanged
    others = [i for i in range(len(after.class_names)) if i != pole]
    np.testing.assert_array_equal(after.class_matrix[others], before.class_matrix[others])


def test_thin_probe_smoke(tiny_camvid, datasets_dir, tmp_path):
    from bench.thin_probe import THIN, main

    out = tmp_path / "probe.json"
    res = main(["--model", str(tiny_camvid), "--reference", str(tiny_camvid), "--data-root", str(datasets_dir),
                "--fit-images", "2", "--train-images", "2", "--val-limit", "2", "--steps", "3", "--json", str(out)])
    r = res["models"][str(tiny_camvid)]
    assert json.loads(out.read_text())["models"][str(tiny_camvid)] == r
    assert r["supervision"] == "property" and res["val_images"] == 2
    for part in ("train_fit", "probe_val", "probe_train", "rows_shipped_head_val", "rows_refit_cosine_val",
                 "rows_refit_cosine_ce_train"):
        assert set(THIN) <= set(r[part]["per_class"])
        assert 0 <= r[part]["miou"] <= 100


def test_thin_probe_reads_out_what_the_features_hold():
    """A class that one feature channel marks is found by the probe (a thin column of it included);
    with that channel zeroed it cannot be."""
    import torch

    from bench.thin_probe import fit_probe, probe_iou

    torch.manual_seed(0)
    feats, labels = [], []
    for _ in range(4):
        y = torch.zeros(16, 16, dtype=torch.long)
        y[:, 5] = 1  # a one-pixel column, like a pole
        f = torch.randn(3, 16, 16) * 0.1
        f[0] = (y == 1).float() * 4 - 2  # channel 0 holds the class at full resolution
        feats.append(f)
        labels.append(y)
    w, b = fit_probe(feats, labels, 2, 150, points=256, batch=2, lr=0.1)
    assert probe_iou(feats, labels, w, b, ["road", "pole"])["per_class"]["pole"] > 90
    blind = [torch.cat([torch.zeros(1, 16, 16), f[1:]]) for f in feats]
    w, b = fit_probe(blind, labels, 2, 150, points=256, batch=2, lr=0.1)
    assert probe_iou(blind, labels, w, b, ["road", "pole"])["per_class"]["pole"] < 30


def test_camera_shift_bench_smoke(tiny_camvid, datasets_dir, tmp_path, monkeypatch):
    """bench.camera_shift: one row per camera and model, the clean row first, the JSON as returned, and the
    example sheet written; an identity camera scores exactly like the clean images."""
    from bench.camera_shift import CLEAN, main

    out, sheet = tmp_path / "cam.json", tmp_path / "cams.jpg"
    res = main(["--model", str(tiny_camvid), "--data-root", str(datasets_dir), "--limit", "2", "--threads", "1",
                "--preset", "JPEG quality 25", "--preset", "half-resolution sensor", "--json", str(out),
                "--examples", str(sheet)])
    rows = res["results"]["camvid/val"][str(tiny_camvid)]
    assert list(rows) == [CLEAN, "JPEG quality 25", "half-resolution sensor"]
    assert all(r["images"] == 2 and 0 <= r["miou"] <= 1 and 0 <= r["miou_labelled"] <= 1 for r in rows.values())
    clean = rows[CLEAN]  # the mean over the classes with val pixels, computed from evaluate's own numbers
    labelled = [c for c, v in clean["per_class_iou"].items() if v is not None]
    assert clean["labelled_classes"] <= len(labelled)
    assert json.loads(out.read_text())["results"] == res["results"] and sheet.stat().st_size > 1000
    from bench import camera_shift
    from prolab.data.readers import read_shared
    from prolab.data.transforms import CameraLook
    from prolab.evaluate import load_mapping
    from prolab.model import PropertySegmenter

    model = PropertySegmenter.from_pretrained(tiny_camvid)
    source = read_shared(datasets_dir, "camvid", "val")
    same = camera_shift.measure(model, source, load_mapping(tiny_camvid), CameraLook(), 2)
    assert same["per_class_iou"] == rows[CLEAN]["per_class_iou"]
    seen = []  # the cameras reach the network: each image it sees differs from the recorded one
    real = camera_shift.rendered
    monkeypatch.setattr(camera_shift, "rendered", lambda im, look: seen.append((im, real(im, look))) or seen[-1][1])
    camera_shift.measure(model, source, load_mapping(tiny_camvid), CameraLook(jpeg_quality=25, noise=0.02), 2)
    assert len(seen) == 2 and all(a.shape == b.shape and np.abs(a.astype(int) - b).mean() > 1 for a, b in seen)
    grey = np.full((16, 16, 3), 128, np.uint8)
    other = grey.copy()
    other[0, 0, 0] = 127
    noisy = CameraLook(noise=0.05)  # noise seeded by the image: the same image, the same noise; another, other noise
    assert np.array_equal(real(grey, noisy), real(grey.copy(), noisy))
    assert not np.array_equal(real(grey, noisy)[1:], real(other, noisy)[1:])


def test_average_weights_interpolates_the_weights_and_refuses_other_label_spaces(tiny_camvid, encoder, tmp_path):
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    from prolab.model import PropertySegmenter
    from tests.app_server import save_tiny_model
    from tools.average_weights import main

    second = tmp_path / "second"
    shutil.copytree(tiny_camvid, second)
    state = load_file(tiny_camvid / "model.safetensors")
    moved = {k: v + 1.0 if v.is_floating_point() else v for k, v in state.items()}
    save_file(moved, str(second / "model.safetensors"))
    (second / "score_offsets.json").write_text("{}")
    out = tmp_path / "soup"
    main(["--model", str(tiny_camvid), "--model", str(second), "--weight", "0.25", "--out", str(out)])
    soup = load_file(out / "model.safetensors")
    for name, a in state.items():
        expected = a + 0.25 if a.is_floating_point() else a
        torch.testing.assert_close(soup[name], expected)
    assert not (out / "score_offsets.json").exists()
    assert json.loads((out / "averaged_from.json").read_text())["weight_of_second"] == 0.25
    model = PropertySegmenter.from_pretrained(out)
    assert model.class_names == PropertySegmenter.from_pretrained(tiny_camvid).class_names

    other = save_tiny_model(tmp_path / "other", encoder, key="msrc_23")
    shutil.copy(tiny_camvid / "config.json", other / "config.json")
    with pytest.raises(SystemExit, match="different label spaces"):
        main(["--model", str(tiny_camvid), "--model", str(other), "--out", str(tmp_path / "bad")])
    with pytest.raises(SystemExit, match="new folder"):
        main(["--model", str(tiny_camvid), "--model", str(second), "--out", str(second)])
