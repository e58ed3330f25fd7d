"""The full-resolution compose: its torch reference, the Cloaker's use of it, and the CUDA kernel against it."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from comcloak.kernels import compose, compose_reference


def photo_and_delta(count: int, height: int, width: int, view: tuple[int, int], seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    photo = torch.randint(0, 256, (count, height, width, 3), dtype=torch.uint8, generator=generator)
    photo[:, :4] = 0  # saturated rows: the clip at both ends
    photo[:, 4:8] = 255
    delta = (torch.rand(count, 3, *view, generator=generator) * 2 - 1) * (6 / 255)
    return photo, delta


def test_reference_upsamples_adds_rounds_and_clips() -> None:
    photo, delta = photo_and_delta(2, 45, 61, (22, 30))
    out = compose_reference(photo, delta)
    assert out.dtype == torch.uint8 and out.shape == photo.shape
    up = F.interpolate(delta, size=(45, 61), mode="bilinear", align_corners=False).permute(0, 2, 3, 1)
    expected = (photo.float() + 255 * up).round().clamp(0, 255)
    assert torch.equal(out, expected.to(torch.uint8))
    change = (out.int() - photo.int()).abs()
    assert change.max() <= 6  # |delta| <= 6/255 and the photo is on the grid


def test_reference_without_resizing_is_exact() -> None:
    photo, delta = photo_and_delta(1, 16, 24, (16, 24))
    delta = (delta * 255).round() / 255  # whole grey levels
    expected = (photo.float() + (255 * delta).round().permute(0, 2, 3, 1)).clamp(0, 255).to(torch.uint8)
    assert torch.equal(compose(photo, delta), expected)


def test_compose_rejects_wrong_layouts() -> None:
    photo, delta = photo_and_delta(1, 8, 8, (4, 4))
    with pytest.raises(ValueError, match=r"photo must be uint8 shaped \(N, H, W, 3\)"):
        compose(photo.permute(0, 3, 1, 2).float(), delta)
    with pytest.raises(ValueError, match=r"delta must be shaped \(1, 3, h, w\)"):
        compose(photo, delta[:, :2])


@pytest.mark.gpu
@pytest.mark.parametrize("size,view", [((45, 61), (22, 30)), ((224, 224), (224, 224)), ((1000, 1500), (224, 336)),
                                       ((37, 300), (60, 40))])
def test_kernel_matches_reference(loaded_kernels, size, view) -> None:
    """Tolerance: within 1 grey level everywhere, identical on at least 99.99 % of values (a value within float
    rounding of a half level may round the other way)."""
    photo, delta = photo_and_delta(2, *size, view, seed=3)
    expected = compose_reference(photo, delta)
    got = loaded_kernels.compose(photo.cuda(), delta.cuda()).cpu()
    difference = (got.int() - expected.int()).abs()
    assert difference.max() <= 1
    assert (difference == 0).float().mean() >= 0.9999
