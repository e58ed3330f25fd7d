"""VJP rules of layers with weights (Conv2d, ConvTranspose2d, BatchNorm1d/2d, PReLU, Linear), of pooling and
padding, and of the pass-through layers (Identity, Dropout, reshapes): each turns the gradient of a node's output
into its input's as forward ops (docs/DESIGN.md §4). The registry and the rule signature are
:mod:`comcloak.export.vjp`'s."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import fx, nn

from .gates import gradient_gate
from .vjp import NodeValues, UnsupportedLayerError, only_input, register_preparer, register_vjp


def _pair(size: int | tuple[int, ...], what: str, values: NodeValues) -> tuple[int, int]:
    if isinstance(size, int):
        return size, size
    if len(size) != 2:
        raise UnsupportedLayerError(f"{values.describe()}: {what} {size} is not 2-D")
    return int(size[0]), int(size[1])



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


@register_vjp(nn.BatchNorm2d, nn.BatchNorm1d)
def _batch_norm(values: NodeValues, gradient: torch.Tensor) -> list[tuple[fx.Node, torch.Tensor]]:
    """Eval-mode BatchNorm is a per-channel affine map: its VJP scales by ``weight / sqrt(var + eps)`` along the
    channel dimension (1), for (N, C, H, W) and (N, C) or (N, C, L) inputs alike."""
    bn = values.module
    assert isinstance(bn, (nn.BatchNorm2d, nn.BatchNorm1d))
    if bn.training or bn.running_var is None:
        raise UnsupportedLayerError(f"{values.describe()}: only eval-mode BatchNorm with running statistics")
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight
    shape = (1, -1) + (1,) * (gradient.dim() - 2)
    return only_input(values, gradient * scale.view(shape))


@register_vjp(nn.PReLU)
def _prelu(values: NodeValues, gradient: torch.Tensor) -> list[tuple[fx.Node, torch.Tensor]]:
    """``y = x`` where ``x > 0``, ``a·x`` elsewhere (``a`` per channel, dimension 1, or one shared): the gradient is
    ``g`` where ``x > 0`` and ``a·g`` elsewhere, as autograd's ``prelu`` backward (``x == 0`` takes ``a``). The mask
    is the ReLU's gate on ``x`` (:func:`~comcloak.export.gates.gradient_gate`, a HardSigmoid in ONNX), so the
    convolution before it stays in ONNX Runtime's blocked layout: ``g · (a + (1 − a) · gate)``."""
    prelu = values.module
    assert isinstance(prelu, nn.PReLU)
    x = values.args[0]
    slope = prelu.weight.to(gradient.dtype)
    if slope.numel() > 1:
        slope = slope.view((1, -1) + (1,) * (gradient.dim() - 2))
    gate = gradient_gate(x, 0.0, None).to(gradient.dtype)
    return only_input(values, gradient * (slope + (1.0 - slope) * gate))


@register_vjp(nn.Linear)
def _linear(values: NodeValues, gradient: torch.Tensor) -> list[tuple[fx.Node, torch.Tensor]]:
    return only_input(values, gradient @ values.module.weight)


@register_vjp(nn.Identity, nn.Dropout)
def _identity(values: NodeValues, gradient: torch.Tensor) -> list[tuple[fx.Node, torch.Tensor]]:
    if isinstance(values.module, nn.Dropout) and values.module.training:
        raise UnsupportedLayerError(f"{values.describe()}: Dropout in training mode")
    return only_input(values, gradient)


@register_vjp(nn.Flatten, torch.flatten, "flatten", "view", "reshape")
def _reshape(values: NodeValues, gradient: torch.Tensor) -> list[tuple[fx.Node, torch.Tensor]]:
    return only_input(values, gradient.reshape(values.args[0].shape))


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
    return only_input(values, gradient.expand_as(x) / (x.shape[2] * x.shape[3]))


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
    return only_input(values, _unpad(gradient, tuple(values.module.padding), values.args[0], mode, values))


@register_vjp(F.pad)
def _pad_function(values: NodeValues, gradient: torch.Tensor) -> list[tuple[fx.Node, torch.Tensor]]:
    pads = tuple(values.arg(1, "pad"))
    mode = values.arg(2, "mode", "constant")
    return only_input(values, _unpad(gradient, pads, values.args[0], mode, values))


