"""ComModel: the learned, differentiable stand-in for a lossy compressor (ComReAdv; docs/DESIGN.md §2).

A residual encoder (/16) and a transposed-convolution decoder with skip concatenations. Input and output are RGB
NCHW in [0, 1]; the output is linear (callers clip). H and W must be multiples of 16 (the four stride-2 stages and
the skip concatenations need even sizes at every level); the forward does not check this, so the module stays
``torch.fx``-traceable, and other sizes fail inside ``torch.cat`` with a size mismatch.

Padding follows Keras "same" for even kernels: a stride-1 4x4 conv pads 1 before and 2 after (explicit
``nn.ZeroPad2d``), a stride-2 4x4 conv on an even input pads 1 and 1. Each ``ConvTranspose2d(4, stride 2,
padding 1)`` exactly doubles the size.

Size (counted with ``torch.utils.flop_counter`` at 1x3x224x224; FLOPs = 2 x multiply-accumulates):
``comodel`` (width 1.0) 6.96 M parameters, 10.1 GFLOPs; ``comodel_tiny`` (width 0.125) 110 k parameters,
0.226 GFLOPs.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from .padding import same_pad_layer
from .registry import register_model
from .weights import PathLike, load_pretrained

logger = logging.getLogger(__name__)

SIZE_MULTIPLE = 16  # H and W must be multiples of this


def _ch(n: int, width: float) -> int:
    return max(1, int(round(n * width)))


class _SameConv(nn.Module):
    """Conv2d with Keras "same" padding: explicit asymmetric ZeroPad2d where needed, else the conv's own padding."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int = 1) -> None:
        super().__init__()
        self.pad, conv_pad = same_pad_layer(kernel, stride)
        self.conv = nn.Conv2d(in_ch, out_ch, kernel, stride, padding=conv_pad)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.pad(x) if self.pad is not None else x)


class ResidualBottleneck(nn.Module):
    """1x1 (f/4) -> 4x4 (f/4, stride s) -> 1x1 (f), no activation inside; 1x1 strided projection shortcut; add; ReLU."""

    def __init__(self, in_ch: int, filters: int, stride: int, width: float) -> None:
        super().__init__()
        mid = _ch(filters // 4, width)
        out = _ch(filters, width)
        self.reduce = _SameConv(in_ch, mid, 1)
        self.spatial = _SameConv(mid, mid, 4, stride)
        self.expand = _SameConv(mid, out, 1)
        self.shortcut = _SameConv(in_ch, out, 1, stride)
        self.relu = nn.ReLU()
        self.out_channels = out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.expand(self.spatial(self.reduce(x))) + self.shortcut(x))


class _Up(nn.Module):
    """ConvTranspose2d 4x4 stride 2 (exactly doubles H and W) + ReLU."""

    def __init__(self, in_ch: int, out_ch: int) -> None:
        super().__init__()
        self.deconv = nn.ConvTranspose2d(in_ch, out_ch, 4, 2, padding=1)
        self.relu = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.relu(self.deconv(x))


class ComModel(nn.Module):
    """Compression stand-in; ``width`` scales every channel count (the 3-channel output excepted)."""

    def __init__(self, width: float = 1.0) -> None:
        super().__init__()
        self.width = width
        stem = _ch(64, width)
        self.stem = _SameConv(3, stem, 4)
        self.stem_relu = nn.ReLU()
        self.x1 = ResidualBottleneck(stem, 64, 2, width)
        self.x2 = ResidualBottleneck(self.x1.out_channels, 128, 2, width)
        self.x3 = ResidualBottleneck(self.x2.out_channels, 256, 2, width)
        self.x4 = ResidualBottleneck(self.x3.out_channels, 512, 2, width)
        self.x5 = ResidualBottleneck(self.x4.out_channels, 512, 1, width)
        c1, c2, c3, c4, c5 = (getattr(self, f"x{i}").out_channels for i in range(1, 6))
        self.up4 = _Up(c5 + c4, _ch(256, width))
        self.up3 = _Up(_ch(256, width) + c3, _ch(128, width))
        self.up2 = _Up(_ch(128, width) + c2, _ch(64, width))
        self.up1 = _Up(_ch(64, width) + c1, _ch(64, width))
        self.head = _SameConv(_ch(64, width), 3, 4)
        self._init_weights()

    def _init_weights(self) -> None:
        # Keras defaults (glorot-uniform kernels, zero biases), as the reference model was trained with them.
        for m in self.modules():
            if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) in [0, 1], H and W multiples of 16 -> (N, 3, H, W), linear (clip at use)."""
        s = self.stem_relu(self.stem(x))
        x1 = self.x1(s)  # /2
        x2 = self.x2(x1)  # /4
        x3 = self.x3(x2)  # /8
        x4 = self.x4(x3)  # /16
        x5 = self.x5(x4)  # /16
        y = self.up4(torch.cat([x5, x4], 1))  # /8
        y = self.up3(torch.cat([y, x3], 1))  # /4
        y = self.up2(torch.cat([y, x2], 1))  # /2
        y = self.up1(torch.cat([y, x1], 1))  # /1
        return self.head(y)


@register_model
def comodel(pretrained: bool | PathLike = False, width: float = 1.0) -> ComModel:
    """Full-width ComModel. Trained weights are per codec: pass ``pretrained=<path>`` (True has no default file)."""
    return load_pretrained(ComModel(width), pretrained, None, "comodel")


@register_model
def comodel_tiny(pretrained: bool | PathLike = False) -> ComModel:
    """ComModel at width 0.125, for tests and quick experiments."""
    return load_pretrained(ComModel(0.125), pretrained, None, "comodel_tiny")
