"""TensorRT backend: an engine built from the exported step graph, the whole K-step loop in one CUDA graph.

``EngineFromOnnx`` (a lazy loader) parses the same ONNX file the ONNX Runtime backend runs, builds a *strongly
typed* network (types come from the ONNX graph, float32 here; TensorRT 10 accepts the flag and TensorRT 11 builds
nothing else) with one optimisation profile over the batch, and caches the serialised engine under a key of the
ONNX file's hash, the TensorRT version, the GPU's name and the profile, so a second run deserialises instead of
building.

``TensorRTRunner`` binds torch CUDA tensors by address (``set_tensor_address``) and runs ``execute_async_v3``. Per
batch bucket (powers of two) it keeps static buffers, runs the loop once to warm up, then captures all K steps,
alternating the ping-pong buffers, in one ``torch.cuda.CUDAGraph``; a call copies its images into the static
input, replays the graph and copies the result out.

``tensorrt`` is imported when an engine is built or loaded, never at import time.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from comcloak.attacks import AttackConfig
from comcloak.engine.atomic import atomic_writer
from comcloak.export.gradient import goal_weights
from comcloak.export.onnx_export import BATCHED, INPUT_NAMES, import_optional, read_export_metadata

from .base import AttackRunner, RunnerContext, batch_bucket
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


def _input_shapes(metadata: dict[str, str], batch: int) -> dict[str, tuple[int, ...]]:
    height, width, classes = int(metadata["height"]), int(metadata["width"]), int(metadata["num_classes"])
    image = (batch, 3, height, width)
    return {"x": image, "x0": image, "m": image, "w": (batch, classes), "eps": (1,), "alpha": (1,), "mu": (1,)}


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
        smallest, largest = _input_shapes(metadata, 1), _input_shapes(metadata, self.max_batch)
        for name in INPUT_NAMES:
            profile.set_shape(name, smallest[name], largest[name] if name in BATCHED else smallest[name],
                              largest[name])
        config.add_optimization_profile(profile)
        logger.info("building a tensorrt %s engine for %s (batch 1..%d)", trt.__version__, self.onnx_path,
                    self.max_batch)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise BackendUnavailableError(f"tensorrt failed to build an engine for {self.onnx_path}")
        return serialized


@dataclass
class _Bucket:
    batch: int
    context: Any  # one execution context per bucket: its shapes and scratch memory stay as captured
    tensors: dict[str, torch.Tensor]
    graph: torch.cuda.CUDAGraph


class TensorRTRunner(AttackRunner):
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
        super().__init__(config)
        self.onnx = onnx
        self.device = torch.device(device)
        self.max_batch = max_batch
        self.cache_dir = cache_dir
        self.engine: Any = None
        self.metadata: dict[str, str] = {}
        self._buckets: dict[int, _Bucket] = {}

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
        path = Path(self.onnx() if callable(self.onnx) else self.onnx)
        self.metadata = read_export_metadata(path)
        with torch.cuda.device(self.device):
            self.engine = EngineFromOnnx(path, self.max_batch, self.cache_dir)()
        self.stream = torch.cuda.Stream(self.device)

    def deactivate_impl(self) -> None:
        self._buckets.clear()
        self.engine = None

    def _execute_steps(self, context: Any, tensors: dict[str, torch.Tensor], stream: torch.cuda.Stream) -> None:
        """Enqueue all K steps on ``stream``, alternating the ping-pong buffers."""
        for step in range(self.config.steps):
            source, target = ("a", "b") if step % 2 == 0 else ("b", "a")
            addresses = {
                "x": tensors[f"x_{source}"], "m": tensors[f"m_{source}"],
                "x_next": tensors[f"x_{target}"], "m_next": tensors[f"m_{target}"],
                **{name: tensors[name] for name in ("x0", "w", "eps", "alpha", "mu", "logits", "loss")},
            }
            for name, tensor in addresses.items():
                context.set_tensor_address(name, tensor.data_ptr())
            if not context.execute_async_v3(stream.cuda_stream):
                raise RuntimeError("tensorrt execute_async_v3 failed")

    def _bucket(self, batch: int) -> _Bucket:
        size = min(batch_bucket(batch), self.max_batch)
        bucket = self._buckets.get(size)
        if bucket is not None:
            return bucket
        shapes = _input_shapes(self.metadata, size)
        with torch.cuda.device(self.device):
            context = self.engine.create_execution_context()
        for name in INPUT_NAMES:
            context.set_input_shape(name, shapes[name])
        image = shapes["x"]
        tensors = {name: torch.zeros(shape, device=self.device) for name, shape in shapes.items() if name != "x"}
        for name in ("x_a", "x_b", "m_a", "m_b"):
            tensors[name] = torch.zeros(image, device=self.device)
        tensors["logits"] = torch.zeros(shapes["w"], device=self.device)
        tensors["loss"] = torch.zeros((size,), device=self.device)
        # Warm up outside capture (TensorRT allocates and tunes lazily on the first enqueue), then capture.
        self.stream.wait_stream(torch.cuda.current_stream(self.device))
        with torch.cuda.stream(self.stream):
            self._execute_steps(context, tensors, self.stream)
        self.stream.synchronize()
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph, stream=self.stream):
            self._execute_steps(context, tensors, self.stream)
        bucket = _Bucket(size, context, tensors, graph)
        self._buckets[size] = bucket
        return bucket

    def infer_impl(self, x0: torch.Tensor, goal: torch.Tensor) -> torch.Tensor:
        if x0.shape[0] > self.max_batch:
            return torch.cat([
                self.infer_impl(x0[i : i + self.max_batch], goal[i : i + self.max_batch])
                for i in range(0, x0.shape[0], self.max_batch)
            ])
        batch = x0.shape[0]
        bucket = self._bucket(batch)
        t = bucket.tensors
        classes = int(self.metadata["num_classes"])
        t["x0"].zero_()
        t["w"].zero_()
        t["x0"][:batch].copy_(x0)
        t["w"][:batch].copy_(goal_weights(goal.to(self.device), classes, self.config.targeted))
        t["x_a"].copy_(t["x0"])
        t["m_a"].zero_()
        t["eps"].fill_(self.config.eps)
        t["alpha"].fill_(self.config.alpha)
        t["mu"].fill_(self.config.momentum)
        bucket.graph.replay()
        final = t["x_b"] if self.config.steps % 2 else t["x_a"]
        return final[:batch].clone().to(x0.device)
