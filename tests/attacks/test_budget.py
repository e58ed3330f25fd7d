"""The classifier cloak's perceptual (texture) budget (attacks/budget.py): the map's bounds and mean, texture over
flat regions, the face cloak's numbers unchanged, the loop's per-pixel bound, the composition's full-resolution bound
and the setting's declaration (tiny images)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from comcloak import kernels
from comcloak.attacks import attack_config, run_attack
from comcloak.attacks.budget import (
    blur,
    capped_factors,
    fft_blur,
    full_resolution_budget,
    local_spread,
    running_mean,
    texture_budget,
    unit_mean_factors,
)
from comcloak.attacks.config import AttackConfig, AttackConfigError, field_default
from comcloak.attacks.faces.budget import texture_map
from comcloak.attacks.faces.settings import FaceSettings
from comcloak.models import create_model

TEXTURE = dict(budget="texture")


def half_textured(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """(1, 3, H, W) in [0, 1]: a flat grey left half (sky) and a noisy right half (foliage)."""
    rng = np.random.default_rng(seed)
    photo = np.full((height, width, 3), 128, np.int64)
    photo[:, width // 2:] += rng.integers(-60, 61, (height, width - width // 2, 3))
    return torch.from_numpy(photo.clip(0, 255)).permute(2, 0, 1)[None].float() / 255


def test_the_texture_map_has_mean_one_within_its_floor_and_ceiling_and_favours_texture() -> None:
    config = attack_config("mim", 5 / 255, **TEXTURE)
    images = torch.cat([half_textured(48, 64, seed) for seed in range(2)])
    factors = texture_budget(images, config)
    assert factors.shape == (2, 1, 48, 64)
    assert factors.min() >= config.budget_floor and factors.max() <= config.budget_ceiling
    torch.testing.assert_close(factors.mean((1, 2, 3)), torch.ones(2), atol=1e-4, rtol=0)
    assert factors[..., :24].mean() < 0.5 < 1.5 < factors[..., 40:].mean()  # flat half low, textured half high


def test_the_capped_map_is_eps_on_texture_less_on_flat_regions_and_never_above_eps() -> None:
    config = attack_config("mim", 5 / 255, budget="capped")
    images = torch.cat([half_textured(48, 64, seed) for seed in range(2)])
    factors = texture_budget(images, config)
    assert factors.shape == (2, 1, 48, 64)
    assert factors.min() >= config.budget_floor and factors.max() <= 1.0
    assert torch.all(factors[..., :24] == config.budget_floor) and torch.all(factors[..., 40:] == 1.0)
    mostly_sky = images.clone()
    mostly_sky[..., 40:] = 0.5  # a photo that is mostly flat: its sky gets no more than the other's (absolute knee)
    assert torch.equal(texture_budget(mostly_sky, config)[..., :24], factors[..., :24])


def test_capped_factors_grow_with_the_texture_up_to_the_knee() -> None:
    texture = torch.linspace(0.0, 0.02, 21).view(1, 1, 3, 7)
    factors = capped_factors(texture, 0.01, 0.2)
    expected = (texture / 0.01).clamp(0.2, 1.0)
    assert torch.equal(factors, expected) and factors.flatten()[10:].eq(1.0).all()
    assert AttackConfig.from_user(eps=5, budget="capped", budget_knee=3).budget_knee == pytest.approx(3 / 255)


def test_unit_mean_factors_reach_mean_one_or_the_nearest_the_clip_allows() -> None:
    texture = torch.rand(3, 1, 20, 20, generator=torch.Generator().manual_seed(0))
    texture[1] = 0.0  # one grey level: the floor everywhere
    texture[2, :, :, :2] = 50.0  # a few busy pixels dominate the rest
    factors = unit_mean_factors(texture, 0.25, 2.0)
    assert factors[0].mean().item() == pytest.approx(1.0, abs=1e-4)
    assert torch.all(factors[1] == 0.25)
    assert factors[2].mean().item() == pytest.approx(1.0, abs=1e-4) and factors[2].max() == 2.0


def test_the_uniform_budget_is_no_map_and_the_default() -> None:
    config = attack_config("mim", 5 / 255)
    assert config.budget == "uniform" and texture_budget(half_textured(16, 16), config) is None


@pytest.mark.parametrize("bad", [dict(budget="jnd"), dict(budget_floor=0.0), dict(budget_floor=1.5),
                                 dict(budget_ceiling=0.5), dict(budget_window=0), dict(budget_smoothing=-1.0),
                                 dict(budget_knee=0.0), dict(budget_knee=1.5)])
def test_budget_settings_out_of_range_are_refused(bad: dict) -> None:
    with pytest.raises(AttackConfigError):
        attack_config("mim", 5 / 255, **bad)


@pytest.mark.parametrize(("budget", "knob", "value"), [
    ("uniform", "budget_floor", 0.5), ("uniform", "budget_knee", 2 / 255), ("texture", "budget_knee", 2 / 255),
    ("capped", "budget_ceiling", 1.5)])
def test_a_knob_the_budget_does_not_read_is_refused_not_ignored(budget: str, knob: str, value: float) -> None:
    with pytest.raises(AttackConfigError, match=f"{knob} applies to the .* not to budget '{budget}'"):
        attack_config("mim", 5 / 255, budget=budget, **{knob: value})
    attack_config("mim", 5 / 255, budget=budget, **{knob: field_default(knob)})  # its default: nothing to ignore


def test_the_face_map_keeps_its_numbers() -> None:
    """texture_map now measures texture with the shared local_spread: the same arithmetic as before, bit for bit."""
    view = half_textured(40, 40, 3)
    settings = FaceSettings(texture_floor=0.4)
    grey = (view * torch.tensor((0.299, 0.587, 0.114))[None, :, None, None]).sum(1, True)
    window = settings.texture_window
    padded = F.pad(grey, (window // 2, (window - 1) // 2, window // 2, (window - 1) // 2), mode="replicate")
    mean = F.avg_pool2d(padded, window, stride=1)
    spread = (F.avg_pool2d(padded * padded, window, stride=1) - mean * mean).clamp_min(0.0).sqrt()
    assert torch.equal(local_spread(view, window), spread)
    reference = torch.quantile(spread.flatten(1), settings.texture_quantile, dim=1).clamp_min(1e-6)
    assert torch.equal(texture_map(view, settings), (spread / reference[:, None, None, None]).clamp(0.4, 1.0))


@pytest.mark.parametrize("budget", ["texture", "capped"])
def test_the_loop_bounds_each_pixel_by_the_shaped_budget(budget: str) -> None:
    torch.manual_seed(0)
    classifier = create_model("tiny_classifier").eval().requires_grad_(False)
    x0 = half_textured(32, 32)
    labels = classifier(x0).argmax(1)
    config = attack_config("mim", 8 / 255, steps=4, budget=budget)
    x_adv = run_attack(classifier, x0, labels, config)
    change = (x_adv - x0).abs()
    assert torch.all(change <= config.eps * texture_budget(x0, config) + 1e-6)
    if budget == "texture":
        assert change[..., 20:].max() > config.eps * 1.2  # the textured half spends more than the uniform eps
    else:
        assert change[..., 20:].max() > config.eps * 0.99 > 0.5 * config.eps > change[..., :8].max()
    given = run_attack(classifier, x0, labels, config, eps_map=texture_budget(x0, config))
    assert torch.equal(given, x_adv)  # the default map is the config's


def test_the_composition_bounds_each_full_resolution_pixel() -> None:
    photo = (half_textured(60, 80, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).contiguous()
    delta = (torch.rand(1, 3, 15, 20, generator=torch.Generator().manual_seed(0)) - 0.5) * 0.2
    config = attack_config("mim", 5 / 255, **TEXTURE)
    bound = config.eps * texture_budget(photo.permute(0, 3, 1, 2).float() / 255, config, scale=4.0)
    cloaked = kernels.compose(photo, delta, bound)
    change = (cloaked.int() - photo.int()).abs().permute(0, 3, 1, 2)
    assert torch.all(change <= torch.floor(255 * bound + 0.5 + 1e-3))
    assert torch.equal(kernels.compose(photo, delta), kernels.compose_reference(photo, delta))  # no bound: as before


@pytest.mark.parametrize("rule", ["sign", "scaled"])
def test_the_export_self_check_holds_the_step_to_its_per_pixel_update(rule: str) -> None:
    from comcloak.export.gradient import momentum_update
    from comcloak.export.self_check import UPDATE_TOLERANCE, update_error
    from comcloak.export.step_io import INPUT_NAMES, example_inputs

    inputs = example_inputs(2, 12, 12, 10, torch.Generator().manual_seed(0))
    named = dict(zip(INPUT_NAMES, inputs))
    gradient = torch.randn(named["x"].shape, generator=torch.Generator().manual_seed(1))
    images, scalars = [named[name] for name in ("x", "x0", "m")], tuple(named[name] for name in ("eps", "alpha", "mu"))
    x_next, m_next = momentum_update(gradient, *images, scalars, named["budget"], rule)
    flat, _ = momentum_update(gradient, *images, scalars, torch.ones_like(named["budget"]), rule)  # budget ignored
    other = "scaled" if rule == "sign" else "sign"
    assert update_error(inputs, x_next, m_next, rule) <= UPDATE_TOLERANCE < update_error(inputs, flat, m_next, rule)
    assert update_error(inputs, x_next, m_next, other) > UPDATE_TOLERANCE  # a graph of the other rule is caught


def sky_and_grain(height: int, width: int, seed: int = 0) -> torch.Tensor:
    """(1, 3, H, W) in [0, 1]: a smooth gradient (a sky, where the variance is tiny) with grain on its lower half."""
    generator = torch.Generator().manual_seed(seed)
    ramp = torch.linspace(0.3, 0.4, width).expand(1, 3, height, width).clone()
    ramp[..., height // 2:, :] += 0.05 * torch.randn(1, 3, height - height // 2, width, generator=generator)
    return ramp.clamp(0, 1)


def test_the_full_resolution_ops_are_the_plain_ones_within_the_plain_ones_own_float32_error() -> None:
    """The running-sum box means and the FFT Gaussian (the full-resolution map's) give the plain avg_pool / conv
    figures: each within the float32 error the plain ops themselves have against float64, or 1e-5."""
    images, window, sigma = sky_and_grain(96, 160), 21, 6.0
    exact = local_spread(images.double(), window, separable=True)
    plain_error = (local_spread(images, window, separable=True) - exact).abs().max().item()
    running = local_spread(images, window, separable=True, running=True)
    assert (running - exact).abs().max().item() <= max(plain_error, 1e-5)
    texture = exact.float()
    exact_blur = blur(texture.double(), sigma)
    plain_blur_error = (blur(texture, sigma) - exact_blur).abs().max().item()
    assert (fft_blur(texture, sigma) - exact_blur).abs().max().item() <= max(plain_blur_error, 1e-5)
    values = torch.rand(2, 1, 5, 40, generator=torch.Generator().manual_seed(1))
    assert torch.allclose(running_mean(values, 7, -1), F.avg_pool2d(values, (1, 7), stride=1), atol=1e-6)


def test_the_full_resolution_map_is_the_plain_maps_figure_in_float64() -> None:
    """A photo larger than the working view takes the fast ops; its map is what the plain ops give in float64."""
    config = attack_config("mim", 7 / 255, budget="capped", attack_size=48)
    photo = sky_and_grain(96, 144)
    factors = full_resolution_budget(photo, config)
    window = round(config.budget_window * 2)
    reference = capped_factors(blur(local_spread(photo.double(), window, separable=True), config.budget_smoothing * 2),
                               config.budget_knee, config.budget_floor)
    assert factors.shape == (1, 1, 96, 144) and factors.max() <= 1.0
    assert (factors - reference).abs().max().item() < 1e-4
    assert factors[..., :20, :].mean() < 0.5 < factors[..., 70:, :].mean()  # the sky less than the grain
