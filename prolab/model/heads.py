"""Decode heads: a light UPerNet-style FPN (pyramid pooling on the coarsest level, top-down fusion,
concatenation at the finest level) and an auxiliary FCN head for the 0.4-weight auxiliary loss."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from prolab.model.backbones import conv_bn_act


def _relu_conv(cin: int, cout: int, k: int = 1) -> nn.Sequential:
    # No BatchNorm: pooled 1x1 maps with batch size 1 would break BN statistics in training.
    return nn.Sequential(nn.Conv2d(cin, cout, k, padding=k // 2), nn.ReLU(inplace=True))


def _sep_conv(c: int) -> nn.Sequential:
    """Depthwise-separable 3x3 conv (much cheaper than a dense 3x3 at stride 4)."""
    return nn.Sequential(conv_bn_act(c, c, 3, groups=c), conv_bn_act(c, c, 1))


def resize_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == tuple(size):
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


def adaptive_avg_pool2d_traceable(x: torch.Tensor, size: int) -> torch.Tensor:
    """``F.adaptive_avg_pool2d(x, size)`` written with cumulative sums and index arithmetic on the
    input's (possibly symbolic) height and width.

    Why: torch's ONNX exporter turns adaptive pooling into a fixed-kernel pool computed from the example
    input, so an exported graph with dynamic height/width pools wrong bins at any other size. The bins
    are the same as torch's (start = floor(i n / s), end = ceil((i + 1) n / s)); results agree to float
    rounding.
    """
    for dim in (-2, -1):
        n = x.shape[dim]
        i = torch.arange(size, device=x.device)
        start = torch.div(i * n, size, rounding_mode="floor")
        end = torch.div((i + 1) * n + size - 1, size, rounding_mode="floor")
        zero = torch.zeros_like(x.narrow(dim, 0, 1))
        c = torch.cat([zero, x.cumsum(dim)], dim=dim)
        total = c.index_select(dim, end) - c.index_select(dim, start)
        count = (end - start).to(x.dtype)
        x = total / (count.view(-1, 1) if dim == -2 else count)
    return x


class PyramidPooling(nn.Module):
    """PSPNet pooling module (scales 1, 2, 3, 6) over the coarsest feature map.

    ``traceable = True`` (set by :mod:`prolab.onnx_backend` on its export copy) pools with
    :func:`adaptive_avg_pool2d_traceable` so that an exported graph stays right at every input size.
    """

    traceable = False

    def __init__(self, cin: int, cout: int, scales: tuple[int, ...] = (1, 2, 3, 6)):
        super().__init__()
        self.scales = scales
        branch = max(8, cout // 4)
        self.branches = nn.ModuleList(_relu_conv(cin, branch) for _ in scales)
        self.bottleneck = conv_bn_act(cin + branch * len(scales), cout, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        pool = adaptive_avg_pool2d_traceable if self.traceable else F.adaptive_avg_pool2d
        pooled = [resize_to(b(pool(x, s)), size) for s, b in zip(self.scales, self.branches)]
        return self.bottleneck(torch.cat([x, *pooled], dim=1))


class FPNHead(nn.Module):
    """Multi-scale fusion to stride 4, then a 1x1 conv to ``out_channels`` (D embeddings or C logits)."""

    def __init__(self, in_channels: list[int], channels: int, out_channels: int, ppm: bool = True,
                 dropout: float = 0.1, detail_in: int = 0, detail_channels: int = 0):
        super().__init__()
        n = len(in_channels)
        self.top = PyramidPooling(in_channels[-1], channels) if ppm else conv_bn_act(in_channels[-1], channels, 1)
        self.lateral = nn.ModuleList(conv_bn_act(c, channels, 1) for c in in_channels[:-1])
        # Levels below the finest are smoothed and fused at the second-finest resolution (stride 8);
        # the stride-4 level only gets one cheap separable conv: stride-4 maps dominate the cost.
        self.smooth = nn.ModuleList(_sep_conv(channels) for _ in range(max(n - 2, 0)))
        self.fuse = conv_bn_act(channels * (n - 1), channels, 1) if n > 1 else nn.Identity()
        self.detail = DetailBranch(detail_in, detail_channels, channels) if detail_channels else None
        self.refine = _sep_conv(channels)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, out_channels, 1)
        # Small output at start: with T=0.04 a unit-norm embedding would saturate the sigmoids.
        nn.init.normal_(self.classifier.weight, std=0.01)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, feats: list[torch.Tensor], out_size: tuple[int, int],
                return_features: bool = False, detail: torch.Tensor | None = None,
                ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The output map; with ``return_features`` also the classifier's input (output = W x + b
        after dropout, which is the identity in eval mode). ``detail``: the stride-2 map the detail
        branch reads (needed when the head has one)."""
        levels = [self.top(feats[-1])]  # fine to coarse, built top-down
        for i in range(len(feats) - 2, -1, -1):
            lat = self.lateral[i](feats[i])
            levels.insert(0, lat + resize_to(levels[0], lat.shape[-2:]))
        x = levels[0]
        if len(levels) > 1:
            coarse = [smooth(lvl) for smooth, lvl in zip(self.smooth, levels[1:-1])] + [levels[-1]]
            size = coarse[0].shape[-2:]
            fused = self.fuse(torch.cat([resize_to(lvl, size) for lvl in coarse], dim=1))
            x = x + resize_to(fused, x.shape[-2:])
        x = resize_to(x, out_size)
        if self.detail is not None:
            if detail is None:
                raise ValueError("This head has a detail branch: pass the backbone's stride-2 map.")
            x = x + self.detail(detail, out_size)
        x = self.refine(x)
        out = self.classifier(self.dropout(x))
        return (out, x) if return_features else out


class DetailBranch(nn.Module):
    """Stride-2 backbone features, pixel-unshuffled to the stride-4 grid (each cell keeps its 2 x 2
    sub-cells' features side by side, so where inside a cell a one-pixel pole runs is not averaged
    away), through two 1x1 convs into the decode head's channels. The last conv starts at zero, so
    adding the branch to a trained model leaves its outputs unchanged until training moves it."""

    def __init__(self, in_channels: int, channels: int, out_channels: int):
        super().__init__()
        self.reduce = conv_bn_act(in_channels * 4, channels, 1)
        self.expand = nn.Conv2d(channels, out_channels, 1)
        nn.init.zeros_(self.expand.weight)
        nn.init.zeros_(self.expand.bias)

    def forward(self, x: torch.Tensor, out_size: tuple[int, int]) -> torch.Tensor:
        x = resize_to(x, (out_size[0] * 2, out_size[1] * 2))  # a no-op for inputs that are multiples of 32
        return self.expand(self.reduce(F.pixel_unshuffle(x, 2)))


class AuxHead(nn.Module):
    """FCN head on the stride-16 features, output at their resolution (the auxiliary loss is computed
    there: 16x fewer pixels than stride 4, which matters for the K-way sigmoid of the ProLab loss)."""

    def __init__(self, in_channels: int, out_channels: int, channels: int = 64, dropout: float = 0.1):
        super().__init__()
        self.conv = conv_bn_act(in_channels, channels, 3)
        self.dropout = nn.Dropout2d(dropout)
        self.classifier = nn.Conv2d(channels, out_channels, 1)
        nn.init.normal_(self.classifier.weight, std=0.01)
        nn.init.zeros_(self.classifier.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(self.conv(x)))
