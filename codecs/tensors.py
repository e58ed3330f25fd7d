"""The one conversion between uint8 NHWC photos (what codecs and files hold) and float NCHW tensors in [0, 1]."""

from __future__ import annotations

import numpy as np
import torch


def to_tensor(batch: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """uint8 NHWC RGB → float NCHW in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(batch)).to(device).permute(0, 3, 1, 2).float().div_(255.0)


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """float NCHW in [0, 1] → uint8 NHWC RGB, rounded to nearest."""
    return images.detach().mul(255.0).round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
