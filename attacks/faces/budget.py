"""The face cloak's texture-shaped budget and its translation-invariant gradient smoothing.

A flat L∞ budget puts as much perturbation on smooth skin (where people see marks: Fawkes issues #118, #139) as on
hair, eyebrows, eyes and edges (where the same energy is masked by the texture, and where recognisers look).
:func:`texture_map` turns the clean working view into per-pixel factors of eps: the local standard deviation of the
grey levels over a small window, relative to a quantile of the region's, clamped to ``[texture_floor, 1]``. The loop
bounds each pixel by ``eps · factor`` and steps by ``alpha · factor`` (``attacks/loop.run_attack``'s ``eps_map``);
the composition resizes the factors with the delta, so the bound holds at full resolution too.

:func:`smooth_gradient` is TI (Dong et al., "Evading Defenses to Transferable Adversarial Examples by
Translation-Invariant Attacks", CVPR 2019): an identity in the forward pass whose backward pass blurs the gradient
with a Gaussian, so the loop follows low-frequency directions that transfer across architectures and survive codecs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from comcloak.attacks.faces.settings import FaceSettings

GREY = (0.299, 0.587, 0.114)  # ITU-R BT.601 luma weights: texture is measured on brightness


def texture_map(view: torch.Tensor, settings: FaceSettings) -> torch.Tensor | None:
    """Per-pixel factors of eps (N, 1, S, S) in ``[texture_floor, 1]`` for clean views (N, 3, S, S) in [0, 1];
    None when ``settings.texture_floor`` is 1 (a flat budget: the loop's scalar eps, unchanged).

    Example:
        >>> factors = texture_map(x0, FaceSettings(texture_floor=0.4))  # 0.4 on flat skin, 1 on hair and edges
    """
    if settings.texture_floor >= 1.0:
        return None
    grey = (view * torch.tensor(GREY, dtype=view.dtype, device=view.device)[None, :, None, None]).sum(1, True)
    window = settings.texture_window
    padded = F.pad(grey, (window // 2, (window - 1) // 2, window // 2, (window - 1) // 2), mode="replicate")
    mean = F.avg_pool2d(padded, window, stride=1)
    square = F.avg_pool2d(padded * padded, window, stride=1)
    spread = (square - mean * mean).clamp_min(0.0).sqrt()
    reference = torch.quantile(spread.flatten(1), settings.texture_quantile, dim=1).clamp_min(1e-6)
    return (spread / reference[:, None, None, None]).clamp(settings.texture_floor, 1.0)


def gaussian_kernel(sigma: float, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A normalised 1-D Gaussian of ``sigma`` pixels, ``2 * ceil(3 sigma) + 1`` taps."""
    radius = max(int(math.ceil(3 * sigma)), 1)
    taps = torch.arange(-radius, radius + 1, dtype=dtype)
    kernel = torch.exp(-0.5 * (taps / sigma) ** 2)
    return kernel / kernel.sum()


def blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """``images`` (B, C, H, W) blurred by a separable Gaussian (replicated borders), same shape."""
    kernel = gaussian_kernel(sigma, images.dtype).to(images.device)
    radius = kernel.numel() // 2
    channels = images.shape[1]
    rows = kernel.view(1, 1, -1, 1).expand(channels, 1, -1, 1)
    columns = kernel.view(1, 1, 1, -1).expand(channels, 1, 1, -1)
    out = F.conv2d(F.pad(images, (0, 0, radius, radius), mode="replicate"), rows, groups=channels)
    return F.conv2d(F.pad(out, (radius, radius, 0, 0), mode="replicate"), columns, groups=channels)


class _SmoothGradient(torch.autograd.Function):
    """Identity forward; the backward pass blurs the incoming gradient (TI)."""

    @staticmethod
    def forward(ctx, images: torch.Tensor, sigma: float) -> torch.Tensor:  # noqa: ANN001 - autograd's context
        ctx.sigma = sigma
        return images.view_as(images)

    @staticmethod
    def backward(ctx, gradient: torch.Tensor) -> tuple[torch.Tensor, None]:  # noqa: ANN001
        return blur(gradient, ctx.sigma), None


def smooth_gradient(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """``images`` unchanged, with the gradient flowing back through it blurred by a Gaussian of ``sigma`` pixels
    (0: nothing done). (B, C, H, W) -> the same.

    Example:
        >>> seen = smooth_gradient(views, 2.0)  # then the recogniser: its input gradient reaches x0 blurred
    """
    return _SmoothGradient.apply(images, sigma) if sigma > 0 else images
