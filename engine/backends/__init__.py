"""Attack backends behind one runner interface: ``torch`` (eager autograd, the reference), ``onnxruntime`` and
``tensorrt`` (the exported step graph). :func:`create_runner` builds one by name; ``auto`` picks the fastest that
can run here."""

from .base import AttackRunner, BackendUnavailableError
from .factory import BACKENDS, StepGraphCache, available_backends, create_runner, resolve_backend
from .onnxruntime_runner import OnnxRuntimeRunner
from .tensorrt_runner import EngineFromOnnx, TensorRTRunner
from .torch_runner import PerImageTorchRunner, TorchRunner

__all__ = [
    "BACKENDS",
    "AttackRunner",
    "BackendUnavailableError",
    "EngineFromOnnx",
    "OnnxRuntimeRunner",
    "PerImageTorchRunner",
    "StepGraphCache",
    "TensorRTRunner",
    "TorchRunner",
    "available_backends",
    "create_runner",
    "resolve_backend",
]
