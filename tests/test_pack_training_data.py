"""tools.pack_training_data: a packed split gives the loader the same label maps at the same size."""
from __future__ import annotations

import numpy as np
from PIL import Image

from prolab.data.dataset import load_pair
from prolab.data.readers import read_shared
from prolab.data.union import LabelMaps
from tools.pack_training_data import main as pack

SHORT = 48


def _make_root(root):
    rng = np.random.default_rng(0)
    ds, teacher = root / "toy", root / "teacher_ade150" / "toy"
    for d in (ds / "images", ds / "labels", teacher):
        d.mkdir(parents=True)
    (ds / "classes.txt").write_text("a\nb\nc\n")
    (root / "teacher_ade150" / "classes.txt").write_text("other\nwall\nsky\n")
    sizes = {"big": (150, 100), "small": (60, 40)}  # (w, h): the small one is never upscaled
    for stem, (w, h) in sizes.items():
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(ds / "images" / f"{stem}.jpg")
        lab = rng.integers(0, 3, (h, w)).astype(np.uint8)
        lab[:, ::7] = 255  # void columns that the teacher fills
        lab[:, 5] = 1  # a one-pixel-wide structure
        Image.fromarray(lab).save(ds / "labels" / f"{stem}.png")
        Image.fromarray(rng.integers(0, 3, (h, w)).astype(np.uint8)).save(teacher / f"{stem}.png")
        Image.fromarray(rng.integers(0, 256, (h, w)).astype(np.uint8)).save(teacher / f"{stem}_conf.png")
    (ds / "train.txt").write_text("big\nsmall\n")


def test_pack_keeps_the_fused_labels_and_sizes(tmp_path):
    root, out = tmp_path / "data", tmp_path / "pack"
    _make_root(root)
    pack(["--data-root", str(root), "--out", str(out), "--dataset", "toy", "--short-side", str(SHORT)])
    # Identity tables: the comparison is of raw label values after fusion and resizing.
    maps = LabelMaps(gt=np.arange(256, dtype=np.uint8), teacher=(np.arange(256) + 10).astype(np.uint8))
    orig, packed = read_shared(root, "toy"), read_shared(out, "toy")
    assert [s.stem for s in packed.samples] == ["big", "small"]
    assert packed.classes == orig.classes and all(s.teacher_conf is not None for s in packed.samples)
    for a, b in zip(orig.samples, packed.samples):
        img_a, lab_a = load_pair(a, maps, SHORT, 0.5)
        img_b, lab_b = load_pair(b, maps, SHORT, 0.5)
        assert img_a.shape == img_b.shape
        np.testing.assert_array_equal(lab_a, lab_b)
        assert (lab_b >= 10).any() and (lab_b == 255).any()  # teacher fill and low-confidence ignore both occur
        # Resized images are re-encoded (lossy); the small one keeps its original file.
        assert np.abs(img_a.astype(int) - img_b.astype(int)).mean() < 12
    assert (out / "toy" / "images" / "small.jpg").read_bytes() == (root / "toy" / "images" / "small.jpg").read_bytes()
    assert (out / "toy" / "images" / "big.webp").is_file()
    conf = np.asarray(Image.open(out / "teacher_ade150" / "toy" / "big_conf.png"))
    assert set(np.unique(conf)) <= {0, 255}
