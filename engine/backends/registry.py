"""The backend registry (torch-free): what each backend is called, where it can run and which class runs it.

Every consumer reads this one table: :func:`comcloak.engine.backends.resolve_backend` and
:func:`~comcloak.engine.backends.available_backends`, the CLI's ``--backend``/``--precision`` choices (built without
importing torch), the ``Cloaker`` and ``comcloak bench``. A backend is one runner class (an
:class:`~comcloak.engine.backends.base.AttackRunner` that says why it cannot run here and how to build itself from a
:class:`~comcloak.engine.backends.base.RunnerContext`) plus one :func:`register_backend` line below, naming the
class by ``"module:Class"`` so that it is imported only when used (Polygraphy's lazy loading). Backends of other
installed packages join through the entry-point group ``comcloak.backends`` (:mod:`comcloak.plugins`), loaded before
the registry is first listed or looked up.

Example (a backend of your own, in any module)::

    register_backend(BackendInfo("mine", "my_package.runner:MyRunner", devices=("cpu",), precisions=("fp32",),
                                 summary="what it is"))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from comcloak import plugins
from comcloak.errors import UserError

AUTO = "auto"  # not a backend: the fastest registered backend that can run here
PRECISIONS = ("fp32", "bf16", "fp16")  # every precision any backend may offer; the torch backends map them to dtypes


class BackendUnavailableError(UserError, RuntimeError):
    """A backend was asked for but cannot run here (unknown name, package missing, no GPU, stand-in not
    exportable)."""


@dataclass(frozen=True)
class BackendInfo:
    """One registered backend.

    Attributes:
        name: what ``--backend`` and ``comcloak bench --backends`` call it.
        runner: ``"module:Class"`` of its :class:`~comcloak.engine.backends.base.AttackRunner`, imported lazily.
        devices: device types it runs on (``cpu``, ``cuda``).
        precisions: the ``--precision`` values it accepts (a subset of :data:`PRECISIONS`).
        summary: one phrase for ``--help``.
        exported: it runs the exported step graph, which is fixed to one attack-view size (one runner per size);
            otherwise one runner serves every size.
        auto_rank: its place in ``auto``'s order (lower is tried first); None: ``auto`` never picks it.
    """

    name: str
    runner: str
    devices: tuple[str, ...]
    precisions: tuple[str, ...]
    summary: str
    exported: bool = False
    auto_rank: int | None = None

    def runner_class(self) -> Any:
        """The runner class, imported on first use."""
        return plugins.import_reference(self.runner)


_REGISTRY: dict[str, BackendInfo] = {}


def register_backend(info: BackendInfo) -> BackendInfo:
    """Add ``info`` to the registry (a later registration of the same name replaces it)."""
    if info.name == AUTO:
        raise ValueError(f"{AUTO!r} is reserved for the automatic choice")
    unknown = set(info.precisions) - set(PRECISIONS)
    if unknown:
        raise ValueError(f"backend {info.name!r}: unknown precisions {sorted(unknown)}; known: {PRECISIONS}")
    _REGISTRY[info.name] = info
    return info


def _table() -> dict[str, BackendInfo]:
    """The registry, once the installed packages' backends (entry-point group ``comcloak.backends``) joined it.

    Every lister and lookup goes through here, so the installed CLI's ``--backend`` sees a plugin backend too. A
    plugin registering while it loads does not recurse: :func:`~comcloak.plugins.load_plugins` marks the group first.
    """
    plugins.load_plugins(plugins.BACKENDS)
    return _REGISTRY


def backend_names() -> tuple[str, ...]:
    """Registered backend names, in registration order (the built-in ones, then the plugins')."""
    return tuple(_table())


def registered() -> tuple[BackendInfo, ...]:
    """Every registered backend, in registration order."""
    return tuple(_table().values())


def backend_choices() -> tuple[str, ...]:
    """What ``--backend`` accepts: ``auto`` and every registered name."""
    return (AUTO, *_table())


def get_backend(name: str) -> BackendInfo:
    """The registered backend ``name``; raises :class:`BackendUnavailableError` naming the known ones."""
    try:
        return _table()[name]
    except KeyError:
        raise BackendUnavailableError(f"unknown backend {name!r}; available: {', '.join(backend_choices())}") from None


def describe_backends() -> str:
    """One line per backend for ``--help``."""
    return "; ".join(f"{info.name} ({info.summary})" for info in _table().values())


_HERE = "comcloak.engine.backends"
register_backend(BackendInfo("torch", f"{_HERE}.torch_runner:TorchRunner", ("cpu", "cuda"), PRECISIONS,
                             "eager autograd, the reference", auto_rank=100))
register_backend(BackendInfo("torch-cudagraph", f"{_HERE}.torch_runner:CudaGraphTorchRunner", ("cuda",), PRECISIONS,
                             "the whole loop captured in CUDA graphs, GPU only", auto_rank=20))
register_backend(BackendInfo("torch-per-image", f"{_HERE}.torch_runner:PerImageTorchRunner", ("cpu", "cuda"),
                             PRECISIONS, "eager, one image at a time as the authors' code: the naive baseline"))
register_backend(BackendInfo("onnxruntime", f"{_HERE}.onnxruntime_runner:OnnxRuntimeRunner", ("cpu", "cuda"),
                             ("fp32",), "the exported step graph; pip install 'comcloak[onnx]'", exported=True,
                             auto_rank=30))
register_backend(BackendInfo("tensorrt", f"{_HERE}.tensorrt_runner:TensorRTRunner", ("cuda",), ("fp32",),
                             "an engine built from the exported step graph, GPU only", exported=True, auto_rank=10))
