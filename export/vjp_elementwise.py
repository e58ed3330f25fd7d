"""VJP rules of activations (ReLU, ReLU6/Hardtanh, clamp), arithmetic (add, sub, mul, div, neg, exp, pow, the
quantiser's round/floor/ceil/detach, mean) and structure (cat, indexing): each turns the gradient of a node's output
into its inputs' as forward ops (docs/DESIGN.md §4). The registry is :mod:`comcloak.export.vjp`'s."""

from __future__ import annotations

import operator
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from .gates import gradient_gate, interval_mask
from .vjp import NodeValues, UnsupportedLayerError, only_input, register_vjp


def _unbroadcast(gradient: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Sum ``gradient`` over the dimensions along which ``like`` was broadcast to it."""
    if not isinstance(like, torch.Tensor) or gradient.shape == like.shape:
        return gradient
    extra = gradient.dim() - like.dim()
    if extra > 0:
        gradient = gradient.sum(dim=tuple(range(extra)))
    dims = tuple(i for i, size in enumerate(like.shape) if size == 1 and gradient.shape[i] != 1)
    return gradient.sum(dim=dims, keepdim=True) if dims else gradient


# ---------------------------------------------------------------------------------------------- activations


@register_vjp(nn.ReLU, F.relu, torch.relu, "relu")
def _relu(values: NodeValues, gradient: torch.Tensor) -> list[tuple[fx.Node, torch.Tensor]]:
    # autograd's threshold_backward: zero where the output is <= 0
    return only_input(values, gradient * gradient_gate(values.output, 0.0, None).to(gradient.dtype))


@register_vjp(nn.ReLU6, nn.Hardtanh, F.relu6, F.hardtanh)
def _hardtanh(values: NodeValues, gradient: torch.Tensor) -> list[tuple[fx.Node, torch.Tensor]]:
    # autograd's hardtanh_backward passes the gradient only strictly inside (min_val, max_val)
    module = values.module
    if isinstance(module, nn.Hardtanh):  # ReLU6 is a Hardtanh(0, 6)
        low, high = module.min_val, module.max_val
    elif values.node.target is F.relu6:
        low, high = 0.0, 6.0
    else:
        low, high = values.arg(1, "min_val", -1.0), values.arg(2, "max_val", 1.0)
    # Strictly inside (low, high) holds for the output exactly when it holds for the input; testing the output leaves
    # the convolution's pre-activation with one consumer, so ONNX Runtime can fuse the clamp into the convolution.
    return only_input(values, gradient * gradient_gate(values.output, low, high).to(gradient.dtype))


@register_vjp(torch.clamp, torch.clip, "clamp", "clip", "clamp_min", "clamp_max")
def _clamp(values: NodeValues, gradient: torch.Tensor) -> list[tuple[fx.Node, torch.Tensor]]:
    # autograd's clamp_backward passes the gradient where min <= x <= max (inclusive)
    target = values.node.target
    if target == "clamp_min":
        low, high = values.arg(1, "min"), None
    elif target == "clamp_max":
        low, high = None, values.arg(1, "max")
    else:
        low, high = values.arg(1, "min"), values.arg(2, "max")
    if isinstance(low, torch.Tensor) or isinstance(high, torch.Tensor):
        raise UnsupportedLayerError(f"{values.describe()}: clamp to tensor bounds")
    mask = interval_mask(values.args[0], low, high, inclusive=True)
    return only_input(values, gradient * mask.to(gradient.dtype))


# --------------------------------------------------------------------------------- arithmetic and structure


@register_vjp(operator.add, torch.add, "add")
def _add(values: NodeValues, gradient: torch.Tensor) -> list[tuple[fx.Node, torch.Tensor]]:
    if values.arg(2, "alpha", 1) != 1:
        raise UnsupportedLayerError(f"{values.describe()}: add with alpha")
    return [(values.node.args[i], _unbroadcast(gradient, values.args[i])) for i in (0, 1) if values.wants(i)]


@register_vjp(operator.sub, torch.sub, "sub")
def _sub(values: NodeValues, gradient: torch.Tensor) -> list[tuple[fx.Node, torch.Tensor]]:
    if values.arg(2, "alpha", 1) != 1:
        raise UnsupportedLayerError(f"{values.describe()}: sub with alpha")
    grads = []
    if values.wants(0):
        grads.append((values.node.args[0], _unbroadcast(gradient, values.args[0])))
    if values.wants(1):
        grads.append((values.node.args[1], _unbroadcast(-gradient, values.args[1])))
    return grads


@register_vjp(operator.mul, torch.mul, "mul")
def _mul(values: NodeValues, gradient: torch.Tensor) -> list[tuple[fx.Node, torch.Tensor]]:
    a, b = values.args[0], values.args[1]
    grads = []
    if values.wants(0):
        grads.append((values.node.args[0], _unbroadcast(gradient * b, a)))
    if values.wants(1):
        grads.append((values.node.args[1], _unbroadcast(gradient * a, b)))
    return grads


@register_vjp(operator.truediv, torch.div, "div")
def _div(values: NodeValues, gradient: torch.Tensor) -> list[tuple[fx.Node, torch.Tensor]]:
    if values.arg(2, "rounding_mode") is not None:
        raise UnsupportedLayerError(f"{values.describe()}: division with a rounding mode")
    a, b = values.args[0], values.args[1]
    grads = []
    if values.wants(0):
        grads.append((values.node.args[0], _unbroadcast(gradient / b, a)))
    if values.wants(1):
        grads.append((values.node.args[1], _unbroadcast(-gradient * values.output / b, b)))
    return grads


@register_vjp(operator.neg, torch.neg, "neg")
def _neg(values: NodeValues, gradient: torch.Tensor) -> list[tuple[fx.Node, torch.Tensor]]:
    return only_input(values, -gradient)


@register_vjp(torch.exp, "exp")
def _exp(values: NodeValues, gradient: torch.Tensor) -> list[tuple[fx.Node, torch.Tensor]]:
    return only_input(values, gradient * values.output)


@register_vjp(operator.pow, torch.pow, "pow")
def _pow(values: NodeValues, gradient: torch.Tensor) -> list[tuple[fx.Node, torch.Tensor]]:
    exponent = values.args[1]
    if values.wants(1) or isinstance(exponent, torch.Tensor):
        raise UnsupportedLayerError(f"{values.describe()}: only a constant number as the exponent")
    if exponent == 0:
        return []
    x = values.args[0]
    derivative = exponent * x ** (exponent - 1) if exponent != 1 else torch.ones_like(x)
    return only_input(values, gradient * derivative)


@register_vjp(torch.round, torch.floor, torch.ceil, "round", "floor", "ceil", "detach")
def _zero_gradient(values: NodeValues, gradient: torch.Tensor) -> list[tuple[fx.Node, torch.Tensor]]:
    # Piecewise-constant ops (and detach) pass no gradient, as in autograd; the ComModel quantiser's gradient
    # comes from its cubic term, not from round().
    return []


@register_vjp(torch.mean, "mean")
def _mean(values: NodeValues, gradient: torch.Tensor) -> list[tuple[fx.Node, torch.Tensor]]:
    x = values.args[0]
    dims = values.arg(1, "dim")
    keepdim = values.arg(2, "keepdim", False)
    if values.kwargs.get("dtype") is not None:
        raise UnsupportedLayerError(f"{values.describe()}: mean with a dtype")
    if dims is None:
        return only_input(values, gradient.expand_as(x) / x.numel() if gradient.dim() == 0 else
                     gradient.reshape([1] * x.dim()).expand_as(x) / x.numel())
    dims = [d % x.dim() for d in ((dims,) if isinstance(dims, int) else dims)]
    count = 1
    for d in dims:
        count *= x.shape[d]
    if not keepdim:
        for d in sorted(dims):
            gradient = gradient.unsqueeze(d)
    return only_input(values, gradient.expand_as(x) / count)


@register_vjp(torch.cat, torch.concat)
def _cat(values: NodeValues, gradient: torch.Tensor) -> list[tuple[fx.Node, torch.Tensor]]:
    tensors = values.arg(0, "tensors")
    dim = values.arg(1, "dim", 0)
    nodes = values.node.args[0] if values.node.args else values.node.kwargs["tensors"]
    grads, start = [], 0
    for node, tensor in zip(nodes, tensors):
        length = tensor.shape[dim]
        if isinstance(node, fx.Node) and node in values.needs_grad:
            grads.append((node, gradient.narrow(dim, start, length)))
        start += length
    return grads


def _slice_pads(index: Any, x: torch.Tensor, values: NodeValues) -> list[tuple[int, int]]:
    """(before, after) zero padding per dimension that undoes a basic indexing expression of step-1 slices."""
    items = index if isinstance(index, tuple) else (index,)
    if any(item is Ellipsis for item in items):
        position = next(i for i, item in enumerate(items) if item is Ellipsis)
        fill = x.dim() - (len(items) - 1)
        items = items[:position] + (slice(None),) * fill + items[position + 1 :]
    if len(items) > x.dim() or not all(isinstance(item, slice) for item in items):
        raise UnsupportedLayerError(f"{values.describe()}: only slices with step 1 (got {index!r})")
    pads = []
    for dim, item in enumerate(items):
        if item == slice(None):  # a full slice: no shape arithmetic, so a dynamic batch stays dynamic in exports
            pads.append((0, 0))
            continue
        start, stop, step = item.indices(x.shape[dim])
        if step != 1:
            raise UnsupportedLayerError(f"{values.describe()}: only slices with step 1 (got {index!r})")
        stop = max(stop, start)
        pads.append((start, x.shape[dim] - stop))
    pads += [(0, 0)] * (x.dim() - len(pads))
    return pads


@register_vjp(operator.getitem)
def _getitem(values: NodeValues, gradient: torch.Tensor) -> list[tuple[fx.Node, torch.Tensor]]:
    if not values.wants(0):
        return []
    x = values.args[0]
    pads = _slice_pads(values.args[1], x, values)
    flat: list[int] = []
    for before, after in reversed(pads):  # F.pad lists the last dimension first
        flat += [before, after]
    while flat and flat[-2:] == [0, 0]:
        flat = flat[:-2]
    return [(values.node.args[0], F.pad(gradient, flat) if flat else gradient)]


