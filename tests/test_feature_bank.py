"""Head-only training on cached backbone features (prolab.feature_bank, TrainConfig.head_only)."""
from __future__ import annotations

import copy
import json

import pytest
import torch

from prolab.errors import ProLabError
from prolab.feature_bank import FeatureBank, pad_to_grid
from prolab.model import PropertySegmenter
from prolab.train import LossTargets, TrainConfig, compute_loss, train
from tests.test_train import Synthetic, _cfg, tiny_model


class Stored(Synthetic):
    """Synthetic images held like SegmentationDataset holds them (uint8 images, uint8 labels), the
    first image repeated (a source's ``repeat`` shares its tensors)."""

    def __init__(self, n: int = 4, size: tuple[int, int] | None = None):
        super().__init__(n)
        if size is not None:
            self.items = [(torch.nn.functional.interpolate(x[None], size=size)[0],
                           torch.nn.functional.interpolate(y[None, None].float(), size=size)[0, 0].long())
                          for x, y in self.items]
        self.images = [(x * 255).round().to(torch.uint8) for x, _ in self.items]
        self.labels = [y.to(torch.uint8) for _, y in self.items]
        self.images.insert(1, self.images[0])
        self.labels.insert(1, self.labels[0])
        self.source_index = [0] * len(self.images)


def _eval_loss(model, ds: Stored) -> float:
    """The training loss with the backbone as the cached features saw it (eval mode) and the heads as
    they train (batch statistics; one dropout mask for every call)."""
    images = torch.stack(ds.images[1:]).float() / 255
    labels = torch.stack(ds.labels[1:]).long()
    was = model.training
    model.train()
    model.backbone.eval()
    torch.manual_seed(123)
    with torch.no_grad():
        out = model(model.normalize(images), return_aux=True)
        loss = float(compute_loss(out, labels, LossTargets(model, torch.device("cpu")), 0.4))
    model.train(was)
    return loss


