"""Backend selection (``auto`` included) over the registry, the on-disk cache of exported step graphs, and runner
construction."""

from __future__ import annotations

import copy
import importlib.util
import logging
import os
import threading
from dataclasses import replace
from pathlib import Path

import torch
from torch import nn

from comcloak.attacks import AttackConfig
from comcloak.attacks.presets import stopping_asked
from comcloak.export.gradient import traceable_through
from comcloak.export.onnx_export import OPSET, OnnxFromTorch, model_fingerprint
from comcloak.export.step_io import StepSpec
from comcloak.export.vjp import UnsupportedLayerError

from .base import AttackRunner, RunnerContext
from .registry import AUTO, PRECISIONS, BackendUnavailableError, get_backend, registered

logger = logging.getLogger(__name__)

# Bump when the exported step graph changes (2: per-surrogate w, loss, draws; 3: ReLU6 masks from the output;
# 4: ReLU/ReLU6 masks as HardSigmoid gates; 5: the per-pixel budget input, --budget texture; 6: a robust graph's
# logits are each draw's, for per-photo stopping).
GRAPH_FORMAT_VERSION = "6"


def default_cache_dir() -> Path:
    """``$XDG_CACHE_HOME/comcloak`` (``~/.cache/comcloak``): exported step graphs and TensorRT engines."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "comcloak"


def _onnx_export_installed() -> bool:
    return all(importlib.util.find_spec(name) is not None for name in ("onnx", "onnxscript", "onnxruntime"))


def is_exportable(through: nn.Module | None) -> bool:
    """Whether the stand-in can be part of an exported step graph (none and ComModels can; diff-JPEG, mix: not;
    the robust step's ``mix:`` of ComModels is not offered either, as one rule serves both kinds of graph)."""
    try:
        traceable_through(through, 32, 32)
    except UnsupportedLayerError:
        return False
    return True


def unavailable_reason(
    name: str, device: torch.device, through: nn.Module | None = None, precision: str = "fp32", stopping: bool = False
) -> str | None:
    """Why the registered backend ``name`` cannot run here (``stopping``: with per-photo stopping on), or None when
    it can."""
    info = get_backend(name)
    if device.type not in info.devices:  # the more basic reason first
        return f"it needs a {' or '.join(kind.upper() for kind in info.devices)} device, and the device is {device}"
    if stopping and not info.runner_class().stops_early:
        return "it cannot stop photos early (stop_after): its whole loop is one captured graph"
    if precision not in info.precisions:
        offering = [other.name for other in registered() if precision in other.precisions]
        return f"precision {precision} applies to the {', '.join(offering)} backends"
    return info.runner_class().unavailable_reason(device, through, precision)


def available_backends(device: torch.device, through: nn.Module | None = None, precision: str = "fp32",
                       stopping: bool = False) -> list[str]:
    """The backends ``auto`` may pick here, fastest first (the registry's ``auto_rank``; ``torch`` is always there);
    ``stopping``: only those that stop photos early."""
    ranked = sorted((info for info in registered() if info.auto_rank is not None), key=lambda info: info.auto_rank)
    return [info.name for info in ranked
            if unavailable_reason(info.name, device, through, precision, stopping) is None]


def resolve_backend(
    name: str, device: torch.device, through: nn.Module | None = None, precision: str = "fp32", stopping: bool = False
) -> str:
    """The backend ``name`` stands for here (``auto``: the fastest available; with ``stopping``, the fastest that
    stops photos early, ``AttackRunner.stops_early``); raises when it cannot run."""
    if precision not in PRECISIONS:
        raise BackendUnavailableError(f"unknown precision {precision!r}; available: {', '.join(PRECISIONS)}")
    if name == AUTO:
        found = available_backends(device, through, precision, stopping)
        if not found:
            raise BackendUnavailableError(f"no backend can run on {device} at {precision}")
        return found[0]
    reason = unavailable_reason(name, device, through, precision, stopping)
    if reason is None:
        return name
    found = available_backends(device, through, precision, stopping)
    raise BackendUnavailableError(f"backend {name!r} cannot run here: {reason}; available: {', '.join(found)}")


def resolve_backend_for(
    config: AttackConfig, name: str, device: torch.device, through: nn.Module | None = None, precision: str = "fp32"
) -> tuple[str, AttackConfig]:
    """:func:`resolve_backend` for ``config``, and the configuration that backend runs: a backend named by the user
    that cannot stop photos early (a captured loop) runs a preset's own per-photo stopping as every step, logged,
    rather than being refused; a ``stop_after`` the user asked for (other than the preset's) is still refused.

    Example:
        >>> resolve_backend_for(preset_config("balanced", stop_after=3), "torch", torch.device("cpu"))[1].stop_after
        3
    """
    stopping = bool(config.stop_after)
    if (stopping and name != AUTO and not stopping_asked(config)
            and unavailable_reason(name, device, through, precision, stopping=True) is not None
            and unavailable_reason(name, device, through, precision) is None):
        logger.info("backend %s cannot stop photos early: the %s preset's stopping is off, every photo takes every "
                    "step", name, config.strength)
        return name, replace(config, stop_after=0)
    return resolve_backend(name, device, through, precision, stopping), config


class StepGraphCache:
    """Exports the attack-step graph for each attack-view size once and keeps it on disk.

    The file name is a hash of the classifier's and stand-in's weights and types, the size and the graph format,
    so a changed model never reuses a stale graph. Exports run on CPU copies of the modules. ``spec`` is the loss
    and the draws the graphs compute (``StepSpec.from_config(config)``; default ``ce``, no draws).
    """

    def __init__(
        self,
        classifier: nn.Module,
        through: nn.Module | None,
        cache_dir: str | os.PathLike | None = None,
        metadata: dict[str, str] | None = None,
        spec: StepSpec | None = None,
    ) -> None:
        self.classifier = classifier
        self.through = through
        self.spec = spec or StepSpec()
        self.cache_dir = Path(cache_dir) if cache_dir is not None else default_cache_dir()
        self.metadata = dict(metadata or {})
        self._lock = threading.Lock()

    def path_for(self, height: int, width: int) -> Path:
        key = model_fingerprint(
            self.classifier, self.through,
            extra={"height": height, "width": width, "opset": OPSET, "format": GRAPH_FORMAT_VERSION,
                   "loss": self.spec.loss, "eot": repr(self.spec.eot), **self.spec.rule_key()},
        )
        path = self.cache_dir / f"step-{key}.onnx"
        with self._lock:
            if not path.is_file():
                logger.info("exporting the attack step for %dx%d views to %s", height, width, path)
                classifier = copy.deepcopy(self.classifier).cpu().float().eval()
                through = copy.deepcopy(self.through).cpu().float().eval() if self.through is not None else None
                OnnxFromTorch(classifier, through, height, width, path, self.metadata, spec=self.spec)()
        return path


def create_runner(name: str, context: RunnerContext) -> AttackRunner:
    """A runner (not yet activated) of the registered backend ``name`` (resolved: not ``auto``), built from
    ``context``. An exported backend given no ``step_graph`` exports one through a :class:`StepGraphCache`."""
    info = get_backend(name)
    if info.exported and context.step_graph is None:
        graphs = StepGraphCache(context.classifier, context.through, context.cache_dir,
                                spec=StepSpec.from_config(context.config))
        context = replace(context, step_graph=graphs.path_for)
    return info.runner_class().from_context(context)


def exportable_reason(through: nn.Module | None) -> str | None:
    """Why the exported backends cannot run this stand-in here (not exportable, ONNX packages missing), or None."""
    if not is_exportable(through):
        return f"the stand-in {type(through).__name__} cannot be exported (exportable: none, comodel:...)"
    if not _onnx_export_installed():
        return "onnx, onnxscript and onnxruntime are not installed (pip install 'comcloak[onnx]')"
    return None
