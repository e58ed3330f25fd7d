"""Attack backends behind one runner interface, listed in one registry (:mod:`.registry`): ``torch`` (eager
autograd, the reference), ``torch-cudagraph`` (the whole loop captured in CUDA graphs), ``torch-per-image`` (the
naive baseline), ``onnxruntime`` and ``tensorrt`` (the exported step graph). :func:`create_runner` builds one by
name; ``auto`` picks the fastest that can run here.

Everything but the registry needs torch and is imported on first use, so ``comcloak --help`` and the CLI's parser
read the registry without importing torch.
"""

from __future__ import annotations

import importlib
from typing import Any

from .registry import (
    AUTO,
    PRECISIONS,
    BackendInfo,
    BackendUnavailableError,
    backend_choices,
    backend_names,
    get_backend,
    register_backend,
    registered,
)

_LAZY = {
    "AttackRunner": "base", "RunnerContext": "base", "batch_bucket": "base",
    "StepGraphCache": "factory", "available_backends": "factory", "create_runner": "factory",
    "resolve_backend": "factory", "unavailable_reason": "factory", "default_cache_dir": "factory",
    "OnnxRuntimeRunner": "onnxruntime_runner", "EngineFromOnnx": "tensorrt_runner", "TensorRTRunner": "tensorrt_runner",
    "CudaGraphTorchRunner": "torch_runner", "PerImageTorchRunner": "torch_runner", "TorchRunner": "torch_runner",
    "ExportedStepRunner": "exported",
}

__all__ = ["AUTO", "PRECISIONS", "BackendInfo", "BackendUnavailableError", "backend_choices", "backend_names",
           "get_backend", "register_backend", "registered", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
