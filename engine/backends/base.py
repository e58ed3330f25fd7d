"""The runner interface every backend implements (Polygraphy style: ``activate`` / ``infer`` / ``deactivate``)."""

from __future__ import annotations

import logging
import os
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from comcloak.attacks import AttackConfig, AttackConfigError
from comcloak.attacks.stopping import AttackResult

logger = logging.getLogger(__name__)


def batch_bucket(batch: int) -> int:
    """The power of two at or above ``batch``: the batch size static buffers and CUDA graphs are built for."""
    return 1 << max(0, (batch - 1).bit_length())


@dataclass
class RunnerContext:
    """Everything a runner may be built from (:meth:`AttackRunner.from_context`); each runner takes what it needs.

    Attributes:
        config: the attack.
        device: where the attack runs.
        classifier, through: the modules (the torch backends run them; the exported ones run ``step_graph``).
        precision: ``fp32``, ``bf16`` or ``fp16`` (registry.PRECISIONS; each backend accepts its own subset).
        height, width: the attack-view size (exported backends: their graph is fixed to it).
        step_graph: returns the exported step graph for ``(height, width)`` (exported backends; called at activation).
        cache_dir: where TensorRT keeps engines.
        threads: CPU threads (ONNX Runtime).
        max_batch: the largest batch one replay or engine profile serves (None: the runner's default).
        channels_last: channels_last images and weights (None: the runner's default).
    """

    config: AttackConfig
    device: torch.device
    classifier: nn.Module | None = None
    through: nn.Module | None = None
    precision: str = "fp32"
    height: int = 0
    width: int = 0
    step_graph: Callable[[int, int], Path] | None = None
    cache_dir: str | os.PathLike | None = None
    threads: int | None = None
    max_batch: int | None = None
    channels_last: bool | None = None

    def options(self, **names: str) -> dict:
        """The optional settings that are set, as keyword arguments under the runner's own names."""
        return {keyword: getattr(self, name) for keyword, name in names.items() if getattr(self, name) is not None}


class AttackRunner(ABC):
    """Runs the whole attack loop of docs/DESIGN.md §2 on one batch: ``infer(x0, goal) -> x_adv``.

    A runner is built cheaply; ``activate`` acquires what it needs (sessions, engines, device buffers) and
    ``deactivate`` releases it. It is also a context manager. ``infer`` takes clean images, float NCHW in [0, 1],
    and ``goal`` labels ``(N,)`` or ``(N, M)`` int64 (the clean labels when untargeted, the targets when targeted; one
    column per surrogate of an ensemble) and returns
    the adversarial images on the same device as ``x0``.
    """

    name: str = "runner"

    @classmethod
    def unavailable_reason(cls, device: torch.device, through: nn.Module | None, precision: str) -> str | None:
        """Why this runner cannot attack through ``through`` on ``device`` here (a missing package, no GPU, a
        stand-in it cannot run), or None when it can. The registry checks device type and precision before."""
        return None

    @classmethod
    @abstractmethod
    def from_context(cls, context: RunnerContext) -> AttackRunner:
        """Build a runner (not yet activated) from ``context``."""

    def __init__(self, config: AttackConfig) -> None:
        self.config = config
        self._active = False
        self.refuse_stopping()

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
        """The adversarial images of ``x0`` (N, 3, H, W): :meth:`infer_result`'s images."""
        return self.infer_result(x0, goal).images

    def infer_result(self, x0: torch.Tensor, goal: torch.Tensor) -> AttackResult:
        """The adversarial images and the steps each image used (N,) int64: ``config.steps`` for all, unless the
        runner stops photos early (``config.stop_after``, :mod:`comcloak.attacks.stopping`).

        Example:
            >>> with TorchRunner(classifier, None, attack_config("mim", 5 / 255, stop_after=2)) as runner:
            ...     result = runner.infer_result(x0, goal)     # result.images, result.steps_used
        """
        if not self._active:
            raise RuntimeError(f"{self.name} runner used before activate()")
        if x0.dim() != 4 or x0.shape[1] != 3:
            raise ValueError(f"x0 must be an RGB batch shaped (N, 3, H, W), got {tuple(x0.shape)}")
        if goal.dim() not in (1, 2) or goal.shape[0] != x0.shape[0]:
            raise ValueError(f"goal must be shaped ({x0.shape[0]},) or ({x0.shape[0]}, surrogates), got "
                             f"{tuple(goal.shape)}")
        if x0.shape[0] == 0:
            return AttackResult.full(x0.clone(), self.config.steps)
        result = self.infer_impl(x0, goal)
        return result if isinstance(result, AttackResult) else AttackResult.full(result, self.config.steps)

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
    def infer_impl(self, x0: torch.Tensor, goal: torch.Tensor) -> torch.Tensor | AttackResult:
        """The attack on a validated, non-empty batch: the images, or an :class:`AttackResult` when the runner
        reports steps per image (a runner that stops photos early must)."""

    stops_early = False  # whether the runner implements per-photo stopping (config.stop_after > 0)

    def refuse_stopping(self) -> None:
        """Refuse a configuration that stops photos early, in one line, when this runner cannot (call it from
        ``__init__``: the error comes at construction)."""
        if self.config.stop_after and not self.stops_early:
            raise AttackConfigError(f"backend {self.name!r} cannot stop photos early (stop_after "
                                    f"{self.config.stop_after}): its loop is one captured graph; use torch or "
                                    "onnxruntime, or stop_after 0")
