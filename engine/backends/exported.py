"""What the backends that run the exported step graph share (ONNX Runtime, TensorRT): its I/O schema, static
buffers per batch bucket, staging a batch into them, the ping-pong between steps and reading out the final iterate.

The graph computes one step ``(x, x0, m, w, eps, alpha, mu, budget) -> (x_next, m_next, logits, loss)``
(:func:`comcloak.export.onnx_export.step_tensor_shapes`); ``budget`` holds each pixel's factor of eps and alpha, staged
once per batch: ones under the uniform budget, :func:`comcloak.attacks.budget.texture_budget` of the clean views under
a shaped ``--budget`` (the torch loop's map); a robust graph also takes one step's random draws (``pre_h, pre_w, mix,
post_h, post_w``, then ``blocks, blocks_inverse`` when draws move blocks), which the runner samples on the host before
each step with the same :class:`comcloak.attacks.eot.DrawSampler` the torch backend uses, so both backends draw the
same. Under a growing budget (``eps_start``) the runner writes each step's ``eps_t`` into the ``eps`` input before it
(:meth:`ExportedStepRunner.write_budget`): the graph uses ``eps`` for the bounds only.

A runner keeps, per batch size, static buffers for every tensor and two of the carried ones: step ``k`` reads
``x``/``m`` from pair ``a`` and writes ``x_next``/``m_next`` into pair ``b`` when ``k`` is even, the other way round
when odd (:func:`ping_pong`), so no data moves between steps. A subclass says how to bind a buffer set and how to run
the steps on it.
"""

from __future__ import annotations

import logging
import os
from abc import abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from comcloak.attacks import AttackConfig
from comcloak.attacks.budget import budget_at, texture_budget
from comcloak.attacks.eot import DrawSampler
from comcloak.attacks.loss import goal_weights
from comcloak.attacks.stopping import AttackResult, StopTracker, image_margins
from comcloak.export.onnx_export import (
    CARRIED,
    INPUT_NAMES,
    LOGITS_PER_DRAW,
    SCALARS,
    StepLayout,
    read_export_metadata,
    step_tensor_shapes,
)

from .base import AttackRunner, batch_bucket
from .registry import BackendUnavailableError

logger = logging.getLogger(__name__)

PAIRS = ("a", "b")
PAIR_BUFFERS = frozenset(f"{carried}_{pair}" for carried in CARRIED.values() for pair in PAIRS)  # x_a, x_b, m_a, m_b


def ping_pong(step: int) -> dict[str, str]:
    """Which buffer each carried input and output of step ``step`` (0-based) uses: ``{"x": "x_a", "x_next": "x_b",
    ...}`` on even steps, the other way round on odd ones."""
    source, target = PAIRS if step % 2 == 0 else PAIRS[::-1]
    binding = {}
    for output, carried_input in CARRIED.items():
        binding[carried_input] = f"{carried_input}_{source}"
        binding[output] = f"{carried_input}_{target}"
    return binding


def final_iterate_name(steps: int) -> str:
    """The buffer holding ``x`` after ``steps`` steps (step ``steps - 1`` wrote it)."""
    return ping_pong(steps - 1)["x_next"]


@dataclass
class StepBuffers:
    """Static buffers for one batch size (``tensors``: every graph tensor but the carried ones, plus ``x_a``, ``x_b``,
    ``m_a``, ``m_b``) and whatever the runner bound to them (ONNX Runtime bindings, a TensorRT context and graph)."""

    batch: int
    tensors: dict[str, torch.Tensor]
    bound: dict[str, Any] = field(default_factory=dict)
    sampler: DrawSampler | None = None  # robust graphs: the staged batch's draws
    rows: int = 0  # images staged
    goal: torch.Tensor | None = None  # (rows, M) int64: each surrogate's goal, for per-photo stopping's margins


