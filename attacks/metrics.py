"""Image-quality metrics between an original and a cloaked photo, both uint8 RGB (H, W, 3) on the 0–255 scale.

:func:`psnr`, :func:`ssim` and :func:`linf` judge the whole photo; :func:`flat_quarter_rms` judges where a pattern is
most visible: the perturbation's RMS over the flattest quarter of the photo's pixels, "flat" measured as the texture
budget measures it (``comcloak.attacks.budget``). :func:`photo_quality` gives all four for one photo.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from comcloak import defaults
from comcloak.attacks.budget import blur, local_spread
from comcloak.attacks.config import field_default

_SSIM_SIGMA = 1.5
_SSIM_RADIUS = 5  # 11-tap Gaussian window, as in Wang et al. 2004
_SSIM_K1, _SSIM_K2 = 0.01, 0.03
PSNR_CAP = 99.0  # identical images have an infinite PSNR; JSON and means need a number
FLAT_SHARE = 0.25  # the flattest quarter of the pixels
# Flatness is the texture budget's measure at its default window and smoothing, on the default working view (the
# photo's shorter side resized to defaults.ATTACK_SIZE; smaller photos keep their size): the same figure for every
# preset, and a window that grows with the photo, as the budget's full-resolution map does.
FLAT_WINDOW: int = field_default("budget_window")
FLAT_SMOOTHING: float = field_default("budget_smoothing")


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
    use_sample_covariance=False, data_range=255, channel_axis=-1)`` (to ~1e-7 on photos).

    Example:
        >>> flat = np.full((32, 32, 3), 90, np.uint8)
        >>> round(ssim(flat, flat), 6)
        1.0
    """
    import cv2  # OpenCV's separable filter: ~5x faster than torch's on multi-megapixel photos

    _check_pair(original, other)
    if min(original.shape[:2]) < 2 * _SSIM_RADIUS + 1:
        raise ValueError(f"SSIM needs images of at least {2 * _SSIM_RADIUS + 1}x{2 * _SSIM_RADIUS + 1} pixels")
    kernel = cv2.getGaussianKernel(2 * _SSIM_RADIUS + 1, _SSIM_SIGMA, cv2.CV_64F)
    valid = slice(_SSIM_RADIUS, -_SSIM_RADIUS)  # the filter's valid region, as skimage crops it

    def blur(plane: np.ndarray) -> np.ndarray:
        return cv2.sepFilter2D(plane, cv2.CV_32F, kernel, kernel, borderType=cv2.BORDER_REFLECT)[valid, valid]

    c1, c2 = (_SSIM_K1 * 255) ** 2, (_SSIM_K2 * 255) ** 2
    total, count = 0.0, 0
    for channel in range(original.shape[2]):
        # Float32 around the channel's mean: centring keeps the squares small, so E[a²] - E[a]² keeps the
        # variance of smooth regions that float32 on the raw 0-255 scale would lose to cancellation.
        a = original[..., channel].astype(np.float32)
        centre = float(a.mean())
        a -= centre
        b = other[..., channel].astype(np.float32) - centre
        mu_a, mu_b = blur(a), blur(b)
        var_a = blur(a * a) - mu_a**2
        var_b = blur(b * b) - mu_b**2
        cov = blur(a * b) - mu_a * mu_b
        mu_a += centre
        mu_b += centre
        ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
        total += float(ssim_map.sum(dtype=np.float64))
        count += ssim_map.size
    return total / count


