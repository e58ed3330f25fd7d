"""VJP rules over ``torch.fx`` graphs: the input gradient of a traced model as ordinary forward ops (docs/DESIGN.md §4).

Inference runtimes (ONNX Runtime, TensorRT) have no autograd. For every node kind a model's traced graph contains,
a rule here emits the forward ops that turn the gradient of the node's output into gradients of its inputs:
Conv2d -> conv_transpose2d with the same weights (a conv with the flipped kernel when the stride is 1),
ConvTranspose2d -> conv2d, eval BatchNorm -> a per-channel scale, ReLU/ReLU6/clamp -> a mask multiply (ReLU's
and ReLU6's as :func:`~comcloak.export.gates.gradient_gate`, which exports as HardSigmoid),
MaxPool -> per-tap "first maximum" masks scattered back by a one-hot ConvTranspose (no Scatter, no pooling
indices), cat -> slices, add -> pass-through, pooling/linear -> their transposes, padding -> slices (replicate
padding also folds the border back), and the transform-coding ComModel's quantiser ops (exp, pow, mul,
round/detach).

Rules are registered per module type (``call_module``), function (``call_function``) or tensor method name
(``call_method``) with :func:`register_vjp`; :func:`find_rule` fails at build time with the layer named when a node
has none. Each rule receives a :class:`NodeValues` (the node, its module, its evaluated arguments and output) and the
gradient of the node's output, and returns ``(input_node, gradient)`` pairs for the inputs that need one.
"""

from __future__ import annotations

import logging
import operator
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from comcloak.errors import UserError

from .gates import gradient_gate, interval_mask

logger = logging.getLogger(__name__)


class UnsupportedLayerError(UserError, ValueError):
    """A traced model contains a layer (module, function or method) or a layer setting with no VJP rule."""


@dataclass
class NodeValues:
    """What a rule sees of one forward node: its evaluated arguments, output and the inputs that need a gradient."""

    node: fx.Node
    module: nn.Module | None
    args: tuple[Any, ...]
    kwargs: dict[str, Any]
    output: Any
    needs_grad: set[fx.Node] = field(default_factory=set)
    constants: dict[str, torch.Tensor] = field(default_factory=dict)  # from the module's preparer, if any

    def wants(self, position: int) -> bool:
        """Whether positional argument ``position`` is a graph node on the input's gradient path."""
        if position >= len(self.node.args):
            return False
        arg = self.node.args[position]
        return isinstance(arg, fx.Node) and arg in self.needs_grad

    def arg(self, position: int, name: str, default: Any = None) -> Any:
        """Evaluated argument by position, else by keyword, else ``default``."""
        if position < len(self.args):
            return self.args[position]
        return self.kwargs.get(name, default)

    def describe(self) -> str:
        return describe_node(self.node, self.module)


VjpRule = Callable[[NodeValues, torch.Tensor], list[tuple[fx.Node, torch.Tensor]]]

_MODULE_RULES: dict[type, VjpRule] = {}
_FUNCTION_RULES: dict[Callable, VjpRule] = {}
_METHOD_RULES: dict[str, VjpRule] = {}
# Tensors a module's rule needs that derive from its frozen weights alone (a transposed kernel, ...). They are
# computed once, when the gradient graph is built, so that exports see constants (TensorRT needs Conv weights to
# be initializers) instead of ops on the weights.
_PREPARERS: dict[type, Callable[[nn.Module], dict[str, torch.Tensor]]] = {}


def register_preparer(module_type: type) -> Callable:
    """Register ``fn(module) -> {name: tensor}``, run once per layer at build time (decorator)."""

    def decorate(fn: Callable[[nn.Module], dict[str, torch.Tensor]]) -> Callable:
        _PREPARERS[module_type] = fn
        return fn

    return decorate


def prepare_constants(module: nn.Module | None) -> dict[str, torch.Tensor]:
    """The build-time constants of a layer's rule (empty for most layers)."""
    if module is None:
        return {}
    for cls in type(module).__mro__:
        if cls in _PREPARERS:
            return _PREPARERS[cls](module)
    return {}


def register_vjp(*targets: type | Callable | str) -> Callable[[VjpRule], VjpRule]:
    """Register a rule for module types, functions or tensor-method names (decorator)."""

    def decorate(rule: VjpRule) -> VjpRule:
        for target in targets:
            if isinstance(target, str):
                _METHOD_RULES[target] = rule
            elif isinstance(target, type) and issubclass(target, nn.Module):
                _MODULE_RULES[target] = rule
            else:
                _FUNCTION_RULES[target] = rule
        return rule

    return decorate


