"""Shared fixtures for comcloak.models tests: scikit-image's bundled sample photos as [0,1] NCHW tensors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F


def photo_tensor(name: str, size: int | tuple[int, int] = 224) -> torch.Tensor:
    """skimage.data.<name>() resized (antialiased) to ``size``, as float (1, 3, H, W) in [0, 1]."""
    data = pytest.importorskip("skimage.data")
    rgb = torch.from_numpy(getattr(data, name)()[..., :3].copy()).permute(2, 0, 1)[None].float() / 255.0
    return F.interpolate(rgb, size=size, mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)


@pytest.fixture(scope="session")
def photo_at_size():
    """The ``photo_tensor`` function, for tests that need another size."""
    return photo_tensor


@pytest.fixture(scope="session")
def photos() -> dict[str, torch.Tensor]:
    return {name: photo_tensor(name) for name in ("chelsea", "coffee")}
