"""Dataset readers (every supported layout), label fusion, union mapping, augmentation, caching."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from prolab.data import (AugmentConfig, SegmentationDataset, UnionSpace, augment, build_union,
                         fuse_labels, label_maps, load_union, read_ade20k, read_folder, read_shared,
                         read_source)
from prolab.data.readers import ade_classes
from prolab.descriptions import DescriptionSet
from prolab.errors import ProLabError

H, W = 12, 16


def _img(path, seed=0):
    rng = np.random.default_rng(seed)
    Image.fromarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8)).save(path)


def _png(path, arr):
    Image.fromarray(np.asarray(arr, np.uint8)).save(path)


@pytest.fixture()
def shared_root(tmp_path):
    """A two-dataset folder in the shared format plus teacher labels (one dataset unlabeled)."""
    root = tmp_path / "datasets"
    d = root / "toy"
    (d / "images").mkdir(parents=True)
    (d / "labels").mkdir()
    (d / "classes.txt").write_text("sky\nroad\npavement\n")
    (d / "train.txt").write_text("a\nb\n")
    (d / "val.txt").write_text("c\n")
    t = root / "teacher_ade150" / "toy"
    t.mkdir(parents=True)
    for i, stem in enumerate("abc"):
        _img(d / "images" / f"{stem}.jpg", i)
        lab = np.full((H, W), 255, np.uint8)
        lab[:4] = 0  # sky
        lab[8:] = 1  # road; rows 4..7 are void
        _png(d / "labels" / f"{stem}.png", lab)
        teacher = np.zeros((H, W), np.uint8)
        teacher[4:6] = 12  # ADE "sidewalk" (index 12), confident
        teacher[6:8] = 1  # ADE "wall", not confident
        teacher[:4] = 7  # ADE "road" where GT says sky: GT must win
        conf = np.full((H, W), 250, np.uint8)
        conf[6:8] = 40
        _png(t / f"{stem}.png", teacher)
        _png(t / f"{stem}_conf.png", conf)
    u = root / "unl"
    (u / "images").mkdir(parents=True)
    (u / "train.txt").write_text("x\n")
    _img(u / "images" / "x.jpg", 5)
    tu = root / "teacher_ade150" / "unl"
    tu.mkdir(parents=True)
    _png(tu / "x.png", np.full((H, W), 4, np.uint8))  # floor
    _png(tu / "x_conf.png", np.full((H, W), 200, np.uint8))
    return root


def _space():
    names = ["sky", "road", "sidewalk", "wall", "floor"]
    ds = DescriptionSet({n: [f"{n} thing"] for n in names})
    mapping = {"toy": {"sky": "sky", "road": "road", "pavement": "sidewalk"},
               "ade20k_150": {"wall": "wall", "sky": "sky", "floor": "floor", "road": "road",
                              "sidewalk": "sidewalk"}}
    return UnionSpace(ds, mapping)


def test_read_shared_with_teacher(shared_root):
    src = read_shared(shared_root, "toy", "train")
    assert src.classes == ["sky", "road", "pavement"]
    assert [s.stem for s in src.samples] == ["a", "b"]
    assert all(s.teacher is not None and s.teacher_conf is not None for s in src.samples)
    assert src.has_gt and src.has_teacher
    assert [s.stem for s in read_shared(shared_root, "toy", "val").samples] == ["c"]
    unl = read_shared(shared_root, "unl", "train")
    assert not unl.has_gt and unl.has_teacher and unl.classes == []


def test_read_shared_errors(shared_root):
    with pytest.raises(ProLabError, match="no test.txt"):
        read_shared(shared_root, "toy", "test")
    with pytest.raises(ProLabError, match="not found"):
        read_shared(shared_root, "missing", "train")
    (shared_root / "toy" / "train.txt").write_text("a\nzzz\n")
    with pytest.raises(ProLabError, match="zzz"):
        read_shared(shared_root, "toy", "train")


def test_fusion_gt_wins_teacher_fills_void_when_confident(shared_root):
    src = read_shared(shared_root, "toy", "train")
    src.label_key = "toy"
    space = _space()
    lab = fuse_labels(src.samples[0], label_maps(src, space), teacher_threshold=0.5)
    sky, road, sidewalk = space.index("sky"), space.index("road"), space.index("sidewalk")
    assert (lab[:4] == sky).all()  # GT sky beats the teacher's road
    assert (lab[8:] == road).all()
    assert (lab[4:6] == sidewalk).all()  # void GT -> confident teacher
    assert (lab[6:8] == 255).all()  # void GT + unconfident teacher -> ignore
    no_teacher = fuse_labels(src.samples[0], label_maps(src, space, use_teacher=False))
    assert (no_teacher[4:8] == 255).all()


def test_excluded_classes_are_ignored_in_gt_and_teacher(shared_root):
    src = read_shared(shared_root, "toy", "train")
    src.label_key = "toy"
    # Excluding "sky": its GT pixels must not fall back to the teacher's (confident) road;
    # excluding "sidewalk": the toy "pavement" GT and the teacher's ADE sidewalk both become ignore.
    space = _space().without(["SKY", "sidewalk"])
    assert space.class_names == ["road", "wall", "floor"] and space.excluded == {"sky", "sidewalk"}
    lab = fuse_labels(src.samples[0], label_maps(src, space), teacher_threshold=0.5)
    assert (lab[:4] == 255).all()
    assert (lab[4:8] == 255).all()
    assert (lab[8:] == space.index("road")).all()
    unl = read_shared(shared_root, "unl", "train")
    floorless = _space().without(["floor"])
    assert (fuse_labels(unl.samples[0], label_maps(unl, floorless)) == 255).all()
    with pytest.raises(ProLabError, match="not target classes: zebra"):
        _space().without(["zebra"])


def test_unlabeled_source_uses_teacher_only(shared_root):
    src = read_shared(shared_root, "unl", "train")
    lab = fuse_labels(src.samples[0], label_maps(src, _space()))
    assert (lab == _space().index("floor")).all()


def test_teacher_other_is_ignored(shared_root):
    t = shared_root / "teacher_ade150" / "unl"
    _png(t / "x.png", np.zeros((H, W), np.uint8))
    src = read_shared(shared_root, "unl", "train")
    assert (fuse_labels(src.samples[0], label_maps(src, _space())) == 255).all()


def test_read_ade20k_layout_shifts_labels(tmp_path):
    root = tmp_path / "ADEChallengeData2016"
    for sub in ("training", "validation"):
        (root / "images" / sub).mkdir(parents=True)
        (root / "annotations" / sub).mkdir(parents=True)
    _img(root / "images" / "training" / "ADE_train_1.jpg")
    ann = np.zeros((H, W), np.uint8)
    ann[:, 8:] = 3  # ADE 3 = sky
    _png(root / "annotations" / "training" / "ADE_train_1.png", ann)
    src = read_ade20k(tmp_path, "train")  # the parent folder works too
    assert len(src) == 1 and src.classes == ade_classes() and len(src.classes) == 150
    space = _space()
    lab = fuse_labels(src.samples[0], label_maps(src, space))
    assert (lab[:, :8] == 255).all()  # 0 = other -> ignore
    assert (lab[:, 8:] == space.index("sky")).all()
    with pytest.raises(ProLabError, match="No annotated images"):
        read_ade20k(root, "val")


def test_read_generic_folder(tmp_path):
    root = tmp_path / "mine"
    (root / "images").mkdir(parents=True)
    (root / "masks").mkdir()
    (root / "classes.txt").write_text("cat\ndog\n")
    for i in range(3):
        _img(root / "images" / f"im{i}.png", i)
        _png(root / "masks" / f"im{i}.png", np.full((H, W), i % 2, np.uint8))
    _img(root / "images" / "nomask.jpg")
    src = read_folder(root)
    assert src.classes == ["cat", "dog"] and [s.stem for s in src.samples] == ["im0", "im1", "im2"]
    (root / "val.txt").write_text("im1\n")
    assert [s.stem for s in read_source({"type": "folder", "path": str(root), "split": "val"}).samples] == ["im1"]
    from prolab.data.union import space_from_classes

    lab = fuse_labels(src.samples[1], label_maps(src, space_from_classes(["dog", "cat"])))
    assert (lab == 0).all()  # "dog" (mask value 1) is index 0 of the target space
    with pytest.raises(ProLabError, match="images/ and masks/"):
        read_folder(tmp_path)


def test_shipped_union_mapping_is_complete():
    u = load_union()
    for key in ("msrc_23", "camvid_11", "coco_80", "ade20k_150"):
        classes = json.loads((__import__("pathlib").Path(__file__).parents[1] / "assets" / "datasets"
                              / f"{key}.json").read_text())["classes"]
        targets = u.dataset_classes(key, classes)
        assert None not in targets, key
        assert max(targets) < u.num_targets


def test_build_union_merges_by_name(tmp_path):
    (tmp_path / "msrc_23.json").write_text(json.dumps({"sky": ["blue"], "cow": ["animal"]}))
    (tmp_path / "camvid_11.json").write_text(json.dumps({"Sky": ["above"], "road": ["flat"]}))
    u = build_union(tmp_path)
    assert u.class_names == ["sky", "cow", "road"]
    assert u.mapping["camvid_11"] == {"Sky": "sky", "road": "road"}


def test_augment_is_deterministic_and_shaped():
    img = torch.randint(0, 255, (3, 40, 50), dtype=torch.uint8)
    lab = torch.randint(0, 5, (40, 50), dtype=torch.uint8)
    cfg = AugmentConfig(crop_size=32)
    a = augment(img, lab, cfg, torch.Generator().manual_seed(3))
    b = augment(img, lab, cfg, torch.Generator().manual_seed(3))
    c = augment(img, lab, cfg, torch.Generator().manual_seed(4))
    assert a[0].shape == (3, 32, 32) and a[1].shape == (32, 32) and a[1].dtype == torch.int64
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[0], c[0])
    assert 0 <= float(a[0].min()) and float(a[0].max()) <= 1
    assert set(a[1].unique().tolist()) <= set(range(5)) | {255}


def test_augment_pads_small_images_with_ignore():
    img = torch.full((3, 10, 10), 200, dtype=torch.uint8)
    lab = torch.ones((10, 10), dtype=torch.uint8)
    cfg = AugmentConfig(crop_size=32, scale_min=1.0, scale_max=1.0, flip=False, brightness=0,
                        contrast=0, saturation=0)
    x, y = augment(img, lab, cfg, torch.Generator().manual_seed(0))
    assert (y == 1).sum() == 100 and (y == 255).sum() == 32 * 32 - 100
    assert torch.allclose(x[:, y == 1], torch.tensor(200 / 255.0))


def test_camera_look_effects_do_what_they_say():
    """Each effect of a simulated camera, measured on an image whose answer is known."""
    from prolab.data.transforms import CameraLook, camera_look

    flat = torch.full((3, 32, 48), 0.5)
    assert camera_look(flat, CameraLook()) is flat  # the identity costs nothing
    warm = camera_look(flat, CameraLook(white_balance=(1.2, 1.0, 0.8)))
    assert torch.allclose(warm.mean(dim=(1, 2)), torch.tensor([0.6, 0.5, 0.4]), atol=1e-6)
    assert torch.allclose(camera_look(flat, CameraLook(gamma=2.0)), torch.full_like(flat, 0.25))
    vig = camera_look(flat, CameraLook(vignette=0.4))
    assert float(vig[:, 0, 0].max()) < 0.5 * 0.65 and float(vig[:, 16, 24].min()) > 0.49  # corners darker
    stripes = torch.zeros(3, 32, 48)
    stripes[:, :, ::2] = 1.0  # one-pixel detail: what resolution and blur take away
    for look in (CameraLook(resolution=0.5), CameraLook(blur=1.0)):
        out = camera_look(stripes, look)
        assert out.shape == stripes.shape and float(out.std()) < 0.25 * float(stripes.std())
        assert abs(float(out.mean()) - 0.5) < 0.05  # brightness kept
    noisy = camera_look(flat, CameraLook(noise=0.05, seed=1))
    assert 0.04 < float((noisy - flat).std()) < 0.06
    assert torch.equal(noisy, camera_look(flat, CameraLook(noise=0.05, seed=1)))
    assert not torch.equal(noisy, camera_look(flat, CameraLook(noise=0.05, seed=2)))
    photo = torch.rand(3, 32, 48)
    err = [float((camera_look(photo, CameraLook(jpeg_quality=q)) - photo).abs().mean()) for q in (10, 90)]
    assert err[1] < err[0]  # lower quality, larger error


def test_camera_shift_augmentation_is_seeded_and_keeps_labels():
    """``camera_prob`` renders some samples by a random camera; the same seed gives the same camera and
    the labels never change; the uint8 path used by evaluation matches the float one."""
    from prolab.data.transforms import (CAMERA_PRESETS, CameraLook, CameraShift, camera_look, random_camera_look,
                                        render_uint8)

    img = torch.randint(0, 255, (3, 32, 32), dtype=torch.uint8)  # the crop's size: no crop to draw
    lab = torch.randint(0, 5, (32, 32), dtype=torch.uint8)
    plain = AugmentConfig(crop_size=32, scale_min=1, scale_max=1, flip=False, brightness=0, contrast=0, saturation=0)
    cam = AugmentConfig(crop_size=32, scale_min=1, scale_max=1, flip=False, brightness=0, contrast=0, saturation=0,
                        camera_prob=1.0)
    changed = 0
    for seed in range(6):
        a = augment(img, lab, cam, torch.Generator().manual_seed(seed))
        b = augment(img, lab, cam, torch.Generator().manual_seed(seed))
        p = augment(img, lab, plain, torch.Generator().manual_seed(seed))
        assert torch.equal(a[0], b[0]) and a[0].shape == (3, 32, 32)
        assert torch.equal(a[1], lab.long()) and torch.equal(p[0], img.float() / 255)
        changed += not torch.equal(a[0], p[0])
    assert changed == 6
    looks = {random_camera_look(torch.Generator().manual_seed(s), CameraShift()) for s in range(20)}
    assert len(looks) == 20 and any(lk.jpeg_quality for lk in looks) and any(lk.jpeg_quality is None for lk in looks)
    assert all(abs(sum(lk.white_balance) - 3) < 1e-5 and 0.5 < lk.gamma < 2 for lk in looks)
    big = torch.randint(0, 255, (3, 40, 50), dtype=torch.uint8)
    big_lab = torch.randint(0, 5, (40, 50), dtype=torch.uint8)
    for seed in range(4):  # the camera has its own stream: crop, scale and flip are those of camera_prob 0
        with_cam = augment(big, big_lab, AugmentConfig(crop_size=32, camera_prob=0.5), torch.Generator().manual_seed(seed))
        without = augment(big, big_lab, AugmentConfig(crop_size=32), torch.Generator().manual_seed(seed))
        assert torch.equal(with_cam[1], without[1])
    with pytest.raises(ValueError, match="gamma"):
        CameraLook(gamma=0.0)
    assert CameraLook(white_balance=[1, 1, 1]).is_identity()  # a JSON list is the same look
    with pytest.raises(ValueError, match="uint8"):
        render_uint8(np.zeros((4, 4, 3), np.float32), CameraLook(gamma=2.0))
    u8 = img.permute(1, 2, 0).numpy()
    look = CAMERA_PRESETS["camera B (cool, soft, bright)"]
    via_uint8 = torch.from_numpy(render_uint8(u8, look)).permute(2, 0, 1).float() / 255
    assert (via_uint8 - camera_look(img.float() / 255, look)).abs().max() <= 1 / 255 + 1e-6


def test_train_config_camera_shift_reaches_the_dataset(shared_root):
    """``camera_shift`` in a training config renders the training images by other cameras (labels
    untouched); it is a probability, and head-only training (cached features) refuses it."""
    from prolab.train import TrainConfig, build_dataset

    base = dict(sources=["toy"], data_root=str(shared_root), label_space="classes", use_teacher=False,
                crop_size=32, short_side=16, scale_min=1.0, scale_max=1.0, flip=False, jitter=0.0)
    plain, _ = build_dataset(TrainConfig.from_dict(base))
    shifted, _ = build_dataset(TrainConfig.from_dict({**base, "camera_shift": 1.0}))
    assert shifted.augment_cfg.camera_prob == 1.0 and plain.augment_cfg.camera_prob == 0.0
    for i in range(len(plain)):
        (xa, ya), (xb, yb) = plain[i], shifted[i]
        assert torch.equal(ya, yb) and not torch.equal(xa, xb)
    for bad in (-0.1, 1.5):
        with pytest.raises(ProLabError, match="camera_shift is a probability"):
            TrainConfig.from_dict({**base, "camera_shift": bad})
    with pytest.raises(ProLabError, match="head_only"):
        TrainConfig.from_dict({**base, "camera_shift": 0.5, "head_only": True})


def test_dataset_caches_and_repeats(shared_root, tmp_path):
    src = read_shared(shared_root, "toy", "train")
    src.label_key = "toy"
    unl = read_shared(shared_root, "unl", "train")
    cfg = AugmentConfig(crop_size=32)
    ds = SegmentationDataset([src, unl], _space(), cfg, short_side=24, cache_dir=tmp_path / "c",
                             repeats=[2, 1], seed=1)
    assert len(ds) == 5 and ds.images[0].shape == (3, 24, 32)
    assert len(list((tmp_path / "c").glob("*.pt"))) == 2
    again = SegmentationDataset([src, unl], _space(), cfg, short_side=24, cache_dir=tmp_path / "c",
                                repeats=[2, 1], seed=1)
    assert all(torch.equal(a, b) for a, b in zip(ds.labels, again.labels))
    x1, y1 = ds[1]
    x2, y2 = again[1]
    assert torch.equal(x1, x2) and torch.equal(y1, y2)
    ds.set_epoch(1)
    assert not torch.equal(ds[1][0], x1)
    counts = ds.class_pixel_counts(5)
    assert counts[_space().index("floor")] == 24 * 32  # the unlabeled image, from its teacher
