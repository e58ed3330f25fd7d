"""The PyTorch reference backend: plain eager autograd (``comcloak.attacks.run_attack``)."""

from __future__ import annotations

import logging

import torch
from torch import nn

from comcloak.attacks import AttackConfig, run_attack

from .base import AttackRunner

logger = logging.getLogger(__name__)


class TorchRunner(AttackRunner):
    """Eager PyTorch with autograd, the whole batch at once: the reference every other backend is checked against."""

    name = "torch"

    def __init__(self, classifier: nn.Module, through: nn.Module | None, config: AttackConfig) -> None:
        super().__init__(config)
        self.classifier = classifier
        self.through = through

    def infer_impl(self, x0: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        return run_attack(self.classifier, x0, goal, self.config, self.through)


class PerImageTorchRunner(TorchRunner):
    """One image at a time in a Python loop, as the authors' code runs the attack: the benchmark's naive baseline."""

    name = "torch-per-image"

    def infer_impl(self, x0: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        return torch.cat([
            run_attack(self.classifier, x0[i : i + 1], goal[i : i + 1], self.config, self.through)
            for i in range(x0.shape[0])
        ])
