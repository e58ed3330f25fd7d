"""The tiny models and the working-view size the exported-step tests share (tests/export/conftest.py's export)."""

from __future__ import annotations

import torch

import comcloak.models as M
from comcloak.attacks.through import ComModelThrough

HEIGHT, WIDTH = 40, 56  # a working view: not square, not multiples of 16


def tiny_surrogates(count: int = 2) -> list[torch.nn.Module]:
    """``count`` (1 or 2) different frozen tiny classifiers."""
    return [M.freeze(M.create_model(name)) for name in ("tiny_classifier", "tiny_classifier_b")[:count]]


def tiny_stand_in() -> torch.nn.Module:
    """A frozen tiny ComModel stand-in."""
    return M.freeze(ComModelThrough(M.create_model("comodel_tc_tiny")))
