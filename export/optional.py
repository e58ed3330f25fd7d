"""The export's optional dependencies (the ``onnx`` extra; TensorRT's ``trt``), imported only when used."""

from __future__ import annotations

import importlib
from typing import Any

from comcloak.errors import UserError


class OnnxDependencyError(UserError, ImportError):
    """The ONNX packages (the ``onnx`` extra) are not installed."""


def import_optional(module: str, extra: str = "onnx") -> Any:
    """Import an optional dependency, or fail with the install command that provides it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise OnnxDependencyError(
            f"{module} is not installed; install comcloak's '{extra}' extra: pip install 'comcloak[{extra}]'"
        ) from None
