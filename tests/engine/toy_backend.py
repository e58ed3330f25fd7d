"""A toy backend for the registry tests: the torch reference loop run in float64. It is the whole of what a new
backend needs — one runner class here and one ``register_backend`` line (in the test that uses it)."""

from __future__ import annotations

import copy

import torch

from comcloak.attacks import run_attack
from comcloak.engine.backends import AttackRunner, RunnerContext


class Float64Runner(AttackRunner):
    """Runs :func:`comcloak.attacks.run_attack` on float64 copies of the modules and images."""

    name = "toy-float64"

    def __init__(self, classifier: torch.nn.Module, through: torch.nn.Module | None, config) -> None:
        super().__init__(config)
        self.classifier = copy.deepcopy(classifier).double()
        self.through = copy.deepcopy(through).double() if through is not None else None

    @classmethod
    def from_context(cls, context: RunnerContext) -> Float64Runner:
        return cls(context.classifier, context.through, context.config)

    def infer_impl(self, x0: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        return run_attack(self.classifier, x0.double(), goal, self.config, self.through).to(x0.dtype)
