"""Image-quality metrics against closed forms and scikit-image's SSIM."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from comcloak.attacks import linf, psnr, ssim
from comcloak.attacks.metrics import flat_quarter_rms, flattest_box, flattest_pixels, photo_quality


@pytest.fixture(scope="module")
def pair(sample_photos: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    original = sample_photos["chelsea"][:120, :160]
    noise = np.random.default_rng(0).integers(-5, 6, original.shape)
    return original, np.clip(original.astype(int) + noise, 0, 255).astype(np.uint8)


def test_linf_and_psnr_closed_forms() -> None:
    a = np.zeros((8, 8, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 10
    assert linf(a, b) == 10
    assert psnr(a, b) == pytest.approx(10 * math.log10(255**2 / (100 / a.size)))
    assert psnr(a, a) == math.inf


def test_ssim_matches_scikit_image(pair: tuple[np.ndarray, np.ndarray]) -> None:
    original, noisy = pair
    reference = structural_similarity(original, noisy, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                      data_range=255, channel_axis=-1)
    assert ssim(original, noisy) == pytest.approx(reference, abs=1e-6)
    assert ssim(original, original) == pytest.approx(1.0)


def test_shape_mismatch_is_an_error() -> None:
    with pytest.raises(ValueError, match="differ in shape"):
        psnr(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 5, 3), np.uint8))


def test_ssim_matches_scikit_image_on_a_whole_photo(sample_photos: dict[str, np.ndarray]) -> None:
    original = sample_photos["coffee"]  # 400 rows: several of ssim's row bands
    noisy = np.clip(original.astype(int) + np.random.default_rng(1).integers(-4, 5, original.shape), 0, 255)
    noisy = noisy.astype(np.uint8)
    reference = structural_similarity(original, noisy, gaussian_weights=True, sigma=1.5, use_sample_covariance=False,
                                      data_range=255, channel_axis=-1)
    assert ssim(original, noisy) == pytest.approx(reference, abs=1e-6)


def half_flat_pair(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """An original whose left half is one grey and right half noise, and a cloak that adds 3 to the flat half and
    +-6 (a checkerboard) to the textured half: known PSNR, L-inf and flat-quarter RMS."""
    rng = np.random.default_rng(2)
    original = np.full((height, width, 3), 100, np.uint8)
    original[:, width // 2 :] = rng.integers(10, 246, (height, width - width // 2, 3))
    change = np.full(original.shape, 3)
    signs = np.where((np.arange(height)[:, None] + np.arange(width)[None]) % 2 == 0, 6, -6)
    change[:, width // 2 :] = signs[:, width // 2 :, None]
    return original, (original + change).astype(np.uint8)


@pytest.mark.parametrize("shape", [(64, 128), (256, 512)])  # the photo itself, and one shrunk to the working view
def test_flat_quarter_rms_sees_only_the_flat_half(shape: tuple[int, int]) -> None:
    original, cloak = half_flat_pair(*shape)
    mask = flattest_pixels(original)
    assert mask.sum() == original.shape[0] * original.shape[1] // 4
    assert not mask[:, shape[1] // 2 :].any()  # the quarter lies in the flat half
    assert flat_quarter_rms(original, cloak) == pytest.approx(3.0)
    figures = photo_quality(original, cloak)
    assert figures["flat_rms"] == pytest.approx(3.0) and figures["linf"] == 6
    assert figures["psnr"] == pytest.approx(10 * math.log10(255**2 / ((9 + 36) / 2)))  # MSE: halves of 3² and 6²
    assert figures["ssim"] == pytest.approx(ssim(original, cloak))
    assert photo_quality(original, original)["psnr"] == 99.0  # capped: a number for JSON and means


def test_the_flattest_quarter_is_where_the_texture_budget_is_smallest(sample_photos: dict[str, np.ndarray]) -> None:
    """One meaning of "flat": the quarter the figure measures is where ``--budget texture`` spends least."""
    import torch

    from comcloak.attacks.budget import texture_budget
    from comcloak.attacks.presets import preset_config

    photo = sample_photos["rocket"]
    mask = flattest_pixels(photo)
    config = preset_config("balanced", budget="texture")
    scale = min(photo.shape[:2]) / config.attack_size
    factors = texture_budget(torch.from_numpy(photo).permute(2, 0, 1)[None].float() / 255, config, scale)[0, 0]
    factors = factors.numpy()
    assert factors[mask].mean() < 0.6 * factors[~mask].mean()
    assert np.quantile(factors[mask], 0.9) <= np.quantile(factors[~mask], 0.5)


def test_flattest_box_finds_the_flat_patch() -> None:
    photo = np.random.default_rng(4).integers(0, 256, (96, 120, 3), dtype=np.uint8)
    photo[8:48, 64:112] = 70  # the one flat patch: 40 x 48 pixels
    top, left = flattest_box(photo, 24)
    assert 8 <= top <= 48 - 24 and 64 <= left <= 112 - 24
    with pytest.raises(ValueError, match="does not fit"):
        flattest_box(photo, 97)
