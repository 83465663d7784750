"""Backbones returning four feature maps at strides 4, 8, 16 and 32.

- :class:`CompactCNN`: ``"compact-cnn"``, small enough to train from scratch on a CPU. Two variants
  (``backbone_options={"arch": ...}``): ``"mobilenet"`` (default; MobileNetV2-style inverted residual
  blocks, 1.1 M parameters, fewest FLOPs) and ``"resnet"`` (ResNet-style basic blocks with channels
  32/64/128/192, 1.9 M parameters; more FLOPs but dense 3x3 convolutions, which PyTorch runs much faster
  than depthwise ones on a CPU, so it trains about 1.6x faster there).
- :class:`~prolab.model.efficientnet.EfficientNetLite`: ``"efficientnet-lite0"`` (also lite1 / lite2),
  ImageNet-pretrained from the registry packages; the recommended backbone.
- :class:`TransformersBackbone`: any ``transformers`` AutoBackbone (ConvNeXt, Swin, DINOv2, ...). Single
  scale (ViT-like) outputs are turned into a pyramid by resizing.
"""
from __future__ import annotations

import math
import pickle
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from prolab.errors import ProLabError
from prolab.model.config import COMPACT_CNN
from prolab.model.efficientnet import LITE_VARIANTS, build_efficientnet

PYRAMID_STRIDES = (4, 8, 16, 32)


def conv_bn_act(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
                               nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """MobileNetV2 block: 1x1 expand, 3x3 depthwise, 1x1 linear projection, residual when shapes allow."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(conv_bn_act(cin, hidden, 1))
        layers += [conv_bn_act(hidden, hidden, 3, stride, groups=hidden), conv_bn_act(hidden, cout, 1, act=False)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.block(x)
        return x + y if self.residual else y


# (expand, out channels, blocks, first stride) per stage; stages end at strides 4, 8, 16, 32.
_COMPACT_STAGES = (
    ((1, 16, 1, 1), (4, 24, 2, 2)),  # after a 16-channel stride-2 stem
    ((4, 40, 3, 2),),
    ((4, 80, 3, 2), (4, 96, 2, 1)),
    ((6, 160, 3, 2),),
)


class BasicBlock(nn.Module):
    """ResNet basic block: two 3x3 convs and a (projected when needed) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.body = nn.Sequential(conv_bn_act(cin, cout, 3, stride), conv_bn_act(cout, cout, 3, act=False))
        self.shortcut = (nn.Identity() if stride == 1 and cin == cout
                         else conv_bn_act(cin, cout, 1, stride, act=False))
        self.act = nn.ReLU6(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))


# ResNet variant: (channels, blocks) per stage after a two-conv stride-4 stem.
_RESNET_STAGES = ((32, 1), (64, 2), (128, 2), (192, 2))
COMPACT_ARCHS = ("mobilenet", "resnet")


class CompactCNN(nn.Module):
    """Small CNN backbone (see the module docstring). ``width`` scales every channel count."""

    def __init__(self, width: float = 1.0, arch: str = "mobilenet"):
        super().__init__()
        if not 0.25 <= width <= 4:
            raise ProLabError(f"compact-cnn width must be between 0.25 and 4, got {width}.")
        if arch not in COMPACT_ARCHS:
            raise ProLabError(f"compact-cnn arch must be one of {COMPACT_ARCHS}, got {arch!r}.")

        def ch(c: int) -> int:
            return max(8, int(round(c * width / 8)) * 8)

        stages, self.channels = [], []
        if arch == "mobilenet":
            self.stem = conv_bn_act(3, ch(16), 3, 2)
            cin = ch(16)
            for stage in _COMPACT_STAGES:
                blocks: list[nn.Module] = []
                for expand, cout, n, stride in stage:
                    for i in range(n):
                        blocks.append(InvertedResidual(cin, ch(cout), stride if i == 0 else 1, expand))
                        cin = ch(cout)
                stages.append(nn.Sequential(*blocks))
                self.channels.append(cin)
        else:
            cin = ch(_RESNET_STAGES[0][0])
            self.stem = nn.Sequential(conv_bn_act(3, ch(24), 3, 2), conv_bn_act(ch(24), cin, 3, 2))
            for i, (cout, n) in enumerate(_RESNET_STAGES):
                blocks = [BasicBlock(cin if j == 0 else ch(cout), ch(cout), 2 if i > 0 and j == 0 else 1)
                          for j in range(n)]
                cin = ch(cout)
                stages.append(nn.Sequential(*blocks))
                self.channels.append(cin)
        self.stages = nn.ModuleList(stages)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        feats = []
        for stage in self.stages:
            x = stage(x)
            feats.append(x)
        return feats


def default_out_features(stage_names: list[str]) -> list[str]:
    """Up to four stages: all of them for hierarchical models, evenly spaced ones for deep ViTs."""
    stages = [s for s in stage_names if s != "stem"]
    if len(stages) <= 4:
        return stages
    n = len(stages)
    return [stages[math.ceil(n * (i + 1) / 4) - 1] for i in range(4)]


