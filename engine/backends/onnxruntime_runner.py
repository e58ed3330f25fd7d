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
from pathlib import Path
from typing import Any

import numpy as np
import torch

from comcloak.attacks import AttackConfig
from comcloak.export.onnx_export import OUTPUT_NAMES, import_optional

from .base import RunnerContext
from .exported import ExportedStepRunner, StepBuffers
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


class OnnxRuntimeRunner(ExportedStepRunner):
    """Runs the attack loop on an exported step graph with ONNX Runtime.

    Args:
        onnx: path of the step graph (``comcloak export``), or a loader (``OnnxFromTorch``) called at activation.
        config: the attack (its eps, alpha, momentum, steps and targeted are fed to the graph).
        device: ``cpu`` or ``cuda`` (the latter needs ``onnxruntime-gpu``).
        cuda_graphs: capture each ping-pong binding as a CUDA graph (CUDA only).
        threads: intra-op threads on the CPU (default: ONNX Runtime's choice, one per core).
    """

    name = "onnxruntime"
    # ONNX Runtime session config entries (``SessionOptions.add_session_config_entry``) a subclass may set.
    session_config: dict[str, str] = {}

    def __init__(
        self,
        onnx: str | os.PathLike | Callable[[], Path],
        config: AttackConfig,
        device: str | torch.device = "cpu",
        cuda_graphs: bool = True,
        threads: int | None = None,
    ) -> None:
        cuda_graphs = cuda_graphs and torch.device(device).type == "cuda"
        super().__init__(onnx, config, device, bucketed=cuda_graphs)
        self.cuda_graphs = cuda_graphs
        self.threads = threads
        self.session: Any = None
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
        path = self.graph_path()
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if self.threads:
            options.intra_op_num_threads = self.threads
        for key, value in self.session_config.items():
            options.add_session_config_entry(key, value)
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
        super().deactivate_impl()
        self._graph_ids.clear()
        self.session = None

    def _bind(self, binding: Any, name: str, tensor: torch.Tensor) -> None:
        output = name in OUTPUT_NAMES
        if self.device.type == "cuda":
            bind = binding.bind_output if output else binding.bind_input
            bind(name, "cuda", self.device.index or 0, np.float32, tuple(tensor.shape), tensor.data_ptr())
        else:
            value = self._ort.OrtValue.ortvalue_from_numpy(tensor.numpy())  # shares the buffer's memory on CPU
            if output:
                binding.bind_ortvalue_output(name, value)
            else:
                binding.bind_ortvalue_input(name, value)

    def _run_options(self, bucket: int, parity: int) -> Any:
        options = self._ort.RunOptions()
        if self.cuda_graphs:
            # One captured graph per (bucket, binding); ids start at 1 (0 is reserved by ONNX Runtime).
            graph_id = self._graph_ids.setdefault((bucket, parity), str(len(self._graph_ids) + 1))
            options.add_run_config_entry("gpu_graph_id", graph_id)
        return options

    def bind(self, buffers: StepBuffers) -> None:
        """Two IOBindings, A -> B for even steps and B -> A for odd ones, with their run options."""
        bindings = []
        for parity in (0, 1):
            binding = self.session.io_binding()
            for name, tensor in self.binding_for_step(buffers, parity).items():
                self._bind(binding, name, tensor)
            bindings.append(binding)
        buffers.bound["bindings"] = bindings
        buffers.bound["options"] = [self._run_options(buffers.batch, parity) for parity in (0, 1)]

    stops_early = True  # run_step on a compacted buffer set (ExportedStepRunner.run_stopping)

    def run_steps(self, buffers: StepBuffers) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # the staging ran on torch's stream; ONNX Runtime runs on its own
        for step in range(self.config.steps):
            self._run(buffers, step)
        if self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()

    def run_step(self, buffers: StepBuffers, step: int) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)  # staging or compaction ran on torch's stream
        self._run(buffers, step)
        if self.device.type == "cuda":
            torch.cuda.current_stream(self.device).synchronize()  # the host reads the logits next

    def _run(self, buffers: StepBuffers, step: int) -> None:
        """Prepare step ``step``'s draws and bound and run it with the binding of its parity."""
        bindings, options = buffers.bound["bindings"], buffers.bound["options"]
        self.prepare_step(buffers)
        self.write_budget(buffers, step)
        if self.device.type == "cuda" and (buffers.sampler is not None or self.config.ramped):
            torch.cuda.synchronize(self.device)  # the draws (and eps_t) were written on torch's stream
        self.session.run_with_iobinding(bindings[step % 2], options[step % 2])