class ExportedStepRunner(AttackRunner):
    """Base of the runners of the exported step graph (:mod:`module docstring <comcloak.engine.backends.exported>`).

    Args:
        onnx: the step graph's path, or a loader returning it (called at activation, so exporting is lazy).
        config: the attack; its eps, alpha, momentum, steps and targeted are fed to the graph.
        device: where the buffers live.
        max_batch: the largest batch one buffer set serves (larger calls are split); None: any.
        bucketed: round batch sizes up to powers of two (buffers and captured graphs are reused).
    """

    def __init__(
        self,
        onnx: str | os.PathLike | Callable[[], Path],
        config: AttackConfig,
        device: str | torch.device,
        max_batch: int | None = None,
        bucketed: bool = False,
    ) -> None:
        super().__init__(config)
        self.onnx = onnx
        self.device = torch.device(device)
        self.max_batch = max_batch
        self.bucketed = bucketed
        self.metadata: dict[str, str] = {}
        self.layout = StepLayout()
        self.num_classes = 0
        self.shape = (0, 0)
        self._buffers: dict[int, StepBuffers] = {}

    # ------------------------------------------------------------------------------------------ activation

    def graph_path(self) -> Path:
        """The step graph (exported now if ``onnx`` is a loader), with its metadata read."""
        path = Path(self.onnx() if callable(self.onnx) else self.onnx)
        if not path.is_file():
            raise BackendUnavailableError(f"{self.name}: no step graph at {path}")
        self.metadata = read_export_metadata(path)
        try:
            self.num_classes = int(self.metadata["num_classes"])
            self.shape = (int(self.metadata["height"]), int(self.metadata["width"]))
            self.layout = StepLayout.from_metadata(self.metadata)
        except (KeyError, ValueError):
            raise BackendUnavailableError(f"{self.name}: {path} is not a comcloak step graph (no metadata)") from None
        if self.config.stop_after and self.layout.draws and self.metadata.get(LOGITS_PER_DRAW) != "1":
            raise BackendUnavailableError(f"{self.name}: {path} averages its logits over the draws (graph format 5 or "
                                          "older); per-photo stopping needs each draw's: export it again")
        if "budget" not in self.metadata.get("inputs", "").split(","):
            raise BackendUnavailableError(f"{self.name}: {path} was exported by an older comcloak (no per-pixel budget "
                                          "input, graph format 5); export it again")
        wanted = (self.config.eot.draws, self.config.loss)
        if (self.layout.draws, self.layout.loss) != wanted or self.layout.coded_draws != (
                self.config.eot.coded_draws if self.layout.draws else 0):
            raise BackendUnavailableError(
                f"{self.name}: {path} was exported for {self.layout.draws} draws and the {self.layout.loss} loss; the "
                f"attack needs {wanted[0]} draws and the {wanted[1]} loss")
        if self.layout.step_rule != self.config.step_rule:
            raise BackendUnavailableError(f"{self.name}: {path} steps by the {self.layout.step_rule} rule; the attack "
                                          f"needs {self.config.step_rule}")
        if self.layout.blocks != (self.layout.draws > 0 and self.config.eot.block_transforms):
            eot = self.config.eot
            raise BackendUnavailableError(
                f"{self.name}: {path} was exported {'with' if self.layout.blocks else 'without'} block-transform "
                f"draws; the attack's bsr_rate and sia_rate are {eot.bsr_rate} and {eot.sia_rate}")
        return path

    def deactivate_impl(self) -> None:
        self._buffers.clear()

    # ---------------------------------------------------------------------------------------------- buffers

    def new_tensor(self, shape: tuple[int, ...]) -> torch.Tensor:
        """One static float32 buffer on the runner's device."""
        return torch.zeros(shape, dtype=torch.float32, device=self.device)

    def buffers_for(self, batch: int) -> StepBuffers:
        """The buffer set for ``batch`` images (its bucket), allocated and bound on first use."""
        size = batch_bucket(batch) if self.bucketed else batch
        if self.max_batch is not None:
            size = min(size, self.max_batch)
        buffers = self._buffers.get(size)
        if buffers is None:
            shapes = step_tensor_shapes(size, *self.shape, self.num_classes, self.layout)
            tensors = {name: self.new_tensor(shape) for name, shape in shapes.items()
                       if name not in CARRIED and name not in CARRIED.values()}
            for buffer in sorted(PAIR_BUFFERS):
                tensors[buffer] = self.new_tensor(shapes[buffer.rsplit("_", 1)[0]])
            buffers = StepBuffers(size, tensors)
            self.bind(buffers)
            self._buffers[size] = buffers
        return buffers

    def stage(self, buffers: StepBuffers, x0: torch.Tensor, goal: torch.Tensor) -> None:
        """Copy a batch into the static inputs: images and goal weights (zero padding past the batch), ``x = x0``,
        ``m = 0``, the scalars and the per-pixel budget (ones past the batch and under the uniform budget)."""
        t, batch = buffers.tensors, x0.shape[0]
        t["x0"].zero_()
        t["w"].zero_()
        t["x0"][:batch].copy_(x0)
        goal = goal.to(self.device)
        goal = goal[:, None].expand(-1, self.layout.surrogates) if goal.dim() == 1 else goal
        if goal.shape[1] != self.layout.surrogates:
            raise ValueError(f"this step graph attacks {self.layout.surrogates} surrogates, got goals for "
                             f"{goal.shape[1]}")
        t["w"][:batch].copy_(goal_weights(goal, self.num_classes, self.config.targeted))
        buffers.goal, buffers.rows = goal, batch
        t["x_a"].copy_(t["x0"])
        t["m_a"].zero_()
        # The loop descends its loss: alpha is applied as given (the graph's update is x - alpha * sign(m)).
        for name, value in (("eps", self.config.eps), ("alpha", self.config.alpha), ("mu", self.config.momentum)):
            t[name].fill_(value)
        t["budget"].fill_(1.0)
        factors = texture_budget(t["x0"][:batch], self.config)
        if factors is not None:
            t["budget"][:batch].copy_(factors)
        if self.layout.draws:
            for name in self.layout.input_names[len(INPUT_NAMES):]:  # padding rows: all-zero draws, a zero view
                t[name].zero_()  # and zero gradient (a zero BSR map gathers pixel 0 of that zero view)
            buffers.sampler = DrawSampler.for_images(self.config.eot, self.layout.stand_ins, x0.to(self.device),
                                                     self.config.seed)

    def prepare_step(self, buffers: StepBuffers) -> None:
        """Write the next step's draws into the draw inputs (robust graphs; nothing otherwise)."""
        if buffers.sampler is None:
            return
        draw = buffers.sampler.sample(buffers.rows, *self.shape)
        for name, value in draw.tensors().items():
            buffers.tensors[name][: buffers.rows].copy_(value)

    def write_budget(self, buffers: StepBuffers, step: int) -> None:
        """Write step ``step``'s bound ``eps_t`` into the graph's ``eps`` input under a growing budget (the torch
        loop's float32 ``eps · budget_at``, :func:`comcloak.attacks.budget.budget_at`); nothing otherwise (``eps``
        as staged). A fill on the device: a runner capturing its steps in a CUDA graph captures it with them."""
        if self.config.ramped:
            buffers.tensors["eps"].fill_(self.config.eps * budget_at(self.config, step))

    def binding_for_step(self, buffers: StepBuffers, step: int) -> dict[str, torch.Tensor]:
        """Every graph input and output of step ``step``, by name, as the buffer it reads or writes."""
        names = ping_pong(step)
        t = buffers.tensors
        fixed = {name: tensor for name, tensor in t.items() if name not in PAIR_BUFFERS}
        return {**fixed, **{name: t[buffer] for name, buffer in names.items()}}

    # ------------------------------------------------------------------------------------------------ the loop

    def infer_impl(self, x0: torch.Tensor, goal: torch.Tensor) -> AttackResult:
        if (x0.shape[2], x0.shape[3]) != self.shape:
            raise ValueError(f"this step graph is for {self.shape[0]}x{self.shape[1]} images, got "
                             f"{x0.shape[2]}x{x0.shape[3]}")
        if self.max_batch is not None and x0.shape[0] > self.max_batch:
            parts = [self.infer_impl(x0[i : i + self.max_batch], goal[i : i + self.max_batch])
                     for i in range(0, x0.shape[0], self.max_batch)]
            return AttackResult(torch.cat([part.images for part in parts]),
                                torch.cat([part.steps_used for part in parts]))
        buffers = self.buffers_for(x0.shape[0])
        self.stage(buffers, x0, goal)
        if self.config.stop_after:
            return self.run_stopping(buffers, x0)
        self.run_steps(buffers)
        final = buffers.tensors[final_iterate_name(self.config.steps)]
        return AttackResult.full(final[: x0.shape[0]].clone().to(x0.device), self.config.steps)

    def run_stopping(self, buffers: StepBuffers, x0: torch.Tensor) -> AttackResult:
        """The loop with per-photo stopping (:mod:`comcloak.attacks.stopping`): after each step, every active
        image's margins from the graph's per-draw ``logits`` (at the step's input iterate, as the torch loop checks
        them); those that stop keep that input ``x``, and the next steps run on a buffer set of the others only
        (:meth:`compact`)."""
        output = x0.to(self.device, torch.float32).clone()
        tracker = StopTracker(x0.shape[0], self.config.stop_after, self.config.stop_margin, self.device)
        for step in range(self.config.steps):
            self.run_step(buffers, step)
            rows, names = buffers.rows, ping_pong(step)
            logits = buffers.tensors["logits"][:rows]
            per_view = logits if logits.dim() == 4 else logits[:, :, None]  # (rows, M, D or 1, K)
            active = tracker.active
            stopping = tracker.check(image_margins(per_view, buffers.goal, self.config.targeted), step)
            if stopping.any():
                output[active[stopping]] = buffers.tensors[names["x"]][:rows][stopping]
                kept = torch.nonzero(~stopping).flatten()
                if not kept.numel():
                    break
                buffers = self.compact(buffers, kept, step)
        else:
            output[tracker.active] = buffers.tensors[final_iterate_name(self.config.steps)][: buffers.rows]
        return AttackResult(output.to(x0.device), tracker.finish(self.config.steps).cpu())

    def compact(self, buffers: StepBuffers, kept: torch.Tensor, step: int) -> StepBuffers:
        """The buffer set of the rows ``kept`` (positions among ``buffers``' rows) after step ``step``: their clean
        images, goals, budgets, next iterate and momentum (in the buffers step ``step + 1`` reads), the scalars, and
        the sampler of their own draws (:meth:`DrawSampler.subset`). Padding rows are as :meth:`stage` leaves them."""
        carried = ping_pong(step)
        moved = ("x0", "w", "budget", carried["x_next"], carried["m_next"])
        rows = {name: buffers.tensors[name][: buffers.rows][kept].clone() for name in moved}
        scalars = {name: buffers.tensors[name].clone() for name in SCALARS}
        goal = buffers.goal[kept]
        sampler = buffers.sampler.subset(kept.tolist()) if buffers.sampler is not None else None
        smaller = self.buffers_for(kept.numel())  # may be the same set (one bucket): everything was copied out
        for name, tensor in smaller.tensors.items():
            tensor.fill_(1.0 if name == "budget" else 0.0)
        for name, value in {**rows, **scalars}.items():
            smaller.tensors[name][: value.shape[0]].copy_(value)
        smaller.goal, smaller.sampler, smaller.rows = goal, sampler, kept.numel()
        return smaller

    @abstractmethod
    def bind(self, buffers: StepBuffers) -> None:
        """Bind a freshly allocated buffer set (store what is bound in ``buffers.bound``)."""

    def run_step(self, buffers: StepBuffers, step: int) -> None:
        """Run step ``step`` alone (its draws prepared first), its outputs readable on return: what per-photo
        stopping needs (a runner that captures the whole loop in one graph cannot, and refuses stopping)."""
        raise NotImplementedError(f"{self.name} runs the whole loop at once")

    @abstractmethod
    def run_steps(self, buffers: StepBuffers) -> None:
        """Run all ``config.steps`` steps on a staged buffer set, calling :meth:`prepare_step` before each; on return
        the final iterate is readable."""

