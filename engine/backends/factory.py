"""Backend selection (``auto`` included), the on-disk cache of exported step graphs, and runner construction."""

from __future__ import annotations

import copy
import importlib.util
import logging
import os
import threading
from pathlib import Path

import torch
from torch import nn

from comcloak.attacks import AttackConfig
from comcloak.export.gradient import traceable_through
from comcloak.export.onnx_export import OPSET, OnnxFromTorch, model_fingerprint
from comcloak.export.vjp import UnsupportedLayerError

from .base import AttackRunner, BackendUnavailableError
from .onnxruntime_runner import CUDA_PROVIDER, OnnxRuntimeRunner, onnxruntime_providers
from .tensorrt_runner import TensorRTRunner, tensorrt_available
from .torch_runner import PRECISIONS, CudaGraphTorchRunner, TorchRunner, capturable

logger = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "torch-cudagraph", "onnxruntime", "tensorrt")
TORCH_BACKENDS = ("torch", "torch-cudagraph")  # any precision; one runner serves every view size
GRAPH_FORMAT_VERSION = "1"  # bump when the exported step graph changes meaning


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/comcloak`` (``~/.cache/comcloak``): exported step graphs and TensorRT engines."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "comcloak"


def _onnx_export_installed() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in ("onnx", "onnxscript", "onnxruntime"))


def is_exportable(through: nn.Module | None) -> bool:
    """Whether the stand-in can be part of an exported step graph (none and ComModels can; diff-JPEG, mix: not)."""
    try:
        traceable_through(through, 32, 32)
    except UnsupportedLayerError:
        return False
    return True


def available_backends(device: torch.device, through: nn.Module | None = None, precision: str = "fp32") -> list[str]:
    """The backends that can run the attack here, fastest first (``torch`` is always last and always there).

    The exported backends run float32 graphs, so another ``precision`` leaves only the torch backends.
    """
    found = []
    exportable = is_exportable(through) and precision == "fp32"
    if exportable and device.type == "cuda" and _onnx_export_installed() and tensorrt_available():
        found.append("tensorrt")
    if device.type == "cuda" and torch.cuda.is_available() and capturable(through):
        found.append("torch-cudagraph")
    if exportable and _onnx_export_installed():
        providers = onnxruntime_providers()
        # On a GPU, ONNX Runtime only helps with its CUDA provider; CPU ONNX Runtime would lose to CUDA torch.
        if device.type == "cpu" or CUDA_PROVIDER in providers:
            found.append("onnxruntime")
    found.append("torch")
    return found


def resolve_backend(
    name: str, device: torch.device, through: nn.Module | None = None, precision: str = "fp32"
) -> str:
    """The backend ``name`` stands for here (``auto``: the fastest available); raises when it cannot run."""
    if name not in BACKENDS:
        raise BackendUnavailableError(f"unknown backend {name!r}; available: {', '.join(BACKENDS)}")
    if precision not in PRECISIONS:
        raise BackendUnavailableError(f"unknown precision {precision!r}; available: {', '.join(PRECISIONS)}")
    found = available_backends(device, through, precision)
    if name == "auto":
        return found[0]
    if name in found:
        return name
    if name == "torch-cudagraph" and device.type != "cuda":
        reason = f"it needs a CUDA device, and the device is {device}"
    elif name == "torch-cudagraph" and not torch.cuda.is_available():
        reason = "torch sees no CUDA device"
    elif name == "torch-cudagraph":
        reason = "a random stand-in (mix:) cannot be replayed from a CUDA graph; eot: can"
    elif precision != "fp32":
        reason = f"precision {precision} applies to the torch backends ({', '.join(TORCH_BACKENDS)})"
    elif not is_exportable(through):
        reason = f"the stand-in {type(through).__name__} cannot be exported (exportable: none, comodel:...)"
    elif name in ("onnxruntime", "tensorrt") and not _onnx_export_installed():
        reason = "onnx, onnxscript and onnxruntime are not installed (pip install 'comcloak[onnx]')"
    elif name == "tensorrt":
        reason = "TensorRT needs the tensorrt package and a CUDA GPU"
    else:
        reason = "onnxruntime on a GPU needs onnxruntime-gpu (pip install 'comcloak[gpu]')"
    raise BackendUnavailableError(f"backend {name!r} cannot run here: {reason}; available: {', '.join(found)}")


class StepGraphCache:
    """Exports the attack-step graph for each attack-view size once and keeps it on disk.

    The file name is a hash of the classifier's and stand-in's weights and types, the size and the graph format,
    so a changed model never reuses a stale graph. Exports run on CPU copies of the modules.
    """

    def __init__(
        self,
        classifier: nn.Module,
        through: nn.Module | None,
        cache_dir: str | os.PathLike | None = None,
        metadata: dict[str, str] | None = None,
    ) -> None:
        self.classifier = classifier
        self.through = through
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.metadata = dict(metadata or {})
        self._lock = threading.Lock()

    def path_for(self, height: int, width: int) -> Path:
        key = model_fingerprint(
            self.classifier, self.through,
            extra={"height": height, "width": width, "opset": OPSET, "format": GRAPH_FORMAT_VERSION},
        )
        path = self.cache_dir / f"step-{key}.onnx"
        with self._lock:
            if not path.is_file():
                logger.info("exporting the attack step for %dx%d views to %s", height, width, path)
                classifier = copy.deepcopy(self.classifier).cpu().float().eval()
                through = copy.deepcopy(self.through).cpu().float().eval() if self.through is not None else None
                OnnxFromTorch(classifier, through, height, width, path, self.metadata)()
        return path


def create_runner(
    backend: str,
    classifier: nn.Module,
    through: nn.Module | None,
    config: AttackConfig,
    height: int,
    width: int,
    device: torch.device,
    graphs: StepGraphCache | None = None,
    threads: int | None = None,
    precision: str = "fp32",
) -> AttackRunner:
    """A runner (not yet activated) for ``height`` x ``width`` attack views; ``backend`` must be resolved.

    The torch backends serve every view size with one runner (``height``/``width`` are unused by them).
    """
    if backend == "torch":
        return TorchRunner(classifier, through, config, precision)
    if backend == "torch-cudagraph":
        return CudaGraphTorchRunner(classifier, through, config, device, precision)
    if precision != "fp32":
        raise BackendUnavailableError(f"precision {precision} applies to the torch backends, not {backend!r}")
    if graphs is None:
        graphs = StepGraphCache(classifier, through)
    loader = lambda: graphs.path_for(height, width)  # noqa: E731 - exported lazily, at activation
    if backend == "onnxruntime":
        return OnnxRuntimeRunner(loader, config, device=device, threads=threads)
    if backend == "tensorrt":
        return TensorRTRunner(loader, config, device=device, cache_dir=graphs.cache_dir)
    raise BackendUnavailableError(f"unknown backend {backend!r}; available: {', '.join(BACKENDS)}")