def flatness(original: np.ndarray) -> np.ndarray:
    """The texture (H, W) float32 of a uint8 RGB photo (H, W, 3) at every full-resolution pixel: the local luma
    standard deviation (``local_spread``, window :data:`FLAT_WINDOW`, smoothed by :data:`FLAT_SMOOTHING`) on the
    default working view, upsampled bilinearly. Low is flat; the scale is the [0, 1] luma's.

    Example:
        >>> float(flatness(np.full((32, 48, 3), 90, np.uint8)).max())
        0.0
    """
    with torch.no_grad():
        photo = torch.from_numpy(np.ascontiguousarray(original)).permute(2, 0, 1)[None].float().div_(255)
        height, width = original.shape[:2]
        scale = min(1.0, defaults.ATTACK_SIZE / min(height, width))
        if scale < 1.0:  # the working view, as the Cloaker makes it (antialiased: a shrunk photo does not alias)
            size = (max(1, round(height * scale)), max(1, round(width * scale)))
            photo = F.interpolate(photo, size=size, mode="bilinear", antialias=True, align_corners=False)
        texture = blur(local_spread(photo, FLAT_WINDOW, separable=True), FLAT_SMOOTHING)
        if scale < 1.0:
            texture = F.interpolate(texture, size=(height, width), mode="bilinear", align_corners=False)
        return texture[0, 0].numpy()


def flattest_box(original: np.ndarray, side: int, stride: int = 4) -> tuple[int, int]:
    """``(top, left)`` of the ``side`` x ``side`` square of the photo (H, W, 3) with the lowest mean
    :func:`flatness`, on a grid of ``stride`` pixels: the region where a pattern would show most (a sky, a wall).

    Example:
        >>> photo = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
        >>> photo[40:, :24] = 128
        >>> flattest_box(photo, 16)
        (48, 0)
    """
    height, width = original.shape[:2]
    if not 0 < side <= min(height, width):
        raise ValueError(f"a {side}-pixel box does not fit a {height}x{width} photo")
    texture = torch.from_numpy(flatness(original))[None, None]
    means = F.avg_pool2d(texture, side, stride=stride)[0, 0]  # (rows, columns) of box means
    row, column = divmod(int(means.argmin()), means.shape[1])
    return row * stride, column * stride


def flattest_pixels(original: np.ndarray, share: float = FLAT_SHARE) -> np.ndarray:
    """Boolean (H, W): exactly ``round(share * H * W)`` (at least 1) pixels of the photo (H, W, 3) with the lowest
    :func:`flatness` (ties broken arbitrarily, so the share is exact).

    Example:
        >>> int(flattest_pixels(np.zeros((8, 8, 3), np.uint8)).sum())
        16
    """
    texture = flatness(original).ravel()
    count = min(texture.size, max(1, round(share * texture.size)))
    mask = np.zeros(texture.size, bool)
    mask[np.argpartition(texture, count - 1)[:count]] = True
    return mask.reshape(original.shape[:2])


def flat_quarter_rms(original: np.ndarray, other: np.ndarray, mask: np.ndarray | None = None) -> float:
    """The RMS change (0–255 scale, over the three channels) of ``other`` against ``original`` (H, W, 3) on the
    flattest quarter of the original's pixels (:func:`flattest_pixels`, or the boolean (H, W) ``mask`` given).

    Example:
        >>> photo = np.full((16, 16, 3), 100, np.uint8)
        >>> flat_quarter_rms(photo, photo + 2)
        2.0
    """
    _check_pair(original, other)
    mask = flattest_pixels(original) if mask is None else mask
    change = original[mask].astype(np.int32) - other[mask].astype(np.int32)  # (pixels, 3)
    return float(np.sqrt(np.mean(change * change, dtype=np.float64)))


def photo_quality(original: np.ndarray, other: np.ndarray) -> dict[str, float]:
    """One cloak's figures against its original (both (H, W, 3) uint8): ``psnr`` (dB, capped at :data:`PSNR_CAP`),
    ``ssim``, ``linf`` (0–255) and ``flat_rms`` (:func:`flat_quarter_rms`).

    Example:
        >>> photo_quality(photo, cloak)   # {"psnr": 38.1, "ssim": 0.97, "linf": 5.0, "flat_rms": 1.2}
    """
    return {"psnr": min(psnr(original, other), PSNR_CAP), "ssim": ssim(original, other),
            "linf": float(linf(original, other)), "flat_rms": flat_quarter_rms(original, other)}