def describe_node(node: fx.Node, module: nn.Module | None = None) -> str:
    """A human-readable name for a node: ``layer1.0.conv1 (Conv2d)``, ``torch.cat``, ``method 'clamp'``."""
    if node.op == "call_module":
        return f"{node.target} ({type(module).__name__})"
    if node.op == "call_function":
        target = node.target
        module_name = getattr(target, "__module__", None) or ""
        return f"{module_name}.{getattr(target, '__name__', repr(target))}".lstrip(".")
    if node.op == "call_method":
        return f"method {node.target!r} (node {node.name})"
    return f"{node.op} {node.target}"


def supported_layers() -> list[str]:
    """Names of everything with a VJP rule, for error messages and docs."""
    names = [cls.__name__ for cls in _MODULE_RULES]
    names += [getattr(fn, "__name__", repr(fn)) for fn in _FUNCTION_RULES]
    names += [f".{name}()" for name in _METHOD_RULES]
    return sorted(set(names))


def find_rule(node: fx.Node, module: nn.Module | None) -> VjpRule:
    """The rule for ``node``; raises :class:`UnsupportedLayerError` naming the layer when there is none."""
    rule: VjpRule | None = None
    if node.op == "call_module":
        for cls in type(module).__mro__:
            if cls in _MODULE_RULES:
                rule = _MODULE_RULES[cls]
                break
    elif node.op == "call_function":
        rule = _FUNCTION_RULES.get(node.target)
    elif node.op == "call_method":
        rule = _METHOD_RULES.get(node.target)
    if rule is None:
        raise UnsupportedLayerError(
            f"no VJP rule for layer {describe_node(node, module)}; supported: {', '.join(supported_layers())}"
        )
    return rule


def _only(values: NodeValues, gradient: torch.Tensor) -> list[tuple[fx.Node, torch.Tensor]]:
    """The gradient for the first argument, when it needs one."""
    return [(values.node.args[0], gradient)] if values.wants(0) else []


def _pair(size: int | tuple[int, ...], what: str, values: NodeValues) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    if len(size) != 2:
        raise UnsupportedLayerError(f"{values.describe()}: {what} {size} is not 2-D")
    return int(size[0]), int(size[1])


