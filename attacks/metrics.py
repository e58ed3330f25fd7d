"""Image-quality metrics between an original and a cloaked photo, both uint8 RGB (H, W, 3) on the 0–255 scale."""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

_SSIM_SIGMA = 1.5
_SSIM_RADIUS = 5  # 11-tap Gaussian window, as in Wang et al. 2004
_SSIM_K1, _SSIM_K2 = 0.01, 0.03


def _check_pair(original: np.ndarray, other: np.ndarray) -> None:
    if original.shape != other.shape:
        raise ValueError(f"images differ in shape: {original.shape} vs {other.shape}")


def linf(original: np.ndarray, other: np.ndarray) -> int:
    """Largest absolute per-pixel difference, 0–255."""
    _check_pair(original, other)
    return int(np.abs(original.astype(np.int16) - other.astype(np.int16)).max())


def psnr(original: np.ndarray, other: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB for 8-bit images (inf when identical)."""
    _check_pair(original, other)
    mse = float(np.mean((original.astype(np.float64) - other.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(255.0**2 / mse)


def ssim(original: np.ndarray, other: np.ndarray) -> float:
    """Structural similarity (Wang et al. 2004): Gaussian window σ = 1.5, averaged over channels.

    Matches ``skimage.metrics.structural_similarity(..., gaussian_weights=True, sigma=1.5,
    use_sample_covariance=False, data_range=255, channel_axis=-1)``.
    """
    _check_pair(original, other)
    a = torch.from_numpy(np.ascontiguousarray(original)).double().permute(2, 0, 1)[:, None]
    b = torch.from_numpy(np.ascontiguousarray(other)).double().permute(2, 0, 1)[:, None]
    taps = torch.arange(-_SSIM_RADIUS, _SSIM_RADIUS + 1, dtype=torch.float64)
    kernel_1d = torch.exp(-(taps**2) / (2 * _SSIM_SIGMA**2))
    kernel_1d /= kernel_1d.sum()

    def blur(t: torch.Tensor) -> torch.Tensor:  # separable Gaussian, valid region only (as skimage crops)
        t = F.conv2d(t, kernel_1d.view(1, 1, 1, -1))
        return F.conv2d(t, kernel_1d.view(1, 1, -1, 1))

    if min(a.shape[-2:]) < 2 * _SSIM_RADIUS + 1:
        raise ValueError(f"SSIM needs images of at least {2 * _SSIM_RADIUS + 1}x{2 * _SSIM_RADIUS + 1} pixels")
    c1, c2 = (_SSIM_K1 * 255) ** 2, (_SSIM_K2 * 255) ** 2
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(ssim_map.mean())
