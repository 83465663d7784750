"""PropertySegmenter: shapes, ProLab maths, a training step, checkpoints and transformers backbones."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from prolab.errors import ProLabError
from prolab.labelspace import LabelSpace
from prolab.model import PropertySegmenter, SegmenterConfig
from prolab.scoring import property_class_scores, prolab_loss
from tests.builders import random_label_space

D, K, C = 24, 12, 4


def tiny_config(**kw) -> SegmenterConfig:
    base = dict(backbone_options={"width": 0.25}, embed_dim=D, decoder_channels=16)
    base.update(kw)
    return SegmenterConfig(**base)


def no_dropout(model: torch.nn.Module) -> torch.nn.Module:
    for m in model.modules():
        if isinstance(m, torch.nn.Dropout2d):
            m.p = 0.0
    return model


@pytest.fixture()
def space() -> LabelSpace:
    return random_label_space(dim=D, k=K, classes=C)


def test_forward_shapes_property(space):
    torch.manual_seed(0)
    model = PropertySegmenter(tiny_config(), space)
    assert model.config.encoder_id == "test-encoder"
    x = torch.randn(2, 3, 64, 96)
    out = model.train()(x)
    assert out["out"].shape == (2, D, 16, 24)
    assert out["aux"].shape == (2, D, 4, 6)  # stride 16
    model.eval()
    with torch.no_grad():
        assert set(model(x)) == {"out"}
        assert model(x, return_aux=True)["aux"].shape == (2, D, 4, 6)
    assert model.class_names == space.class_names


def test_forward_shapes_category_and_no_aux():
    model = PropertySegmenter(tiny_config(supervision="category", num_classes=5, aux_head=False, ppm=False))
    out = model.train()(torch.randn(1, 3, 32, 64))
    assert set(out) == {"out"} and out["out"].shape == (1, 5, 8, 16)
    assert model.class_names == [f"class {i}" for i in range(5)]


@pytest.mark.parametrize("arch", ["mobilenet", "resnet"])
def test_compact_cnn_size_and_strides(arch):
    model = PropertySegmenter(SegmenterConfig(backbone_options={"arch": arch}))
    assert 1_000_000 <= model.num_parameters() <= 3_000_000
    feats = model.backbone(torch.randn(1, 3, 64, 64))
    assert [f.shape[-1] for f in feats] == [16, 8, 4, 2]
    assert [f.shape[1] for f in feats] == model.backbone.channels


def test_bad_inputs_and_configs(space):
    model = PropertySegmenter(tiny_config())
    with pytest.raises(ProLabError, match="multiples of 32"):
        model(torch.randn(1, 3, 48, 64))
    with pytest.raises(ProLabError, match="B, 3, H, W"):
        model(torch.randn(3, 64, 64))
    with pytest.raises(ProLabError, match="dimension"):
        PropertySegmenter(tiny_config(embed_dim=D + 1), space)
    with pytest.raises(ProLabError, match="num_classes"):
        SegmenterConfig(supervision="category")
    with pytest.raises(ProLabError, match="supervision"):
        SegmenterConfig(supervision="pixels")
    with pytest.raises(ProLabError, match="Unknown compact-cnn options"):
        PropertySegmenter(tiny_config(backbone_options={"depth": 3}))
    with pytest.raises(ProLabError, match="arch"):
        PropertySegmenter(tiny_config(backbone_options={"arch": "vgg"}))


def test_prolab_math_on_model_output(space):
    torch.manual_seed(0)
    model = PropertySegmenter(tiny_config(), space).eval()
    with torch.no_grad():
        emb = model(torch.randn(1, 3, 32, 32))["out"] * 30  # spread activations away from 0.5
        scores = property_class_scores(emb, space.centers, space.class_matrix, model.config.temperature)
    e = emb[0].permute(1, 2, 0).reshape(-1, D).double().numpy()
    c = space.centers / np.linalg.norm(space.centers, axis=1, keepdims=True)
    p = 1.0 / (1.0 + np.exp(-(e @ c.T) / 0.04))
    m = space.class_matrix / np.linalg.norm(space.class_matrix, axis=1, keepdims=True)
    expected = (p / np.linalg.norm(p, axis=1, keepdims=True)) @ m.T
    got = scores[0].permute(1, 2, 0).reshape(-1, C).numpy()
    np.testing.assert_allclose(got, expected, atol=1e-5)
    assert expected.std() > 1e-3  # the check is not vacuous


def test_one_training_step_lowers_prolab_loss(space):
    torch.manual_seed(0)
    model = no_dropout(PropertySegmenter(tiny_config(), space).train())
    x = torch.randn(2, 3, 64, 64)
    labels = torch.zeros(2, 16, 16, dtype=torch.long)
    labels[:, :, 8:] = 1
    labels[1, :8] = 2
    labels[0, 0, :] = 255  # ignored pixels
    aux_labels = labels[:, 2::4, 2::4]  # nearest to the stride-16 aux output
    centers, multihot = torch.from_numpy(space.centers), torch.from_numpy(space.class_matrix)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def loss_fn():
        out = model(x)
        return (prolab_loss(out["out"], labels, centers, multihot)
                + 0.4 * prolab_loss(out["aux"], aux_labels, centers, multihot))

    torch.manual_seed(1)
    before = loss_fn()
    opt.zero_grad()
    before.backward()
    opt.step()
    with torch.no_grad():
        after = loss_fn()
    assert after.item() < before.item() - 1e-4


def test_category_baseline_step_lowers_cross_entropy():
    torch.manual_seed(0)
    model = no_dropout(PropertySegmenter(tiny_config(supervision="category", num_classes=3)).train())
    x = torch.randn(2, 3, 32, 32)
    labels = torch.randint(0, 3, (2, 8, 8))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)

    def loss_fn():
        out = model(x)
        return F.cross_entropy(out["out"], labels) + 0.4 * F.cross_entropy(out["aux"], labels[:, ::4, ::4])

    before = loss_fn()
    opt.zero_grad()
    before.backward()
    opt.step()
    with torch.no_grad():
        assert loss_fn().item() < before.item()


def test_save_and_load_round_trip(tmp_path, space):
    torch.manual_seed(0)
    model = PropertySegmenter(tiny_config(), space)
    # Train-mode passes update BatchNorm running statistics, which must be saved too.
    model.train()(torch.randn(2, 3, 64, 64))
    model.eval()
    model.save_pretrained(tmp_path / "ckpt")
    assert {p.name for p in (tmp_path / "ckpt").iterdir()} == {"model.safetensors", "config.json", "labelspace"}
    loaded = PropertySegmenter.from_pretrained(tmp_path / "ckpt")
    assert not loaded.training
    assert loaded.config == model.config
    assert loaded.label_space.class_names == space.class_names
    np.testing.assert_array_equal(loaded.label_space.centers, space.centers)
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)["out"], model(x)["out"], rtol=0, atol=0)


def test_category_round_trip_keeps_class_names(tmp_path):
    model = PropertySegmenter(tiny_config(supervision="category", num_classes=2, class_names=["sky", "road"]))
    model.save_pretrained(tmp_path)
    loaded = PropertySegmenter.from_pretrained(str(tmp_path))
    assert loaded.class_names == ["sky", "road"] and loaded.label_space is None


def _saved(tmp_path, space):
    d = tmp_path / "ckpt"
    PropertySegmenter(tiny_config(), space).save_pretrained(d)
    return d


def test_truncated_and_corrupt_weights_are_clear_errors(tmp_path, space):
    d = _saved(tmp_path, space)
    weights = d / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ProLabError, match="Corrupt or truncated"):
        PropertySegmenter.from_pretrained(d)
    weights.write_bytes(b"not a safetensors file at all")
    with pytest.raises(ProLabError, match="Corrupt or truncated"):
        PropertySegmenter.from_pretrained(d)
    weights.unlink()
    with pytest.raises(ProLabError, match="no model.safetensors"):
        PropertySegmenter.from_pretrained(d)


def test_mismatched_and_broken_config_are_clear_errors(tmp_path, space):
    d = _saved(tmp_path, space)
    cfg_path = d / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["decoder_channels"] = 32
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ProLabError, match="do not match its config.json.*wrong shapes"):
        PropertySegmenter.from_pretrained(d)
    cfg["decoder_channels"], cfg["aux_head"] = 16, False
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ProLabError, match="unexpected tensors"):
        PropertySegmenter.from_pretrained(d)
    cfg["aux_head"], cfg["colour"] = True, "red"
    cfg_path.write_text(json.dumps(cfg))
    with pytest.raises(ProLabError, match="Unknown model config keys: colour"):
        PropertySegmenter.from_pretrained(d)
    cfg_path.write_text("{broken")
    with pytest.raises(ProLabError, match="config.json is not valid JSON"):
        PropertySegmenter.from_pretrained(d)
    cfg_path.unlink()
    with pytest.raises(ProLabError, match="no config.json"):
        PropertySegmenter.from_pretrained(d)


def test_label_space_of_wrong_size_is_rejected(tmp_path, space):
    d = _saved(tmp_path, space)
    with pytest.raises(ProLabError, match="dimension"):
        PropertySegmenter.from_pretrained(d, label_space=random_label_space(dim=D + 2))


def test_missing_model_and_offline_hub_id(tmp_path, monkeypatch):
    with pytest.raises(ProLabError, match="Model not found"):
        PropertySegmenter.from_pretrained(tmp_path / "nothing" / "here")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ProLabError, match="Cannot download model"):
        PropertySegmenter.from_pretrained("prolab-test/does-not-exist")


def _tiny_convnext(path):
    from transformers import ConvNextBackbone, ConvNextConfig

    cfg = ConvNextConfig(depths=[1, 1, 1, 1], hidden_sizes=[8, 16, 24, 32], num_channels=3)
    ConvNextBackbone(cfg).save_pretrained(path)
    return path


def test_transformers_backbone_from_local_path_and_round_trip(tmp_path, space):
    import shutil

    src = _tiny_convnext(tmp_path / "convnext")
    torch.manual_seed(0)
    model = PropertySegmenter(tiny_config(backbone=str(src), backbone_options={}), space).eval()
    assert model.backbone.channels == [8, 16, 24, 32]
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        ref = model(x)["out"]
    assert ref.shape == (1, D, 16, 24)
    model.save_pretrained(tmp_path / "seg")
    shutil.rmtree(src)  # the saved config must be enough to rebuild the backbone offline
    loaded = PropertySegmenter.from_pretrained(tmp_path / "seg")
    with torch.no_grad():
        torch.testing.assert_close(loaded(x)["out"], ref, rtol=0, atol=0)


def test_transformers_backbone_loads_pretrained_weights(tmp_path):
    from transformers import ConvNextBackbone

    src = _tiny_convnext(tmp_path / "convnext")
    reference = ConvNextBackbone.from_pretrained(src)
    model = PropertySegmenter(tiny_config(backbone=str(src), backbone_options={"out_features": ["stage2", "stage4"]}))
    assert model.backbone.channels == [16, 32]
    torch.testing.assert_close(model.backbone.backbone.state_dict()["embeddings.patch_embeddings.weight"],
                               reference.state_dict()["embeddings.patch_embeddings.weight"])
    assert model.train()(torch.randn(1, 3, 64, 64))["out"].shape == (1, D, 16, 16)


def test_vit_backbone_gets_a_pyramid(tmp_path):
    from transformers import Dinov2Backbone, Dinov2Config

    cfg = Dinov2Config(hidden_size=16, num_hidden_layers=4, num_attention_heads=2, intermediate_size=32,
                       patch_size=8, image_size=64)
    Dinov2Backbone(cfg).save_pretrained(tmp_path / "vit")
    model = PropertySegmenter(tiny_config(backbone=str(tmp_path / "vit"), backbone_options={"pretrained": False}))
    assert model.backbone.backbone.config.out_features == ["stage1", "stage2", "stage3", "stage4"]
    feats = model.backbone(torch.randn(1, 3, 64, 96))
    assert [tuple(f.shape[-2:]) for f in feats] == [(16, 24), (8, 12), (4, 6), (2, 3)]
    assert model.train()(torch.randn(1, 3, 64, 96))["out"].shape == (1, D, 16, 24)


def test_unknown_transformers_backbone_is_a_clear_error(tmp_path):
    with pytest.raises(ProLabError, match="Cannot load transformers backbone"):
        PropertySegmenter(tiny_config(backbone=str(tmp_path / "missing-backbone"), backbone_options={}))
