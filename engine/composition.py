"""The full-resolution composition of a classifier cloak: the working view's perturbation upsampled onto the photo,
rounded and clipped to uint8, each pixel held to the bound the attack ran under (docs/DESIGN.md §2).

Under the uniform budget the working-view perturbation is already within the bound it was held to (eps, or a growing
budget's smaller one) and upsampling it keeps it there, so the composition only rounds: the original is exact on the
0-255 grid, so ``|change| <= round(eps * 255)``. Under a shaped budget (``texture``, ``capped``) each pixel is
clipped to ``eps · used · factor`` with the map computed at full resolution
(:func:`comcloak.attacks.budget.full_resolution_budget`) and ``used`` the scale of eps the photo's attack reached
(:func:`comcloak.attacks.budget.budget_used`; 1 without a growing budget), so the budget holds per output pixel.
"""

from __future__ import annotations

import numpy as np
import torch

from comcloak import kernels
from comcloak.attacks.budget import full_resolution_budget
from comcloak.attacks.config import UNIFORM_BUDGET, AttackConfig
from comcloak.codecs.tensors import to_tensor


def compose_photo(photo: np.ndarray, delta: torch.Tensor, config: AttackConfig, device: torch.device,
                  original: np.ndarray | None = None, used: float = 1.0) -> np.ndarray:
    """``photo`` (H, W, 3) uint8 plus the working-view perturbation ``delta`` (1, 3, h, w), upsampled, rounded and
    clipped to uint8 (``comcloak.kernels.compose``: the CUDA kernel on a GPU when built, its torch reference
    otherwise); under a shaped budget each pixel's change is at most ``eps · used`` times the full-resolution map
    of ``original`` (default ``photo``).

    Example:
        >>> cloaked = compose_photo(photo, result.images - view, config, torch.device("cpu"))   # (H, W, 3) uint8
    """
    full = torch.from_numpy(np.ascontiguousarray(photo)).to(device)[None]
    bound = None
    if config.budget != UNIFORM_BUDGET:  # the working view of delta: the photo's attack view (attack_shape)
        source = to_tensor((photo if original is None else original)[None], device)
        eps = config.eps * used if used != 1.0 else config.eps  # 1.0: the bound of before the growing budget
        bound = eps * full_resolution_budget(source, config)
    return kernels.compose(full, delta.to(device), bound)[0].cpu().numpy()
