"""The face cloak's texture-shaped budget (attacks/faces/budget), the loop's per-pixel eps_map, the composition's
per-pixel bound, TI gradient smoothing and the face presets (tiny models, small images, few steps)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from comcloak.attacks import attack_config, run_attack
from comcloak.attacks.faces import FACE_PRESETS, FaceModels, FaceSettings, cloak_faces, face_config
from comcloak.attacks.faces.budget import blur, smooth_gradient, texture_map
from comcloak.models.faces import FaceDetection

TINY = dict(steps=3, draws=1, through="none", detector="tiny_yunet", recogniser="tiny_sface", min_psnr=0.0)


def half_textured(height: int, width: int, seed: int = 0) -> np.ndarray:
    """uint8 (H, W, 3): a flat grey left half (smooth skin) and a noisy right half (hair)."""
    rng = np.random.default_rng(seed)
    photo = np.full((height, width, 3), 128, np.int64)
    photo[:, width // 2:] += rng.integers(-60, 61, (height, width - width // 2, 3))
    return photo.clip(0, 255).astype(np.uint8)


def test_the_texture_map_is_bounded_and_smaller_on_smooth_regions() -> None:
    view = torch.from_numpy(half_textured(64, 64)).permute(2, 0, 1)[None].float() / 255
    factors = texture_map(view, FaceSettings(texture_floor=0.3, texture_quantile=0.55))
    assert factors.shape == (1, 1, 64, 64)
    assert factors.min() >= 0.3 and factors.max() <= 1.0
    assert torch.all(factors[..., :, :28] == 0.3) and factors[..., :, 36:].mean() > 0.8
    assert texture_map(view, FaceSettings()) is None  # floor 1: a flat budget, the loop's scalar eps


def test_run_attack_bounds_and_steps_each_pixel_by_the_eps_map(classifier: torch.nn.Module) -> None:
    x0 = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    labels = classifier(x0).argmax(1)
    config = attack_config("mim", 8 / 255, steps=4)
    factors = torch.rand(2, 1, 32, 32, generator=torch.Generator().manual_seed(2))
    shaped = run_attack(classifier, x0, labels, config, eps_map=factors)
    assert torch.all((shaped - x0).abs() <= config.eps * factors + 1e-7)
    assert torch.any((shaped - x0).abs() > config.eps * factors.mean())  # it does move up to the per-pixel bound
    flat = run_attack(classifier, x0, labels, config)
    assert torch.equal(run_attack(classifier, x0, labels, config, eps_map=torch.ones(2, 1, 32, 32)), flat)
    with pytest.raises(ValueError, match="eps_map must be shaped"):
        run_attack(classifier, x0, labels, config, eps_map=torch.ones(1, 1, 32, 32))


def face(x: float, y: float, side: float) -> FaceDetection:
    unit = np.array([[0.3, 0.4], [0.7, 0.4], [0.5, 0.6], [0.35, 0.8], [0.65, 0.8]])
    return FaceDetection((x, y, side, side), unit * side + [x, y], 0.99)


@pytest.mark.parametrize("work_size", [32, 96])  # the region shrunk and enlarged for the loop
def test_the_composed_cloak_respects_the_texture_budget(work_size: int) -> None:
    photo = half_textured(64, 96)
    models = FaceModels.create("tiny_yunet", "tiny_sface")
    config = face_config(eps=12, work_size=work_size, texture_floor=0.25, texture_quantile=0.5, feather=0.0,
                         **TINY)
    result = cloak_faces(photo, config, models=models, detections=[face(24, 8, 48)])
    difference = np.abs(result.photo.astype(int) - photo.astype(int)).max(-1)
    region = result.faces[0].region
    assert (region.left, region.side) == (16, 64)  # columns 16-47 flat, 48-79 textured
    flat, textured = difference[:, region.left:36], difference[:, 60:region.left + region.side]
    assert 0 < difference.max() <= 12 and flat.max() <= 3 < textured.max()  # floor 0.25 of 12 levels is 3


def test_smooth_gradient_is_the_identity_forward_and_blurs_backward() -> None:
    images = torch.rand(2, 3, 24, 24, requires_grad=True)
    weights = torch.randn(2, 3, 24, 24)
    smoothed = smooth_gradient(images, 1.5)
    assert torch.equal(smoothed, images)
    (gradient,) = torch.autograd.grad((smoothed * weights).sum(), images)
    torch.testing.assert_close(gradient, blur(weights, 1.5))
    assert gradient.abs().mean() < weights.abs().mean()
    assert smooth_gradient(images, 0.0) is images
    constant = torch.ones(1, 1, 9, 9)
    torch.testing.assert_close(blur(constant, 2.0), constant)  # normalised, replicated borders


@pytest.mark.parametrize("preset", list(FACE_PRESETS))
def test_the_face_presets_build_with_their_face_settings(preset: str) -> None:
    config = face_config(preset)
    chosen = FACE_PRESETS[preset]
    assert config.attack.eps_255 == pytest.approx(chosen.eps) and config.face.min_psnr == chosen.min_psnr
    for name, value in chosen.face:
        assert getattr(config.face, name) == value
    assert face_config(preset, texture_floor=1.0).face.texture_floor == 1.0  # given values win
