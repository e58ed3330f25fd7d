"""MTCNN's three networks (Zhang et al. 2016; the weights of the PyPI package ``facenet-pytorch``, MIT) as our own
torch modules, with state-dict keys equal to the package's, so its ``data/{pnet,rnet,onet}.pt`` load strictly
(``weights_only``) without importing the package (whose metadata pins an old torch: install it ``--no-deps``).

Each network takes (N, 3, H, W) RGB normalised as ``(v - 127.5) / 128`` on 0..255 values. The cascade that turns
them into faces is :mod:`.mtcnn_detect`.
"""

from __future__ import annotations

import torch
from torch import nn

from comcloak.models.weights import load_weights

from .packaged import PackagedFile
from .registry import register_face_model
from .tiny import init_random

MTCNN_FILES = {name: PackagedFile("facenet-pytorch", "facenet_pytorch", f"data/{name}.pt", pip_flags="--no-deps")
               for name in ("pnet", "rnet", "onet")}


def _flatten_hwc(x: torch.Tensor) -> torch.Tensor:
    # The original (Caffe/MATLAB) weights flatten in (W, H, C) order: keep it, or the dense layers see noise.
    return x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)


class PNet(nn.Module):
    """Proposal net, fully convolutional: -> (box regression (N, 4, h, w), face probability (N, 2, h, w))."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.pool1 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1, self.conv4_2 = nn.Conv2d(32, 2, 1), nn.Conv2d(32, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool1(self.prelu1(self.conv1(x)))
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return self.conv4_2(x), torch.softmax(self.conv4_1(x), 1)


class RNet(nn.Module):
    """Refinement net on 24x24 crops: -> (box regression (N, 4), face probability (N, 2))."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1, self.dense5_2 = nn.Linear(128, 2), nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.pool2(self.prelu2(self.conv2(self.pool1(self.prelu1(self.conv1(x))))))
        x = self.prelu4(self.dense4(_flatten_hwc(self.prelu3(self.conv3(x)))))
        return self.dense5_2(x), torch.softmax(self.dense5_1(x), 1)


class ONet(nn.Module):
    """Output net on 48x48 crops: -> (box regression (N, 4), landmarks (N, 10): 5 x then 5 y in the crop's unit
    square, face probability (N, 2))."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.pool1 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.pool2 = nn.MaxPool2d(3, 2, ceil_mode=True)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.pool3 = nn.MaxPool2d(2, 2, ceil_mode=True)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1, self.dense6_2, self.dense6_3 = nn.Linear(256, 2), nn.Linear(256, 4), nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = self.pool2(self.prelu2(self.conv2(self.pool1(self.prelu1(self.conv1(x))))))
        x = self.prelu4(self.conv4(self.pool3(self.prelu3(self.conv3(x)))))
        x = self.prelu5(self.dense5(_flatten_hwc(x)))
        return self.dense6_2(x), self.dense6_3(x), torch.softmax(self.dense6_1(x), 1)


class MTCNN(nn.Module):
    """The three networks together; :func:`comcloak.models.faces.mtcnn_detect.detect_faces_mtcnn` runs the cascade."""

    def __init__(self) -> None:
        super().__init__()
        self.pnet, self.rnet, self.onet = PNet(), RNet(), ONet()


@register_face_model("detector")
def mtcnn(pretrained: bool = True) -> MTCNN:
    """MTCNN (P/R/O-Net; boxes, scores, 5 landmarks; weights from the ``facenet-pytorch`` package's state dicts)."""
    model = MTCNN()
    if pretrained:
        for name, file in MTCNN_FILES.items():
            load_weights(getattr(model, name), file.path("mtcnn"))
    return model.eval()


@register_face_model("detector")
def tiny_mtcnn(seed: int = 0) -> MTCNN:
    """MTCNN's architecture with fixed random weights (a function of ``seed``), for fast tests."""
    model = MTCNN()
    init_random(model, seed)
    return model.eval()