def test_crops_are_the_full_images_features_and_labels():
    model = tiny_model().eval()
    ds = Stored(2, size=(70, 100))  # not multiples of 32: the variants are padded
    bank = FeatureBank.build(model, ds, [[1.0, 1.5]], flip=True)
    assert len(bank) == 2 * 2 * 2  # distinct images x scales x mirrored
    assert bank.weights.tolist() == [2.0] * 4 + [1.0] * 4  # the repeated image is drawn twice as often
    assert tuple(bank.labels[0].shape) == (96, 128) and tuple(bank.labels[2].shape) == (128, 160)
    feats, labels = bank.batch(6, 64, torch.Generator().manual_seed(0))
    assert [tuple(f.shape[-2:]) for f in feats] == [(16, 16), (8, 8), (4, 4), (2, 2)]
    assert labels.shape == (6, 64, 64) and labels.dtype == torch.int64
    # Every crop is a slice, on the 32-pixel grid, of one variant's full-image features and label.
    with torch.no_grad():
        full = []
        for img, lab in zip(ds.images[1:], ds.labels[1:]):
            x = img.float() / 255
            for s in (1.0, 1.5):
                size = (round(70 * s), round(100 * s))
                xs = torch.nn.functional.interpolate(x[None], size=size, mode="bilinear")[0] if s != 1.0 else x
                ls = torch.nn.functional.interpolate(lab[None, None].float(), size=size)[0, 0].to(torch.uint8) \
                    if s != 1.0 else lab
                for flip in (False, True):
                    a, b = pad_to_grid(xs.flip(-1), ls.flip(-1)) if flip else pad_to_grid(xs, ls)
                    full.append(([f[0] for f in model.backbone(model.normalize(a[None]))], b.long()))
    for j in range(6):
        found = False
        for fmaps, lab in full:
            for top in range(0, lab.shape[0] - 63, 32):
                for left in range(0, lab.shape[1] - 63, 32):
                    if not torch.equal(lab[top:top + 64, left:left + 64], labels[j]):
                        continue
                    found = found or all(
                        torch.allclose(f[:, top // s:(top + 64) // s, left // s:(left + 64) // s], c[j], atol=2e-2)
                        for f, c in zip(fmaps, feats) for s in [lab.shape[0] // f.shape[-2]])
        assert found, f"crop {j} is not a grid-aligned slice of any variant"


def test_small_variants_are_padded_with_ignore():
    bank = FeatureBank.build(tiny_model().eval(), Stored(1, size=(40, 40)), [[1.0]], flip=False)
    feats, labels = bank.batch(2, 96, torch.Generator().manual_seed(0))
    assert labels.shape == (2, 96, 96) and bool((labels[:, 64:, :] == 255).all())
    assert float(feats[0][:, :, 16:, :].abs().sum()) == 0.0
    with pytest.raises(ProLabError, match="multiple of 32"):
        bank.batch(1, 40, torch.Generator())
    with pytest.raises(ProLabError, match="needs a SegmentationDataset"):
        FeatureBank.build(tiny_model(), Synthetic(2), [[1.0]])


def test_head_only_training_trains_the_heads_and_resumes_exactly(tmp_path):
    model, ds = tiny_model(), Stored(4, size=(64, 96))
    before = _eval_loss(copy.deepcopy(model), ds)  # (it moves BN statistics: on a copy)
    backbone = {k: v.clone() for k, v in model.backbone.state_dict().items()}
    head = model.decode_head.classifier.weight.detach().clone()
    cache = tmp_path / "cache"
    cfg = dict(steps=4, lr=5e-3, crop_size=64, head_only=True, head_scales=[1.0, 1.25], data_cache_dir=str(cache))
    train(_cfg(tmp_path, out_dir=str(tmp_path / "full"), **cfg), model=model, dataset=ds)
    assert all(torch.equal(backbone[k], v) for k, v in model.backbone.state_dict().items())
    assert not torch.equal(head, model.decode_head.classifier.weight)
    assert _eval_loss(copy.deepcopy(model), ds) < before
    assert len(list(cache.glob("features-*.pt"))) == 1
    # Stopped at step 2 and resumed (features read back from the cache): the same weights.
    train(_cfg(tmp_path, out_dir=str(tmp_path / "part"), stop_after=2, **cfg), model=tiny_model(), dataset=ds)
    resumed = tiny_model(seed=99)
    train(_cfg(tmp_path, out_dir=str(tmp_path / "part"), resume=True, **cfg), model=resumed, dataset=ds)
    a, b = model.state_dict(), resumed.state_dict()
    # Float rounding only (measured 3e-5 on one weight; a wrong crop or feature moves weights by ~1e-3).
    assert all(torch.allclose(a[k].float(), b[k].float(), atol=1e-4) for k in a)
    steps = [json.loads(x)["step"] for x in (tmp_path / "part" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    assert PropertySegmenter.from_pretrained(tmp_path / "part").config.supervision == "property"


def test_feature_cache_is_keyed_by_backbone_weights(tmp_path):
    ds = Stored(1, size=(32, 32))
    a = FeatureBank.build(tiny_model(seed=0).eval(), ds, [[1.0]], cache_dir=tmp_path)
    b = FeatureBank.build(tiny_model(seed=1).eval(), ds, [[1.0]], cache_dir=tmp_path)
    assert len(list(tmp_path.glob("features-*.pt"))) == 2
    assert not torch.equal(a.features[0][-1], b.features[0][-1])
    for path in tmp_path.glob("features-*.pt"):
        path.write_bytes(b"not a checkpoint")  # unreadable: recomputed, not a failed run
    again = FeatureBank.build(tiny_model(seed=0).eval(), ds, [[1.0]], cache_dir=tmp_path)
    assert len(again) == len(a) == 2 and torch.equal(again.features[1][0], a.features[1][0])


def test_head_scales_are_checked():
    for bad in ([], [0.0], ["1"], 2.0):
        with pytest.raises(ProLabError, match="head_scales"):
            TrainConfig.from_dict({"head_scales": bad})
    with pytest.raises(ProLabError, match="head_scales"):
        TrainConfig.from_dict({"sources": [{"name": "camvid", "head_scales": [-1]}]})
    assert TrainConfig.from_dict({"head_only": True, "head_scales": [1, 1.5]}).head_scales == [1, 1.5]


def test_head_only_training_keeps_its_anchor_on_the_cached_features(tmp_path):
    model, ds = tiny_model(), Stored(2, size=(64, 64))
    cfg = dict(steps=3, lr=2e-2, crop_size=64, head_only=True, anchor_weight=1.0, log_every=1,
               data_cache_dir=str(tmp_path / "cache"))
    train(_cfg(tmp_path, **cfg), model=model, dataset=ds)
    anchor = [json.loads(x)["anchor"] for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(anchor) == 3 and anchor[0] < 0.005 < max(anchor[1:])  # same heads at step 1, then they move
