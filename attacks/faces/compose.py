"""Face regions of a photo and the composition of their cloaks back into it (full resolution, feathered).

A region is an axis-aligned square of the photo, so its working view is a plain resize and composing back is a
resize of the working view's perturbation, weighted by a feathered mask: nothing outside the regions changes, and
the L∞ budget holds at full resolution (a bilinear resize and a convex mix of deltas never exceed their largest).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from comcloak.attacks.faces.settings import FaceSettings
from comcloak.attacks.metrics import psnr

PIXEL_LEVELS = 255.0
PSNR_SHRINK_TRIES = 4  # rounding to 8 bits moves the PSNR a little after scaling: retry a few times


@dataclass(frozen=True)
class Region:
    """A square of the photo, in pixels: rows ``top:top + side``, columns ``left:left + side``."""

    top: int
    left: int
    side: int

    def slices(self) -> tuple[slice, slice]:
        return slice(self.top, self.top + self.side), slice(self.left, self.left + self.side)


def face_region(box: tuple[float, float, float, float], height: int, width: int, padding: float) -> Region:
    """The padded square around a face ``box`` (x, y, w, h), moved (and if need be shrunk) into the photo."""
    x, y, w, h = box
    side = min(int(round(max(w, h) * (1 + 2 * padding))), height, width)
    side = max(side, 1)
    top = int(round(y + h / 2 - side / 2))
    left = int(round(x + w / 2 - side / 2))
    return Region(min(max(top, 0), height - side), min(max(left, 0), width - side), side)


def feather_mask(region: Region, height: int, width: int, feather: float) -> torch.Tensor:
    """(side, side) weights in [0, 1]: 1 inside, a linear ramp to 0 over ``feather * side`` pixels towards each
    border of the region that is not the photo's border."""
    ramp_width = max(feather * region.side, 1e-6)
    centres = torch.arange(region.side, dtype=torch.float32) + 0.5

    def axis(start: int, limit: int) -> torch.Tensor:
        rising = centres / ramp_width if start > 0 else torch.ones_like(centres)
        falling = (region.side - centres) / ramp_width if start + region.side < limit else torch.ones_like(centres)
        return torch.minimum(rising, falling).clamp(0.0, 1.0)

    return axis(region.top, height)[:, None] * axis(region.left, width)[None, :]


def working_view(image: torch.Tensor, region: Region, size: int) -> torch.Tensor:
    """The region of ``image`` (1, 3, H, W) in [0, 1] resized to ``size`` x ``size`` (antialiased bilinear)."""
    rows, columns = region.slices()
    crop = image[:, :, rows, columns]
    return F.interpolate(crop, size=(size, size), mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)


class Composer:
    """Accumulates the faces' perturbations over a photo and composes the cloak.

    Overlapping regions mix their deltas by the masks' weights (a convex mix where the masks sum past 1), so the
    budget holds everywhere: each pixel's bound is the largest of its regions' per-pixel budgets (``budget``, factors
    of eps: 1 for a flat budget, the texture map resized with the delta otherwise; 0 outside every region).
    """

    def __init__(self, image: torch.Tensor, settings: FaceSettings) -> None:
        self.image = image  # (1, 3, H, W) in [0, 1]
        self.settings = settings
        self.delta = torch.zeros_like(image[0])
        self.weight = torch.zeros(image.shape[-2:], dtype=image.dtype)
        self.budget = torch.zeros(image.shape[-2:], dtype=image.dtype)

    def add(self, region: Region, delta: torch.Tensor, factors: torch.Tensor | None = None) -> None:
        """Add a working view's perturbation ``delta`` (1, 3, S, S) over ``region``, bounded by ``factors``
        (1, 1, S, S) of eps (None: eps everywhere)."""
        height, width = self.image.shape[-2:]
        full = self._resized(delta, region)[0]
        mask = feather_mask(region, height, width, self.settings.feather).to(full)
        rows, columns = region.slices()
        self.delta[:, rows, columns] += full * mask
        self.weight[rows, columns] += mask
        # the same (non-negative) interpolation as the delta's: |resized delta| <= resized eps * factors
        bound = torch.ones_like(mask) if factors is None else self._resized(factors.to(full), region)[0, 0]
        self.budget[rows, columns] = torch.maximum(self.budget[rows, columns], bound)

    @staticmethod
    def _resized(view: torch.Tensor, region: Region) -> torch.Tensor:
        """A working view's (1, C, S, S) tensor resized onto the region (1, C, side, side)."""
        return F.interpolate(view, size=(region.side, region.side), mode="bilinear",
                             antialias=region.side < view.shape[-1], align_corners=False)

    def compose(self, photo: np.ndarray, eps: float) -> np.ndarray:
        """The cloaked ``photo`` (uint8 (H, W, 3), the one ``image`` came from): the mixed deltas, within ``eps``
        times each pixel's budget factor of the photo at 8 bits, scaled down until the whole photo's PSNR is at
        least the floor."""
        delta = self.delta / self.weight.clamp_min(1.0)
        levels = torch.from_numpy(np.ascontiguousarray(photo)).permute(2, 0, 1).to(delta.dtype)
        budget = torch.floor(eps * PIXEL_LEVELS * self.budget + 1e-4)  # in levels: rounding may not add a level
        for _ in range(PSNR_SHRINK_TRIES):
            moved = torch.round(levels + delta * PIXEL_LEVELS).clamp(0, PIXEL_LEVELS)
            cloaked = torch.minimum(torch.maximum(moved, levels - budget), levels + budget)
            cloaked = cloaked.permute(1, 2, 0).to(torch.uint8).numpy()
            quality = psnr(photo, cloaked)
            if quality >= self.settings.min_psnr:
                break
            delta = delta * 10 ** ((quality - self.settings.min_psnr - 0.05) / 20)
        return cloaked
