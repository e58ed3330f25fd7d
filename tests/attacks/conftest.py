"""Fixtures shared by the attack tests."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from comcloak.models import create_model


@pytest.fixture(scope="module")
def classifier() -> torch.nn.Module:
    """The tiny test classifier, seeded (the same weights in every module) and frozen."""
    torch.manual_seed(0)
    return create_model("tiny_classifier").eval().requires_grad_(False)


@pytest.fixture(scope="module")
def stop_images() -> torch.Tensor:
    """Four smooth 40x40 images, seeded: the per-photo stopping and growing-budget tests' batch."""
    generator = torch.Generator().manual_seed(1)
    smooth = F.interpolate(torch.rand(4, 3, 8, 8, generator=generator), size=(40, 40), mode="bilinear")
    return (smooth + 0.05 * torch.rand(4, 3, 40, 40, generator=generator)).clamp(0, 1)


@pytest.fixture(scope="module")
def stop_goals(classifier: torch.nn.Module, stop_images: torch.Tensor) -> torch.Tensor:
    """Untargeted goals for ``stop_images``: images 0 and 2 aim away from their least likely class (safe from the
    start: every other class is above it), 1 and 3 away from their clean top-1 (not safe until the attack succeeds)."""
    with torch.no_grad():
        logits = classifier(stop_images)
    return torch.where(torch.arange(len(stop_images)) % 2 == 0, logits.argmin(dim=1), logits.argmax(dim=1))