def _first_line(exc: BaseException, limit: int = 160) -> str:
    text = str(exc).strip().splitlines()
    line = text[0] if text else exc.__class__.__name__
    return line if len(line) <= limit else line[:limit - 3] + "..."


class TransformersBackbone(nn.Module):
    """Wraps ``transformers.AutoBackbone``; returns feature maps resized to strides 4..32 when needed.

    Built from ``backbone_config`` (a saved config dict, offline) when given, otherwise from ``name``
    (hub id or local path): with ``pretrained=True`` the weights are loaded too, else only the config.
    """

    def __init__(self, name: str, options: dict[str, Any] | None = None,
                 backbone_config: dict[str, Any] | None = None):
        super().__init__()
        from transformers import AutoBackbone, AutoConfig  # lazy: transformers takes seconds to import

        options = dict(options or {})
        pretrained = bool(options.pop("pretrained", True))
        out_features = options.pop("out_features", None)
        if options:
            raise ProLabError(f"Unknown backbone options for {name!r}: {', '.join(sorted(options))}.")
        try:
            if backbone_config is not None:
                cfg = dict(backbone_config)
                model_type = cfg.pop("model_type", None)
                if not model_type:
                    raise ProLabError("backbone_config in config.json has no model_type.")
                config = AutoConfig.for_model(model_type, **cfg)
                self.backbone = AutoBackbone.from_config(config)
            else:
                config = AutoConfig.from_pretrained(name)
                feats = out_features or default_out_features(list(getattr(config, "stage_names", [])))
                config = AutoConfig.from_pretrained(name, out_features=feats)
                if pretrained:
                    # AutoBackbone.from_pretrained asks the hub whether the name exists (breaks local paths
                    # and offline use), so resolve the backbone class ourselves.
                    from transformers.models.auto.modeling_auto import MODEL_FOR_BACKBONE_MAPPING

                    if type(config) not in MODEL_FOR_BACKBONE_MAPPING:
                        raise ProLabError(f"{name!r} ({config.model_type}) has no transformers backbone class.")
                    backbone_cls = MODEL_FOR_BACKBONE_MAPPING[type(config)]
                    self.backbone = backbone_cls.from_pretrained(name, config=config)
                else:
                    self.backbone = AutoBackbone.from_config(config)
        except ProLabError:
            raise
        except pickle.UnpicklingError as exc:  # torch.load(weights_only=True) refused a pickle checkpoint
            raise ProLabError(f"Cannot load transformers backbone {name!r}: its weights are a pickle file that "
                              f"cannot be loaded safely ({_first_line(exc)}). Convert them to "
                              "model.safetensors.") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            local = Path(name).exists()
            hint = "" if local else " (offline? set HF_HUB_OFFLINE=0 with network access, or pass a local path)"
            raise ProLabError(f"Cannot load transformers backbone {name!r}{hint}: {exc}") from None
        self.channels = list(self.backbone.channels)
        if not 1 <= len(self.channels) <= 4:
            raise ProLabError(f"Backbone {name!r} gives {len(self.channels)} feature maps; use 1 to 4 out_features.")

    def config_dict(self) -> dict[str, Any]:
        """The backbone's full config (saved into config.json so the model reloads offline)."""
        return self.backbone.config.to_dict()

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats = list(self.backbone(x).feature_maps)
        h, w = x.shape[-2:]
        strides = [round(h / f.shape[-2]) for f in feats]
        hierarchical = len(set(strides)) == len(strides) and all(s in PYRAMID_STRIDES for s in strides)
        if hierarchical:
            return feats
        # ViT-like: one resolution; resize to the strides an FPN expects (coarsest level = stride 32).
        targets = PYRAMID_STRIDES[-len(feats):]
        return [F.interpolate(f, size=(math.ceil(h / s), math.ceil(w / s)), mode="bilinear", align_corners=False)
                for f, s in zip(feats, targets)]


def build_backbone(name: str, options: dict[str, Any] | None = None,
                   backbone_config: dict[str, Any] | None = None, load_weights: bool = True,
                   stride2: bool = False) -> nn.Module:
    """``"compact-cnn"``, ``"efficientnet-lite0/1/2"`` or a transformers id / path. The result has
    ``.channels`` (one per feature map). ``load_weights=False`` skips downloading / reading pretrained
    weights (a saved segmenter is about to load its own). ``stride2`` (EfficientNet-Lite only) puts a
    stride-2 map, ``.stride2_channels`` wide, before the four pyramid maps."""
    if name in LITE_VARIANTS:
        return build_efficientnet(name, options, load_weights=load_weights, stride2=stride2)
    if stride2:
        raise ProLabError(f"A detail branch (detail_channels) needs an EfficientNet-Lite backbone, not {name!r}.")
    if name == COMPACT_CNN:
        options = dict(options or {})
        width = options.pop("width", 1.0)
        arch = options.pop("arch", "mobilenet")
        if options:
            raise ProLabError(f"Unknown compact-cnn options: {', '.join(sorted(options))} (known: width, arch).")
        return CompactCNN(float(width), arch)
    return TransformersBackbone(name, options, backbone_config)
