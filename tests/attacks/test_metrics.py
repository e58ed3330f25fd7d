"""Image-quality metrics against closed forms and scikit-image's SSIM."""

from __future__ import annotations

import math

import numpy as np
import pytest
from skimage.metrics import structural_similarity

from comcloak.attacks import linf, psnr, ssim


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
