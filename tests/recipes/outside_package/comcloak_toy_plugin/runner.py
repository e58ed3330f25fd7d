"""The backend's runner: comcloak's torch reference loop run in float64, imported only when the backend is used."""

from __future__ import annotations

import copy
import os
from pathlib import Path

import torch

from comcloak.attacks import run_attack
from comcloak.engine.backends import AttackRunner, RunnerContext

MARKER = "COMCLOAK_TOY_PLUGIN_MARKER"  # a file this runner appends a line to, so a test can see that it ran


class Float64Runner(AttackRunner):
    """Runs :func:`comcloak.attacks.run_attack` on float64 copies of the modules and images."""

    name = "toy-plugin-float64"

    def __init__(self, classifier: torch.nn.Module, through: torch.nn.Module | None, config) -> None:
        super().__init__(config)
        self.classifier = copy.deepcopy(classifier).double()
        self.through = copy.deepcopy(through).double() if through is not None else None

    @classmethod
    def from_context(cls, context: RunnerContext) -> Float64Runner:
        return cls(context.classifier, context.through, context.config)

    def infer_impl(self, x0: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        if os.environ.get(MARKER):
            with Path(os.environ[MARKER]).open("a") as marker:
                marker.write(f"{self.name} {tuple(x0.shape)}\n")
        return run_attack(self.classifier, x0.double(), goal, self.config, self.through).to(x0.dtype)
