"""ONNX Runtime backend: the exported attack-step graph, run step after step with IOBinding and ping-pong buffers.

Every step reads ``x``/``m`` from one buffer pair and writes ``x_next``/``m_next`` into the other; the two bindings
(A -> B and B -> A) are built once per batch size, so the loop moves no data between steps and, on CUDA, none
between host and device. On the CPU execution provider the buffers are NumPy arrays shared with ONNX Runtime
(``OrtValue.ortvalue_from_numpy`` does not copy on CPU). With the CUDA execution provider (``onnxruntime-gpu``),
the buffers are torch CUDA tensors bound by pointer, and with ``cuda_graphs`` each binding is captured once as its
own CUDA graph (run option ``gpu_graph_id``) and replayed; batch sizes are rounded up to power-of-two buckets so the
static buffers and graphs are reused.

``onnxruntime`` (or ``onnxruntime-gpu``) is imported when the runner is activated, never at import time.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from comcloak.attacks import AttackConfig
from comcloak.export.gradient import goal_weights
from comcloak.export.onnx_export import import_optional, read_export_metadata

from .base import AttackRunner, RunnerContext, batch_bucket
from .factory import exportable_reason
from .registry import BackendUnavailableError

logger = logging.getLogger(__name__)

CPU_PROVIDER = "CPUExecutionProvider"
CUDA_PROVIDER = "CUDAExecutionProvider"


def onnxruntime_providers() -> list[str]:
    """Execution providers of the installed ONNX Runtime (empty when it is not installed)."""
    try:
        import onnxruntime
    except ImportError:
        return []
    return list(onnxruntime.get_available_providers())


@dataclass
class _Buffers:
    """Static input/output buffers for one batch size, and the two bindings between them."""

    batch: int
    tensors: dict[str, Any]
    bindings: tuple[Any, Any]


class OnnxRuntimeRunner(AttackRunner):
    """Runs the attack loop on an exported step graph with ONNX Runtime.

    Args:
        onnx: path of the step graph (``comcloak export``), or a loader (``OnnxFromTorch``) called at activation.
        config: the attack (its eps, alpha, momentum, steps and targeted are fed to the graph).
        device: ``cpu`` or ``cuda`` (the latter needs ``onnxruntime-gpu``).
        cuda_graphs: capture each ping-pong binding as a CUDA graph (CUDA only).
        threads: intra-op threads on the CPU (default: ONNX Runtime's choice, one per core).
    """

    name = "onnxruntime"

    def __init__(
        self,
        onnx: str | os.PathLike | Callable[[], Path],
        config: AttackConfig,
        device: str | torch.device = "cpu",
        cuda_graphs: bool = True,
        threads: int | None = None,
    ) -> None:
        super().__init__(config)
        self.onnx = onnx
        self.device = torch.device(device)
        self.cuda_graphs = cuda_graphs and self.device.type == "cuda"
        self.threads = threads
        self.session: Any = None
        self.num_classes = 0
        self.shape = (0, 0)
        self._buffers: dict[int, _Buffers] = {}
        self._graph_ids: dict[tuple[int, int], str] = {}

    @classmethod
    def unavailable_reason(cls, device: torch.device, through: torch.nn.Module | None, precision: str) -> str | None:
        reason = exportable_reason(through)
        if reason is None and device.type == "cuda" and CUDA_PROVIDER not in onnxruntime_providers():
            # CPU ONNX Runtime would lose to CUDA torch
            reason = "onnxruntime on a GPU needs onnxruntime-gpu (pip install 'comcloak[gpu]')"
        return reason

    @classmethod
    def from_context(cls, context: RunnerContext) -> OnnxRuntimeRunner:
        return cls(lambda: context.step_graph(context.height, context.width), context.config, device=context.device,
                   threads=context.threads)

    def activate_impl(self) -> None:
        ort = import_optional("onnxruntime")
        path = Path(self.onnx() if callable(self.onnx) else self.onnx)
        if not path.is_file():
            raise BackendUnavailableError(f"onnxruntime: no step graph at {path}")
        metadata = read_export_metadata(path)
        try:
            self.num_classes = int(metadata["num_classes"])
            self.shape = (int(metadata["height"]), int(metadata["width"]))
        except (KeyError, ValueError):
            raise BackendUnavailableError(f"onnxruntime: {path} is not a comcloak step graph (no metadata)") from None
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.threads:
            options.intra_op_num_threads = self.threads
        if self.device.type == "cuda":
            if CUDA_PROVIDER not in ort.get_available_providers():
                raise BackendUnavailableError(
                    "onnxruntime: the CUDA execution provider is not available (install onnxruntime-gpu)"
                )
            provider_options = {"device_id": str(self.device.index or 0)}
            if self.cuda_graphs:
                provider_options["enable_cuda_graph"] = "1"
            providers: list[Any] = [(CUDA_PROVIDER, provider_options)]
        else:
            providers = [CPU_PROVIDER]
        self.session = ort.InferenceSession(str(path), options, providers=providers)
        self._ort = ort
        logger.info("onnxruntime session on %s for %s", self.session.get_providers()[0], path)

    def deactivate_impl(self) -> None:
        self._buffers.clear()
        self._graph_ids.clear()
        self.session = None

    # ----------------------------------------------------------------------------------------------- buffers

    def _new_tensor(self, shape: tuple[int, ...]) -> Any:
        if self.device.type == "cuda":
            return torch.zeros(shape, dtype=torch.float32, device=self.device)
        return np.zeros(shape, dtype=np.float32)

    def _bind(self, binding: Any, name: str, tensor: Any, output: bool) -> None:
        if self.device.type == "cuda":
            bind = binding.bind_output if output else binding.bind_input
            bind(name, "cuda", self.device.index or 0, np.float32, tuple(tensor.shape), tensor.data_ptr())
        else:
            value = self._ort.OrtValue.ortvalue_from_numpy(tensor)  # shares the array's memory on CPU
            if output:
                binding.bind_ortvalue_output(name, value)
            else:
                binding.bind_ortvalue_input(name, value)

    def _buffers_for(self, batch: int, height: int, width: int) -> _Buffers:
        key = batch_bucket(batch) if self.cuda_graphs else batch
        buffers = self._buffers.get(key)
        if buffers is not None:
            return buffers
        image = (key, 3, height, width)
        tensors = {
            "x0": self._new_tensor(image), "w": self._new_tensor((key, self.num_classes)),
            "eps": self._new_tensor((1,)), "alpha": self._new_tensor((1,)), "mu": self._new_tensor((1,)),
            "x_a": self._new_tensor(image), "x_b": self._new_tensor(image),
            "m_a": self._new_tensor(image), "m_b": self._new_tensor(image),
            "logits": self._new_tensor((key, self.num_classes)), "loss": self._new_tensor((key,)),
        }
        bindings = []
        for source, target in (("a", "b"), ("b", "a")):
            binding = self.session.io_binding()
            for name in ("x0", "w", "eps", "alpha", "mu"):
                self._bind(binding, name, tensors[name], output=False)
            self._bind(binding, "x", tensors[f"x_{source}"], output=False)
            self._bind(binding, "m", tensors[f"m_{source}"], output=False)
            self._bind(binding, "x_next", tensors[f"x_{target}"], output=True)
            self._bind(binding, "m_next", tensors[f"m_{target}"], output=True)
            self._bind(binding, "logits", tensors["logits"], output=True)
            self._bind(binding, "loss", tensors["loss"], output=True)
            bindings.append(binding)
        buffers = _Buffers(key, tensors, (bindings[0], bindings[1]))
        self._buffers[key] = buffers
        return buffers

    def _run_options(self, bucket: int, parity: int) -> Any:
        options = self._ort.RunOptions()
        if self.cuda_graphs:
            # One captured graph per (bucket, binding); ids start at 1 (0 is reserved by ONNX Runtime).
            graph_id = self._graph_ids.setdefault((bucket, parity), str(len(self._graph_ids) + 1))
            options.add_run_config_entry("gpu_graph_id", graph_id)
        return options

    # ---------------------------------------------------------------------------------------------- the loop

    def infer_impl(self, x0: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = x0.shape
        if (height, width) != self.shape:
            raise ValueError(f"this step graph is for {self.shape[0]}x{self.shape[1]} images, got {height}x{width}")
        weights = goal_weights(goal, self.num_classes, self.config.targeted)
        buffers = self._buffers_for(batch, height, width)
        t = buffers.tensors
        cfg = self.config
        scalars = {"eps": cfg.eps, "alpha": cfg.alpha, "mu": cfg.momentum}
        if self.device.type == "cuda":
            t["x0"].zero_()
            t["w"].zero_()
            t["x0"][:batch].copy_(x0)
            t["w"][:batch].copy_(weights)
            t["x_a"].copy_(t["x0"])
            t["m_a"].zero_()
            for name, value in scalars.items():
                t[name].fill_(value)
            torch.cuda.synchronize(self.device)  # ONNX Runtime runs on its own stream
        else:
            t["x0"][...] = x0.detach().cpu().numpy()
            t["w"][...] = weights.cpu().numpy()
            t["x_a"][...] = t["x0"]
            t["m_a"][...] = 0.0
            for name, value in scalars.items():
                t[name][...] = value
        options = [self._run_options(buffers.batch, parity) for parity in (0, 1)]
        for step in range(cfg.steps):
            parity = step % 2
            self.session.run_with_iobinding(buffers.bindings[parity], options[parity])
        final = t["x_b"] if cfg.steps % 2 else t["x_a"]
        if self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()
            return final[:batch].clone().to(x0.device)
        return torch.from_numpy(final[:batch].copy()).to(x0.device)
