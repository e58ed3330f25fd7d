"""How an attacker's pipeline looks at a photo (docs/DESIGN.md §3): the views protection is judged in.

- ``crop``: shorter side resized to ``size / 0.875`` (256 for 224), centre crop ``size`` × ``size`` — the
  torchvision/timm ImageNet convention, and the default judge;
- ``resize``: the whole photo resized to ``size`` × ``size``;
- ``native``: ``crop`` at each classifier's own resolution (``input_size``: 224, 240, 260 for EfficientNet-Lite0,
  1, 2).

All resizes are antialiased bilinear, as torchvision's ``Resize`` on tensors with ``antialias=True``. The cloaker's
own view (the whole photo with its shorter side at the attack size) is a lab view, not one of these.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported when a view is made, so the CLI can list the views without it
    import numpy as np
    import torch

ATTACKER_VIEWS = ("crop", "resize", "native")
DEFAULT_VIEW = "crop"
VIEW_SIZE = 224
CROP_RATIO = 0.875  # 224 / 256: the ImageNet evaluation crop
TOP_K = 5  # hide@5: the clean label must leave the top 5


def _resize(image: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    import torch.nn.functional as F

    return F.interpolate(image, size=size, mode="bilinear", antialias=True, align_corners=False).clamp(0, 1)


def attacker_view(photo: np.ndarray, view: str = DEFAULT_VIEW, classifier: Any = None,
                  device: torch.device | str = "cpu") -> torch.Tensor:
    """The ``view`` of a uint8 (H, W, 3) photo: float (1, 3, S, S) in [0, 1] (S = 224, or the classifier's own
    ``input_size`` for ``native``)."""
    if view not in ATTACKER_VIEWS:
        raise ValueError(f"unknown attacker view {view!r}; available: {', '.join(ATTACKER_VIEWS)}")
    from comcloak.codecs.tensors import to_tensor

    size = int(getattr(classifier, "input_size", VIEW_SIZE)) if view == "native" else VIEW_SIZE
    image = to_tensor(photo[None], device)
    if view == "resize":
        return _resize(image, (size, size))
    height, width = image.shape[-2:]
    shorter = round(size / CROP_RATIO)
    scale = shorter / min(height, width)
    resized = (max(size, round(height * scale)), max(size, round(width * scale)))
    image = _resize(image, resized)
    top, left = (resized[0] - size) // 2, (resized[1] - size) // 2
    return image[..., top : top + size, left : left + size]


def view_top_labels(classifier: Any, photo: np.ndarray, view: str = DEFAULT_VIEW, device: torch.device | str = "cpu",
                    k: int = TOP_K) -> list[int]:
    """The classifier's top-``k`` labels for a uint8 photo seen through ``view``, best first (no gradient)."""
    import torch

    with torch.no_grad():
        logits = classifier(attacker_view(photo, view, classifier, device))
    return logits.topk(k, dim=1).indices[0].tolist()
