"""The face cloak's texture-shaped budget and its translation-invariant gradient smoothing.

A flat L∞ budget puts as much perturbation on smooth skin (where people see marks: Fawkes issues #118, #139) as on
hair, eyebrows, eyes and edges (where the same energy is masked by the texture, and where recognisers look).
:func:`texture_map` turns the clean working view into per-pixel factors of eps: the local standard deviation of the
grey levels over a small window (``comcloak.attacks.budget.local_spread``, shared with the classifier cloak),
relative to a quantile of the region's, clamped to ``[texture_floor, 1]``. The loop bounds each pixel by ``eps ·
factor`` and steps by ``alpha · factor`` (``attacks/loop.run_attack``'s ``eps_map``); the composition resizes the
factors with the delta, so the bound holds at full resolution too.

:func:`smooth_gradient` is TI (Dong et al., "Evading Defenses to Transferable Adversarial Examples by
Translation-Invariant Attacks", CVPR 2019): an identity in the forward pass whose backward pass blurs the gradient
with a Gaussian, so the loop follows low-frequency directions that transfer across architectures and survive codecs.
"""

from __future__ import annotations

import torch

from comcloak.attacks.budget import blur, local_spread
from comcloak.attacks.faces.settings import FaceSettings


def texture_map(view: torch.Tensor, settings: FaceSettings) -> torch.Tensor | None:
    """Per-pixel factors of eps (N, 1, S, S) in ``[texture_floor, 1]`` for clean views (N, 3, S, S) in [0, 1];
    None when ``settings.texture_floor`` is 1 (a flat budget: the loop's scalar eps, unchanged). The texture measure
    is the classifier cloak's (:func:`comcloak.attacks.budget.local_spread`), relative to a quantile of the region's.

    Example:
        >>> factors = texture_map(x0, FaceSettings(texture_floor=0.4))  # 0.4 on flat skin, 1 on hair and edges
    """
    if settings.texture_floor >= 1.0:
        return None
    spread = local_spread(view, settings.texture_window)
    reference = torch.quantile(spread.flatten(1), settings.texture_quantile, dim=1).clamp_min(1e-6)
    return (spread / reference[:, None, None, None]).clamp(settings.texture_floor, 1.0)


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
