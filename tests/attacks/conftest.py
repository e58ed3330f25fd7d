"""Fixtures shared by the attack tests."""

from __future__ import annotations

import pytest
import torch

from comcloak.models import create_model


@pytest.fixture(scope="module")
def classifier() -> torch.nn.Module:
    """The tiny test classifier, seeded (the same weights in every module) and frozen."""
    torch.manual_seed(0)
    return create_model("tiny_classifier").eval().requires_grad_(False)