def _unbroadcast(gradient: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Sum ``gradient`` over the dimensions along which ``like`` was broadcast to it."""
    if not isinstance(like, torch.Tensor) or gradient.shape == like.shape:
        return gradient
    extra = gradient.dim() - like.dim()
    if extra > 0:
        gradient = gradient.sum(dim=tuple(range(extra)))
    dims = tuple(i for i, size in enumerate(like.shape) if size == 1 and gradient.shape[i] != 1)
    return gradient.sum(dim=dims, keepdim=True) if dims else gradient


# ------------------------------------------------------------------------------------------------ linear layers


def _conv_output_padding(
    input_size: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int], padding: tuple[int, int],
    dilation: tuple[int, int],
) -> tuple[int, int]:
    """Rows/columns a strided conv dropped at the bottom/right: the transpose must give them back (as zeros)."""
    return tuple(  # type: ignore[return-value]
        (size + 2 * pad - dil * (k - 1) - 1) % s
        for size, k, s, pad, dil in zip(input_size, kernel, stride, padding, dilation)
    )


@register_preparer(nn.Conv2d)
def _conv2d_constants(conv: nn.Module) -> dict[str, torch.Tensor]:
    """A stride-1 conv's transpose is itself a conv with the kernel flipped and in/out channels swapped per group;
    runtimes run Conv (1x1 as a GEMM, depthwise in blocked layouts) much faster than ConvTranspose."""
    assert isinstance(conv, nn.Conv2d)
    if isinstance(conv.padding, str) or conv.stride not in (1, (1, 1)):
        return {}
    kernel, padding, dilation = (tuple(v) if not isinstance(v, int) else (v, v)
                                 for v in (conv.kernel_size, conv.padding, conv.dilation))
    if any(dil * (k - 1) - pad < 0 for k, pad, dil in zip(kernel, padding, dilation)):
        return {}
    groups = conv.groups
    out_channels, in_per_group = conv.weight.shape[0], conv.weight.shape[1]
    with torch.no_grad():
        weight = conv.weight.reshape(groups, out_channels // groups, in_per_group, *kernel).transpose(1, 2)
        weight = weight.reshape(groups * in_per_group, out_channels // groups, *kernel).flip(-2, -1)
    return {"flipped_weight": weight.contiguous()}


@register_vjp(nn.Conv2d)
def _conv2d(values: NodeValues, gradient: torch.Tensor) -> list[tuple[fx.Node, torch.Tensor]]:
    conv = values.module
    assert isinstance(conv, nn.Conv2d)
    if not values.wants(0):
        return []
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        raise UnsupportedLayerError(
            f"{values.describe()}: padding {conv.padding!r}/{conv.padding_mode!r} (only numeric zero padding)"
        )
    x = values.args[0]
    kernel, stride = _pair(conv.kernel_size, "kernel", values), _pair(conv.stride, "stride", values)
    padding, dilation = _pair(conv.padding, "padding", values), _pair(conv.dilation, "dilation", values)
    flipped = values.constants.get("flipped_weight")
    if flipped is not None:
        full = tuple(dil * (k - 1) - pad for k, pad, dil in zip(kernel, padding, dilation))
        grad_x = F.conv2d(gradient, flipped, None, 1, full, dilation, conv.groups)
        return [(values.node.args[0], grad_x)]
    output_padding = _conv_output_padding(tuple(x.shape[-2:]), kernel, stride, padding, dilation)
    grad_x = F.conv_transpose2d(gradient, conv.weight, None, stride, padding, output_padding, conv.groups, dilation)
    return [(values.node.args[0], grad_x)]


@register_vjp(nn.ConvTranspose2d)
def _conv_transpose2d(values: NodeValues, gradient: torch.Tensor) -> list[tuple[fx.Node, torch.Tensor]]:
    deconv = values.module
    assert isinstance(deconv, nn.ConvTranspose2d)
    if not values.wants(0):
        return []
    if deconv.padding_mode != "zeros" or len(values.args) > 1:
        raise UnsupportedLayerError(f"{values.describe()}: only zero padding and no explicit output_size")
    grad_x = F.conv2d(gradient, deconv.weight, None, deconv.stride, deconv.padding, deconv.dilation, deconv.groups)
    return [(values.node.args[0], grad_x)]


@register_vjp(nn.BatchNorm2d)
def _batch_norm(values: NodeValues, gradient: torch.Tensor) -> list[tuple[fx.Node, torch.Tensor]]:
    bn = values.module
    assert isinstance(bn, nn.BatchNorm2d)
    if bn.training or bn.running_var is None:
        raise UnsupportedLayerError(f"{values.describe()}: only eval-mode BatchNorm with running statistics")
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    return _only(values, gradient * scale.view(1, -1, 1, 1))


@register_vjp(nn.Linear)
def _linear(values: NodeValues, gradient: torch.Tensor) -> list[tuple[fx.Node, torch.Tensor]]:
    return _only(values, gradient @ values.module.weight)


@register_vjp(nn.Identity, nn.Dropout)
def _identity(values: NodeValues, gradient: torch.Tensor) -> list[tuple[fx.Node, torch.Tensor]]:
    if isinstance(values.module, nn.Dropout) and values.module.training:
        raise UnsupportedLayerError(f"{values.describe()}: Dropout in training mode")
    return _only(values, gradient)


@register_vjp(nn.Flatten, torch.flatten, "flatten", "view", "reshape")
def _reshape(values: NodeValues, gradient: torch.Tensor) -> list[tuple[fx.Node, torch.Tensor]]:
    return _only(values, gradient.reshape(values.args[0].shape))


# ---------------------------------------------------------------------------------------------- activations


@register_vjp(nn.ReLU, F.relu, torch.relu, "relu")
def _relu(values: NodeValues, gradient: torch.Tensor) -> list[tuple[fx.Node, torch.Tensor]]:
    # autograd's threshold_backward: zero where the output is <= 0
    return _only(values, gradient * gradient_gate(values.output, 0.0, None).to(gradient.dtype))


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
    return _only(values, gradient * gradient_gate(values.output, low, high).to(gradient.dtype))


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
    return _only(values, gradient * mask.to(gradient.dtype))


# ------------------------------------------------------------------------------------------------- pooling


@register_vjp(nn.MaxPool2d)
def _max_pool(values: NodeValues, gradient: torch.Tensor) -> list[tuple[fx.Node, torch.Tensor]]:
    """Gradient to the first maximum of each window, exactly as autograd routes it, without indices or Scatter.

    For each of the k x k taps, the strided view of the (-inf padded) input at that tap is compared with the pooled
    output; a tap wins where it equals the maximum and no earlier tap (row-major, autograd's scan order) already
    won. The winners' gradients, one channel group per tap, go back to input positions through one grouped
    ConvTranspose whose kernels are one-hot at their tap.
    """
    pool = values.module
    assert isinstance(pool, nn.MaxPool2d)
    if not values.wants(0):
        return []
    kernel, stride = _pair(pool.kernel_size, "kernel", values), _pair(pool.stride or pool.kernel_size, "stride", values)
    padding, dilation = _pair(pool.padding, "padding", values), _pair(pool.dilation, "dilation", values)
    if pool.ceil_mode or pool.return_indices or dilation != (1, 1):
        raise UnsupportedLayerError(f"{values.describe()}: ceil_mode, return_indices and dilation are not supported")
    x, pooled = values.args[0], values.output
    channels, height, width = x.shape[1], x.shape[2], x.shape[3]
    out_h, out_w = pooled.shape[2], pooled.shape[3]
    padded = F.pad(x, (padding[1], padding[1], padding[0], padding[0]), value=float("-inf"))
    claimed = torch.zeros_like(pooled, dtype=torch.bool)
    winners = []
    rows_span, cols_span = stride[0] * (out_h - 1) + 1, stride[1] * (out_w - 1) + 1
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            tap = padded[:, :, i : i + rows_span : stride[0], j : j + cols_span : stride[1]]
            wins = (tap == pooled) & ~claimed
            claimed = claimed | wins
            winners.append(gradient * wins.to(gradient.dtype))
    taps = kernel[0] * kernel[1]
    # (N, C, taps, h, w) -> (N, C * taps, h, w): channel c's taps are consecutive, matching groups=C below.
    stacked = torch.stack(winners, dim=2).flatten(1, 2)
    one_hot = torch.eye(taps, dtype=gradient.dtype, device=gradient.device).view(taps, 1, kernel[0], kernel[1])
    weight = one_hot.repeat(channels, 1, 1, 1)
    output_padding = _conv_output_padding((height, width), kernel, stride, padding, (1, 1))
    grad_x = F.conv_transpose2d(stacked, weight, None, stride, padding, output_padding, groups=channels)
    return [(values.node.args[0], grad_x)]


@register_vjp(nn.AvgPool2d)
def _avg_pool(values: NodeValues, gradient: torch.Tensor) -> list[tuple[fx.Node, torch.Tensor]]:
    pool = values.module
    assert isinstance(pool, nn.AvgPool2d)
    if not values.wants(0):
        return []
    kernel, stride = _pair(pool.kernel_size, "kernel", values), _pair(pool.stride or pool.kernel_size, "stride", values)
    padding = _pair(pool.padding, "padding", values)
    if pool.ceil_mode or pool.divisor_override is not None or (not pool.count_include_pad and padding != (0, 0)):
        raise UnsupportedLayerError(
            f"{values.describe()}: ceil_mode, divisor_override and count_include_pad=False with padding are not "
            "supported"
        )
    x = values.args[0]
    channels = x.shape[1]
    weight = torch.full((channels, 1, *kernel), 1.0 / (kernel[0] * kernel[1]), dtype=gradient.dtype,
                        device=gradient.device)
    output_padding = _conv_output_padding(tuple(x.shape[-2:]), kernel, stride, padding, (1, 1))
    grad_x = F.conv_transpose2d(gradient, weight, None, stride, padding, output_padding, groups=channels)
    return [(values.node.args[0], grad_x)]


@register_vjp(nn.AdaptiveAvgPool2d)
def _adaptive_avg_pool(values: NodeValues, gradient: torch.Tensor) -> list[tuple[fx.Node, torch.Tensor]]:
    pool = values.module
    assert isinstance(pool, nn.AdaptiveAvgPool2d)
    if _pair(pool.output_size, "output size", values) != (1, 1):
        raise UnsupportedLayerError(f"{values.describe()}: only global pooling (output size 1)")
    x = values.args[0]
    return _only(values, gradient.expand_as(x) / (x.shape[2] * x.shape[3]))


# ------------------------------------------------------------------------------------------------ padding


def _unpad_replicate(gradient: torch.Tensor, before: int, after: int, size: int, dim: int) -> torch.Tensor:
    """Fold a replicate-padded dimension's gradient back: border copies add to the edge row/column."""
    if before == 0 and after == 0:
        return gradient
    parts = []
    first = gradient.narrow(dim, 0, before + 1).sum(dim, keepdim=True)
    if size == 1:
        return first + gradient.narrow(dim, before + 1, after).sum(dim, keepdim=True)
    parts.append(first)
    if size > 2:
        parts.append(gradient.narrow(dim, before + 1, size - 2))
    parts.append(gradient.narrow(dim, before + size - 1, after + 1).sum(dim, keepdim=True))
    return torch.cat(parts, dim)


def _unpad(gradient: torch.Tensor, pads: tuple[int, ...], x: torch.Tensor, mode: str, values: NodeValues):
    if any(p < 0 for p in pads):
        raise UnsupportedLayerError(f"{values.describe()}: negative padding (cropping)")
    for k in range(len(pads) // 2):
        dim = x.dim() - 1 - k
        before, after = pads[2 * k], pads[2 * k + 1]
        if mode == "constant":
            gradient = gradient.narrow(dim, before, x.shape[dim])
        elif mode == "replicate":
            gradient = _unpad_replicate(gradient, before, after, x.shape[dim], dim)
        else:
            raise UnsupportedLayerError(f"{values.describe()}: padding mode {mode!r} (constant and replicate only)")
    return gradient


@register_vjp(nn.ZeroPad2d, nn.ConstantPad2d, nn.ReplicationPad2d)
def _pad_module(values: NodeValues, gradient: torch.Tensor) -> list[tuple[fx.Node, torch.Tensor]]:
    mode = "replicate" if isinstance(values.module, nn.ReplicationPad2d) else "constant"
    return _only(values, _unpad(gradient, tuple(values.module.padding), values.args[0], mode, values))


@register_vjp(F.pad)
def _pad_function(values: NodeValues, gradient: torch.Tensor) -> list[tuple[fx.Node, torch.Tensor]]:
    pads = tuple(values.arg(1, "pad"))
    mode = values.arg(2, "mode", "constant")
    return _only(values, _unpad(gradient, pads, values.args[0], mode, values))


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
    return _only(values, -gradient)


@register_vjp(torch.exp, "exp")
def _exp(values: NodeValues, gradient: torch.Tensor) -> list[tuple[fx.Node, torch.Tensor]]:
    return _only(values, gradient * values.output)


@register_vjp(operator.pow, torch.pow, "pow")
def _pow(values: NodeValues, gradient: torch.Tensor) -> list[tuple[fx.Node, torch.Tensor]]:
    exponent = values.args[1]
    if values.wants(1) or isinstance(exponent, torch.Tensor):
        raise UnsupportedLayerError(f"{values.describe()}: only a constant number as the exponent")
    if exponent == 0:
        return []
    x = values.args[0]
    derivative = exponent * x ** (exponent - 1) if exponent != 1 else torch.ones_like(x)
    return _only(values, gradient * derivative)


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
        return _only(values, gradient.expand_as(x) / x.numel() if gradient.dim() == 0 else
                     gradient.reshape([1] * x.dim()).expand_as(x) / x.numel())
    dims = [d % x.dim() for d in ((dims,) if isinstance(dims, int) else dims)]
    count = 1
    for d in dims:
        count *= x.shape[d]
    if not keepdim:
        for d in sorted(dims):
            gradient = gradient.unsqueeze(d)
    return _only(values, gradient.expand_as(x) / count)


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


def rules_for(graph: fx.GraphModule, nodes: set[fx.Node] | None = None) -> Iterator[tuple[fx.Node, VjpRule]]:
    """Each computing node of ``graph`` (of ``nodes`` when given) with its rule; raises UnsupportedLayerError at the
    first node without one."""
    modules = dict(graph.named_modules())
    for node in graph.graph.nodes:
        if nodes is not None and node not in nodes:
            continue
        if node.op in ("call_module", "call_function", "call_method"):
            yield node, find_rule(node, modules.get(node.target) if node.op == "call_module" else None)
