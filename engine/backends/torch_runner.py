"""PyTorch backends: eager autograd (the reference), its per-image variant, and the CUDA-graphed loop.

``torch`` runs :func:`comcloak.attacks.run_attack` as it is. ``torch-cudagraph`` captures the whole K-step loop —
forward, input gradient, update — in one CUDA graph per (batch bucket, height, width), with static buffers, and
replays it: one launch per batch instead of thousands of kernel launches and their gaps. Both take a ``precision``
(``fp32``, ``bf16`` or ``fp16`` autocast of the classifier) and a ``channels_last`` option.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from dataclasses import dataclass

import torch
from torch import nn

from comcloak.attacks import AttackConfig
from comcloak.attacks.eot import DrawSampler
from comcloak.attacks.loop import LoopSettings, run_attack_result, stand_ins_of
from comcloak.attacks.stopping import AttackResult
from comcloak.attacks.through import RandomChoiceThrough

from .base import AttackRunner, RunnerContext, batch_bucket
from .registry import BackendUnavailableError

logger = logging.getLogger(__name__)

# The autocast dtype of each of the registry's precisions (registry.PRECISIONS; a test keeps the two in step).
PRECISION_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
# fp16 gradients of small losses flush to zero without it; a power of two, so the scaling itself is exact. The update
# uses only the gradient's signs and per-image scale, so the value does not change results unless it overflows.
FP16_LOSS_SCALE = 1024.0
WARMUP_RUNS = 2  # cuDNN algorithm selection and the allocator settle before capture


class AutocastClassifier(nn.Module):
    """Runs ``classifier`` under autocast to ``dtype`` and returns float32 logits (the loss stays in float32).

    Only the classifier is autocast: a ComModel rounds quantised DCT coefficients, which bf16's 8-bit mantissa
    would blur by a quarter step, so the stand-in runs in float32.
    """

    def __init__(self, classifier: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.classifier = classifier
        self.dtype = dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=self.dtype, cache_enabled=False):
            logits = self.classifier(x)
        return logits.float()


def check_precision(precision: str) -> None:
    if precision not in PRECISION_DTYPES:
        raise ValueError(f"unknown precision {precision!r}; available: {', '.join(PRECISION_DTYPES)}")


class TorchRunner(AttackRunner):
    """Eager PyTorch with autograd, the whole batch at once: the reference every other backend is checked against.

    Args:
        classifier, through, config: as for :func:`comcloak.attacks.run_attack`.
        precision: ``fp32`` (default, the reference), ``bf16`` or ``fp16`` autocast of the classifier.
        channels_last: convert the classifier's weights and the images to channels_last (faster convolutions on
            tensor cores). Default False. The conversion is in place on the classifier.
    """

    name = "torch"

    def __init__(
        self,
        classifier: nn.Module,
        through: nn.Module | None,
        config: AttackConfig,
        precision: str = "fp32",
        channels_last: bool = False,
    ) -> None:
        super().__init__(config)
        check_precision(precision)
        self.classifier = classifier
        self.through = through
        self.precision = precision
        self.channels_last = channels_last

    @classmethod
    def from_context(cls, context: RunnerContext) -> TorchRunner:
        return cls(context.classifier, context.through, context.config, context.precision,
                   **context.options(channels_last="channels_last"))

    def activate_impl(self) -> None:
        if self.channels_last:
            self.classifier.to(memory_format=torch.channels_last)

    @property
    def attacked_classifier(self) -> nn.Module:
        dtype = PRECISION_DTYPES[self.precision]
        if dtype is None:
            return self.classifier
        if isinstance(self.classifier, nn.ModuleList):  # a surrogate ensemble: each member autocast
            return nn.ModuleList([AutocastClassifier(member, dtype) for member in self.classifier])
        return AutocastClassifier(self.classifier, dtype)

    stops_early = True  # run_attack_result compacts the batch as photos stop

    def attack(self, x0: torch.Tensor, goal: torch.Tensor, fused_update: bool = False) -> torch.Tensor:
        """The adversarial images of ``x0`` (the loop as :meth:`attack_result`'s)."""
        return self.attack_result(x0, goal, fused_update).images

    def attack_result(self, x0: torch.Tensor, goal: torch.Tensor, fused_update: bool = False) -> AttackResult:
        """:func:`comcloak.attacks.loop.run_attack_result` with this runner's precision, layout and draws."""
        if self.channels_last:
            x0 = x0.contiguous(memory_format=torch.channels_last)
        loss_scale = FP16_LOSS_SCALE if self.precision == "fp16" else 1.0
        settings = LoopSettings(fused_update, loss_scale, self.dense_draws)
        return run_attack_result(self.attacked_classifier, x0, goal, self.config, self.through,
                                 sampler=self.sampler_for(x0), settings=settings)

    dense_draws = False  # stand-ins only on the draws that pick them

    def sampler_for(self, x0: torch.Tensor) -> DrawSampler | None:
        """The robust attack's draws: None, run_attack's default (per image, from each image's content)."""
        return None

    def infer_impl(self, x0: torch.Tensor, goal: torch.Tensor) -> AttackResult:
        result = self.attack_result(x0, goal)
        return AttackResult(result.images.contiguous(), result.steps_used)


class PerImageTorchRunner(TorchRunner):
    """One image at a time in a Python loop, as the authors' code runs the attack: the benchmark's naive baseline."""

    name = "torch-per-image"

    def infer_impl(self, x0: torch.Tensor, goal: torch.Tensor) -> AttackResult:
        results = [self.attack_result(x0[i : i + 1], goal[i : i + 1]) for i in range(x0.shape[0])]
        return AttackResult(torch.cat([result.images for result in results]).contiguous(),
                            torch.cat([result.steps_used for result in results]))


def capturable(through: nn.Module | None) -> bool:
    """Whether the stand-in replays correctly from a CUDA graph (a random pick, ``mix:``, would be frozen)."""
    return through is None or not any(isinstance(module, RandomChoiceThrough) for module in through.modules())


@dataclass
class _CapturedLoop:
    """Static buffers and the CUDA graph of the whole loop for one (batch, height, width)."""

    x0: torch.Tensor
    goal: torch.Tensor
    output: torch.Tensor
    graph: torch.cuda.CUDAGraph


class CudaGraphTorchRunner(TorchRunner):
    """The K-step loop captured in one CUDA graph per (batch bucket, height, width), then replayed.

    Batches are padded to power-of-two buckets up to ``max_batch`` (larger batches are split), by repeating their
    last image: every image's gradient is its own (the loss is a per-image sum, BatchNorm is in eval mode), so
    padding never changes a result. Each graph is captured after :data:`WARMUP_RUNS` runs on a side stream. The
    update runs as the fused CUDA kernel when ``comcloak.kernels`` has its library (``fused_update``), else as torch
    ops; under a shaped budget the per-pixel map is computed inside the captured graph from its static ``x0``
    (``run_attack``: fixed-shape ops, a fixed bisection) and the update runs as torch ops (the kernel's step is a
    scalar). Weights must be frozen (``requires_grad=False``): only the input gradient is computed.

    Args:
        classifier, through, config, precision, channels_last: as for :class:`TorchRunner` (channels_last
            defaults to True here).
        device: the CUDA device.
        max_batch: the largest bucket. Default 256.
        max_graphs: captured graphs kept at once; each holds its own memory pool (activations of a whole bucket),
            so an archive with many aspect ratios evicts the least recently used. Default 8.

    Example:
        >>> with CudaGraphTorchRunner(classifier, through, config, torch.device("cuda"), precision="bf16") as r:
        ...     x_adv = r.infer(x0, goal)
    """

    name = "torch-cudagraph"
    # A captured graph has fixed shapes: it cannot compact the batch as photos stop, and masking inside it would
    # still run every step (no time saved); refused at construction (AttackRunner.refuse_stopping).
    stops_early = False
    # The update as the fused CUDA kernel when the library is built (torch ops otherwise); False on a subclass or an
    # instance (before the first capture) runs the torch ops always.
    fused_update = True

    def __init__(
        self,
        classifier: nn.Module,
        through: nn.Module | None,
        config: AttackConfig,
        device: torch.device,
        precision: str = "fp32",
        channels_last: bool = True,
        max_batch: int = 256,
        max_graphs: int = 8,
    ) -> None:
        super().__init__(classifier, through, config, precision, channels_last)
        if max_batch < 1:
            raise ValueError(f"max_batch must be at least 1, got {max_batch}")
        if max_graphs < 1:
            raise ValueError(f"max_graphs must be at least 1, got {max_graphs}")
        self.device = torch.device(device)
        self.max_batch = max_batch
        self.max_graphs = max_graphs
        self._captured: OrderedDict[tuple[int, int, int], _CapturedLoop] = OrderedDict()

    @classmethod
    def unavailable_reason(cls, device: torch.device, through: nn.Module | None, precision: str) -> str | None:
        if not torch.cuda.is_available():
            return "torch sees no CUDA device"
        if not capturable(through):
            return "a random stand-in (mix:) cannot be replayed from a CUDA graph; eot: can"
        return None

    @classmethod
    def from_context(cls, context: RunnerContext) -> CudaGraphTorchRunner:
        return cls(context.classifier, context.through, context.config, context.device, context.precision,
                   **context.options(channels_last="channels_last", max_batch="max_batch"))

    def activate_impl(self) -> None:
        if not capturable(self.through):
            raise BackendUnavailableError(f"backend {self.name!r} cannot capture a random stand-in (mix:); "
                                          "use eot: or the torch backend")
        trainable = [name for module in (self.classifier, self.through) if module is not None
                     for name, parameter in module.named_parameters() if parameter.requires_grad]
        if trainable:
            raise BackendUnavailableError(f"backend {self.name!r} needs frozen weights; trainable: {trainable[:3]}")
        if self.device.type != "cuda" or not torch.cuda.is_available():
            raise BackendUnavailableError(f"backend {self.name!r} needs a CUDA device, got {self.device}")
        super().activate_impl()

    def deactivate_impl(self) -> None:
        self._captured.clear()

    dense_draws = True  # a captured graph cannot have data-dependent shapes

    def sampler_for(self, x0: torch.Tensor) -> DrawSampler | None:
        """Draws sampled on the device's default generator inside the captured loop: each replay draws anew."""
        if not self.config.eot.enabled:
            return None
        return DrawSampler.on_device(self.config.eot, len(stand_ins_of(self.through)), x0.device)

    def _capture(self, batch: int, height: int, width: int) -> _CapturedLoop:
        memory_format = torch.channels_last if self.channels_last else torch.contiguous_format
        x0 = torch.zeros(batch, 3, height, width, device=self.device).contiguous(memory_format=memory_format)
        goal = torch.zeros(batch, dtype=torch.long, device=self.device)
        side = torch.cuda.Stream(self.device)
        side.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(side):
            for _ in range(WARMUP_RUNS):
                self.attack(x0, goal, self.fused_update)
        torch.cuda.current_stream(self.device).wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            output = self.attack(x0, goal, self.fused_update)
        logger.info("captured the %d-step loop for batch %d at %dx%d (%s)", self.config.steps, batch, height,
                    width, self.precision)
        return _CapturedLoop(x0, goal, output, graph)

    def infer_impl(self, x0: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        source_device = x0.device
        x0 = x0.to(self.device)
        goal = goal.to(self.device)
        outputs = []
        for start in range(0, x0.shape[0], self.max_batch):
            chunk, chunk_goal = x0[start : start + self.max_batch], goal[start : start + self.max_batch]
            count = chunk.shape[0]
            key = (min(batch_bucket(count), self.max_batch), chunk.shape[2], chunk.shape[3])
            captured = self._captured.get(key)
            if captured is None:
                while len(self._captured) >= self.max_graphs:
                    evicted, _ = self._captured.popitem(last=False)
                    logger.info("released the captured loop for batch %d at %dx%d", *evicted)
                captured = self._captured[key] = self._capture(*key)
            self._captured.move_to_end(key)
            captured.x0[:count].copy_(chunk)
            captured.goal[:count].copy_(chunk_goal)
            if count < key[0]:
                captured.x0[count:].copy_(chunk[-1:].expand(key[0] - count, -1, -1, -1))
                captured.goal[count:].copy_(chunk_goal[-1:].expand(key[0] - count))
            captured.graph.replay()
            # A copy: the next replay overwrites the static output.
            outputs.append(captured.output[:count].clone(memory_format=torch.contiguous_format))
        return torch.cat(outputs).to(source_device)
