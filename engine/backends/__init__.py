"""Attack backends behind one runner interface: ``torch`` (eager autograd, the reference), ``torch-cudagraph`` (the
whole loop captured in CUDA graphs), ``onnxruntime`` and ``tensorrt`` (the exported step graph).
:func:`create_runner` builds one by name; ``auto`` picks the fastest that can run here."""

from .base import AttackRunner, BackendUnavailableError, batch_bucket
from .factory import BACKENDS, TORCH_BACKENDS, StepGraphCache, available_backends, create_runner, resolve_backend
from .onnxruntime_runner import OnnxRuntimeRunner
from .tensorrt_runner import EngineFromOnnx, TensorRTRunner
from .torch_runner import PRECISIONS, CudaGraphTorchRunner, PerImageTorchRunner, TorchRunner

__all__ = [
    "BACKENDS",
    "PRECISIONS",
    "TORCH_BACKENDS",
    "AttackRunner",
    "BackendUnavailableError",
    "CudaGraphTorchRunner",
    "EngineFromOnnx",
    "OnnxRuntimeRunner",
    "PerImageTorchRunner",
    "StepGraphCache",
    "TensorRTRunner",
    "TorchRunner",
    "available_backends",
    "batch_bucket",
    "create_runner",
    "resolve_backend",
]
