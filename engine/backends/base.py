"""The runner interface every backend implements (Polygraphy style: ``activate`` / ``infer`` / ``deactivate``)."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod

import torch

from comcloak.attacks import AttackConfig
from comcloak.errors import UserError

logger = logging.getLogger(__name__)


def batch_bucket(batch: int) -> int:
    """The power of two at or above ``batch``: the batch size static buffers and CUDA graphs are built for."""
    return 1 << max(0, (batch - 1).bit_length())


class BackendUnavailableError(UserError, RuntimeError):
    """A backend was asked for but cannot run here (package missing, no GPU, stand-in not exportable)."""


class AttackRunner(ABC):
    """Runs the whole attack loop of DESIGN §2 on one batch: ``infer(x0, goal) -> x_adv``.

    A runner is built cheaply; ``activate`` acquires what it needs (sessions, engines, device buffers) and
    ``deactivate`` releases it. It is also a context manager. ``infer`` takes clean images, float NCHW in [0, 1],
    and ``goal`` labels ``(N,)`` int64 (the clean labels when untargeted, the targets when targeted) and returns
    the adversarial images on the same device as ``x0``.
    """

    name: str = "runner"

    def __init__(self, config: AttackConfig) -> None:
        self.config = config
        self._active = False

    @property
    def is_active(self) -> bool:
        return self._active

    def activate(self) -> None:
        if not self._active:
            self.activate_impl()
            self._active = True

    def deactivate(self) -> None:
        if self._active:
            self.deactivate_impl()
            self._active = False

    def infer(self, x0: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        if not self._active:
            raise RuntimeError(f"{self.name} runner used before activate()")
        if x0.dim() != 4 or x0.shape[1] != 3:
            raise ValueError(f"x0 must be an RGB batch shaped (N, 3, H, W), got {tuple(x0.shape)}")
        if goal.shape != (x0.shape[0],):
            raise ValueError(f"goal must be shaped ({x0.shape[0]},), got {tuple(goal.shape)}")
        if x0.shape[0] == 0:
            return x0.clone()
        return self.infer_impl(x0, goal)

    def __enter__(self) -> AttackRunner:
        self.activate()
        return self

    def __exit__(self, *exc: object) -> None:
        self.deactivate()

    def activate_impl(self) -> None:  # noqa: B027 - optional hook
        """Acquire resources (default: none)."""

    def deactivate_impl(self) -> None:  # noqa: B027 - optional hook
        """Release resources (default: none)."""

    @abstractmethod
    def infer_impl(self, x0: torch.Tensor, goal: torch.Tensor) -> torch.Tensor: ...
