"""A very small, deterministically initialised classifier for fast tests of attacks and exports."""

from __future__ import annotations

import torch
from torch import nn

from .classifier import IMAGENET_MEAN, IMAGENET_STD, ImageClassifier
from .registry import register_model


class TinyClassifier(ImageClassifier):
    """conv-BN-ReLU, 3x3/2 max-pool, conv-BN-ReLU, global average pool, linear: every layer type the real nets use."""

    def __init__(self, num_classes: int = 1000, width: int = 8, seed: int = 0) -> None:
        super().__init__(num_classes, 2 * width, IMAGENET_MEAN, IMAGENET_STD)
        self.conv1 = nn.Conv2d(3, width, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu1 = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)  # overlapping windows, as in ResNet
        self.conv2 = nn.Conv2d(width, 2 * width, 3, 1, 1, bias=True)
        self.bn2 = nn.BatchNorm2d(2 * width)
        self.relu2 = nn.ReLU()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, num_classes)
        self._init_weights(seed)

    @torch.no_grad()
    def _init_weights(self, seed: int) -> None:
        # A private generator: the same weights on every run, without touching the global RNG.
        g = torch.Generator().manual_seed(seed)
        for name, t in self.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("running_var") or (name.startswith("bn") and name.endswith("weight")):
                t.copy_(0.5 + torch.rand(t.shape, generator=g))  # positive, non-trivial BN statistics
            elif name.startswith("bn") or name.endswith("bias"):
                t.copy_(0.1 * torch.randn(t.shape, generator=g))
            else:
                fan_in = t[0].numel()
                t.copy_(torch.randn(t.shape, generator=g) * (2.0 / fan_in) ** 0.5)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu1(self.bn1(self.conv1(self.normalize(x)))))
        return self.relu2(self.bn2(self.conv2(x)))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(x), 1))


@register_model
def tiny_classifier(num_classes: int = 1000, pretrained: bool = False) -> TinyClassifier:
    """Tiny test classifier (18.4 k params at 1000 classes); weights are a fixed function of the seed."""
    if pretrained:
        raise ValueError("tiny_classifier has no pretrained weights; it is a deterministic test network")
    return TinyClassifier(num_classes).eval()


@register_model
def tiny_classifier_b(num_classes: int = 1000, pretrained: bool = False) -> TinyClassifier:
    """A second tiny test classifier (other seed): the second member of test ensembles."""
    if pretrained:
        raise ValueError("tiny_classifier_b has no pretrained weights; it is a deterministic test network")
    return TinyClassifier(num_classes, seed=1).eval()
