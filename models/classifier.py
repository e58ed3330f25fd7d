"""Shared base for ImageNet-style classifiers: [0,1] RGB in, logits out, normalisation inside."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class ImageClassifier(nn.Module):
    """Base class: ``forward(x) = forward_head(forward_features(x))`` on RGB float NCHW in [0, 1], any H x W.

    The model normalises its own input with the ``mean``/``std`` buffers, so callers (attacks, exports) never
    normalise. The buffers are non-persistent: state dicts keep exactly the upstream key layout.
    Subclasses implement :meth:`forward_features` (starting with ``self.normalize(x)``) and :meth:`forward_head`.
    """

    input_size: int = 224  # resolution the weights were trained at; any size >= 32 runs

    def __init__(self, num_classes: int, num_features: int, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        self.num_classes = num_classes
        self.num_features = num_features
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1), persistent=False)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """[0,1] image -> last feature map (N, num_features, h, w)."""
        raise NotImplementedError

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map -> logits (N, num_classes)."""
        raise NotImplementedError

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))
