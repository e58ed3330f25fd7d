"""TensorRT backend: an engine built from the exported step graph, the whole K-step loop in one CUDA graph.

``EngineFromOnnx`` (a lazy loader) parses the same ONNX file the ONNX Runtime backend runs, builds a *strongly
typed* network (types come from the ONNX graph, float32 here; TensorRT 10 accepts the flag and TensorRT 11 builds
nothing else) with one optimisation profile over the batch, and caches the serialised engine under a key of the
ONNX file's hash, the TensorRT version, the GPU's name and the profile, so a second run deserialises instead of
building.

``TensorRTRunner`` binds torch CUDA tensors by address (``set_tensor_address``) and runs ``execute_async_v3``. Per
batch bucket (powers of two) it keeps static buffers, runs the loop once to warm up, then captures all K steps,
alternating the ping-pong buffers, in one ``torch.cuda.CUDAGraph``; a call copies its images into the static
input, replays the graph and copies the result out. The per-pixel ``budget`` input (graph format 5) is one more
batched input of the profile, bound by address like the others and staged with the images
(``ExportedStepRunner.stage``: ones, or the texture map); untested here (no TensorRT on the test machines).

``tensorrt`` is imported when an engine is built or loaded, never at import time.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from comcloak.atomic import atomic_writer
from comcloak.attacks import AttackConfig
from comcloak.attacks.eot import DrawSampler
from comcloak.export.onnx_export import (
    BATCHED,
    StepLayout,
    import_optional,
    read_export_metadata,
    step_tensor_shapes,
)

from .base import RunnerContext
from .exported import ExportedStepRunner, StepBuffers
from .factory import default_cache_dir, exportable_reason
from .registry import BackendUnavailableError

logger = logging.getLogger(__name__)

DEFAULT_MAX_BATCH = 64
DEFAULT_WORKSPACE = 4 << 30


def tensorrt_available() -> bool:
    """TensorRT importable and a CUDA GPU present."""
    try:
        import tensorrt  # noqa: F401
    except ImportError:
        return False
    return torch.cuda.is_available()


class EngineFromOnnx:
    """Lazy loader: a deserialised ``trt.ICudaEngine`` for the step graph at ``onnx_path`` (built or from cache).

    Args:
        onnx_path: the exported step graph.
        max_batch: largest batch of the optimisation profile (the profile is 1 .. max_batch, optimum max_batch).
        cache_dir: where serialised engines are kept (None: never cached).
        workspace: builder workspace limit in bytes.
    """

    def __init__(
        self,
        onnx_path: str | os.PathLike,
        max_batch: int = DEFAULT_MAX_BATCH,
        cache_dir: str | os.PathLike | None = None,
        workspace: int = DEFAULT_WORKSPACE,
    ) -> None:
        self.onnx_path = Path(onnx_path)
        self.max_batch = max_batch
        self.cache_dir = Path(cache_dir) if cache_dir is not None else None
        self.workspace = workspace

    def cache_key(self, trt: Any) -> str:
        digest = hashlib.sha256(self.onnx_path.read_bytes())
        gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no-gpu"
        digest.update(f"{trt.__version__}|{gpu}|{self.max_batch}".encode())
        return digest.hexdigest()[:24]

    def __call__(self) -> Any:
        trt = import_optional("tensorrt", extra="trt")
        trt_logger = trt.Logger(trt.Logger.WARNING)
        runtime = trt.Runtime(trt_logger)
        cached = self.cache_dir / f"step-{self.cache_key(trt)}.engine" if self.cache_dir else None
        if cached is not None and cached.is_file():
            engine = runtime.deserialize_cuda_engine(cached.read_bytes())
            if engine is not None:
                logger.info("tensorrt engine from cache %s", cached)
                return engine
            logger.warning("cached engine %s did not deserialise; rebuilding", cached)
        serialized = self.build(trt, trt_logger)
        if cached is not None:
            with atomic_writer(cached) as handle:
                handle.write(bytes(serialized))
        engine = runtime.deserialize_cuda_engine(serialized)
        if engine is None:
            raise BackendUnavailableError("tensorrt: the freshly built engine did not deserialise")
        return engine

    def build(self, trt: Any, trt_logger: Any) -> Any:
        """Parse the ONNX file into a strongly typed network and build a serialised engine."""
        builder = trt.Builder(trt_logger)
        flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
        network = builder.create_network(flags)
        parser = trt.OnnxParser(network, trt_logger)
        if not parser.parse_from_file(str(self.onnx_path)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise BackendUnavailableError(f"tensorrt could not parse {self.onnx_path}: {errors}")
        metadata = read_export_metadata(self.onnx_path)
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, self.workspace)
        profile = builder.create_optimization_profile()
        view = (int(metadata["height"]), int(metadata["width"]), int(metadata["num_classes"]))
        layout = StepLayout.from_metadata(metadata)
        smallest = step_tensor_shapes(1, *view, layout)
        largest = step_tensor_shapes(self.max_batch, *view, layout)
        for name in layout.input_names:
            profile.set_shape(name, smallest[name], largest[name] if name in BATCHED else smallest[name],
                              largest[name])
        config.add_optimization_profile(profile)
        logger.info("building a tensorrt %s engine for %s (batch 1..%d)", trt.__version__, self.onnx_path,
                    self.max_batch)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise BackendUnavailableError(f"tensorrt failed to build an engine for {self.onnx_path}")
        return serialized


class TensorRTRunner(ExportedStepRunner):
    """Runs the attack loop with a TensorRT engine, all steps of a batch bucket replayed as one CUDA graph.

    Args:
        onnx: the exported step graph (path or loader returning one); the engine is built from it.
        config: the attack.
        device: the CUDA device.
        max_batch: the engine profile's largest batch; larger calls are split.
        cache_dir: engine cache directory (None: no cache).
    """

    name = "tensorrt"

    def __init__(
        self,
        onnx: str | os.PathLike | Callable[[], Path],
        config: AttackConfig,
        device: str | torch.device = "cuda",
        max_batch: int = DEFAULT_MAX_BATCH,
        cache_dir: str | os.PathLike | None = None,
    ) -> None:
        super().__init__(onnx, config, device, max_batch=max_batch, bucketed=True)
        self.cache_dir = cache_dir
        self.engine: Any = None

    @classmethod
    def unavailable_reason(cls, device: torch.device, through: torch.nn.Module | None, precision: str) -> str | None:
        reason = exportable_reason(through)
        if reason is None and not tensorrt_available():
            reason = "TensorRT needs the tensorrt package and a CUDA GPU"
        return reason

    @classmethod
    def from_context(cls, context: RunnerContext) -> TensorRTRunner:
        return cls(lambda: context.step_graph(context.height, context.width), context.config, device=context.device,
                   cache_dir=context.cache_dir or default_cache_dir(), **context.options(max_batch="max_batch"))

    def activate_impl(self) -> None:
        if self.device.type != "cuda" or not torch.cuda.is_available():
            raise BackendUnavailableError("tensorrt needs a CUDA GPU")
        path = self.graph_path()
        with torch.cuda.device(self.device):
            self.engine = EngineFromOnnx(path, self.max_batch, self.cache_dir)()
        self.stream = torch.cuda.Stream(self.device)

    def deactivate_impl(self) -> None:
        super().deactivate_impl()
        self.engine = None

    def prepare_step(self, buffers: StepBuffers) -> None:
        """Nothing on the host: the captured graph samples each step's draws on the device (:meth:`_execute_steps`)."""

    def _execute_steps(self, buffers: StepBuffers) -> None:
        """Enqueue all K steps on the runner's stream, alternating the ping-pong buffers; a robust graph's draws are
        sampled on the device before each step (torch ops on the default CUDA generator, captured with the steps,
        so every replay draws anew)."""
        context = buffers.bound["context"]
        sampler = DrawSampler.on_device(self.config.eot, self.layout.stand_ins, self.device) \
            if self.layout.draws else None
        for step in range(self.config.steps):
            if sampler is not None:
                draw = sampler.sample(buffers.batch, *self.shape)
                for name, value in draw.tensors().items():
                    buffers.tensors[name].copy_(value)
            self.write_budget(buffers, step)  # a growing budget's eps_t: a fill captured with the step
            for name, tensor in self.binding_for_step(buffers, step).items():
                context.set_tensor_address(name, tensor.data_ptr())
            if not context.execute_async_v3(self.stream.cuda_stream):
                raise RuntimeError("tensorrt execute_async_v3 failed")

    def bind(self, buffers: StepBuffers) -> None:
        """An execution context for the bucket (its shapes and scratch memory stay as captured), a warm-up run
        outside capture (TensorRT allocates and tunes lazily on the first enqueue), then all K steps captured in
        one CUDA graph."""
        shapes = step_tensor_shapes(buffers.batch, *self.shape, self.num_classes, self.layout)
        with torch.cuda.device(self.device):
            context = self.engine.create_execution_context()
        for name in self.layout.input_names:
            context.set_input_shape(name, shapes[name])
        buffers.bound["context"] = context
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.stream):
            self._execute_steps(buffers)
        self.stream.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=self.stream):
            self._execute_steps(buffers)
        buffers.bound["graph"] = graph

    def run_steps(self, buffers: StepBuffers) -> None:
        buffers.bound["graph"].replay()
