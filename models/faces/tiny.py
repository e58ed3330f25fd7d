"""Fixed random weights for the ``tiny_*`` face models (fast tests of the same architecture families)."""

from __future__ import annotations

import torch
from torch import nn


def init_random(model: nn.Module, seed: int) -> None:
    """Deterministic, non-trivial weights from a private generator (the global RNG is left alone): He-scaled
    kernels, BatchNorm scales near 1 and positive running variances, small biases."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if name.endswith("num_batches_tracked"):
                continue
            if name.endswith("running_var"):
                t.copy_(0.5 + torch.rand(t.shape, generator=g))
            elif t.dim() <= 1:
                t.copy_(0.1 * torch.randn(t.shape, generator=g) + (1.0 if name.endswith("weight") else 0.0))
            else:
                t.copy_(torch.randn(t.shape, generator=g) * (2.0 / t[0].numel()) ** 0.5)
