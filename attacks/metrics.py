"""Image-quality metrics between an original and a cloaked photo, both uint8 RGB (H, W, 3) on the 0–255 scale."""

from __future__ import annotations

import math

import numpy as np
import torch

_SSIM_SIGMA = 1.5
_SSIM_RADIUS = 5  # 11-tap Gaussian window, as in Wang et al. 2004
_SSIM_K1, _SSIM_K2 = 0.01, 0.03
_SSIM_BAND = 64  # output rows per band


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
    if min(original.shape[:2]) < 2 * _SSIM_RADIUS + 1:
        raise ValueError(f"SSIM needs images of at least {2 * _SSIM_RADIUS + 1}x{2 * _SSIM_RADIUS + 1} pixels")
    # Float64 on the 0-255 scale (float32 loses the variance of smooth regions to cancellation), in bands of rows
    # so that the five blurred statistics stay in cache for multi-megapixel photos.
    taps = torch.arange(-_SSIM_RADIUS, _SSIM_RADIUS + 1, dtype=torch.float64)
    kernel_1d = torch.exp(-(taps**2) / (2 * _SSIM_SIGMA**2))
    kernel_1d /= kernel_1d.sum()
    c1, c2 = (_SSIM_K1 * 255) ** 2, (_SSIM_K2 * 255) ** 2
    valid_rows = original.shape[0] - 2 * _SSIM_RADIUS
    total, count = 0.0, 0
    for top in range(0, valid_rows, _SSIM_BAND):
        rows = slice(top, min(top + _SSIM_BAND, valid_rows) + 2 * _SSIM_RADIUS)
        a = torch.from_numpy(np.ascontiguousarray(original[rows])).double().permute(2, 0, 1)
        b = torch.from_numpy(np.ascontiguousarray(other[rows])).double().permute(2, 0, 1)
        stack = torch.stack([a, b, a * a, b * b, a * b])  # (5, 3, band, W)
        mu_a, mu_b, aa, bb, ab = _blur(_blur(stack, -1, kernel_1d), -2, kernel_1d)  # valid region, as skimage
        var_a = aa - mu_a**2
        var_b = bb - mu_b**2
        cov = ab - mu_a * mu_b
        ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
        total += float(ssim_map.sum())
        count += ssim_map.numel()
    return total / count


def _blur(t: torch.Tensor, dim: int, kernel_1d: torch.Tensor) -> torch.Tensor:
    """Valid 1-D Gaussian filter along ``dim`` as shifted multiply-adds (faster than conv2d on large planes)."""
    length = t.shape[dim] - 2 * _SSIM_RADIUS
    out = t.narrow(dim, 0, length) * kernel_1d[0]
    for tap in range(1, 2 * _SSIM_RADIUS + 1):
        out += t.narrow(dim, tap, length) * kernel_1d[tap]
    return out
