"""The gradient gate of ReLU, ReLU6 and Hardtanh as one custom op that exports as ONNX ``HardSigmoid`` (DESIGN.md §4).

Their VJP passes the gradient only where the activation's output lies strictly inside ``(low, high)``. Written as
comparisons (``Greater``, ``Less``, ``And``, ``Cast``), that mask made ONNX Runtime's CPU provider reorder every
convolution's output out of its blocked (NCHWc) layout and the gradient back into it around each activation: about a
fifth of a robust step's kernel time. ``HardSigmoid`` (``max(0, min(1, alpha * x + beta))``) is an activation
ONNX Runtime runs in the blocked layout, and with a steep enough slope it *is* the mask, exactly:

* one side at a time: ``x > bound`` is ``HardSigmoid(x; alpha=S, beta=-S * bound)``, ``x < bound`` is
  ``HardSigmoid(x; alpha=-S, beta=S * bound)``, and a two-sided gate is the product of its two sides;
* ``S`` is a power of two, so ``S * x`` and ``S * bound`` are exact and ``alpha * x + beta`` is ``S * (x - bound)``
  rounded once, with or without a fused multiply-add: 0 or less on the blocked side, and at least 1 on the passing
  side as long as the smallest nonzero ``|x - bound|`` is at least ``1 / S``. For ``bound = 0`` that is the smallest
  normal float, ``S = 2**126`` (only subnormal outputs, below 1.2e-38, would get a fractional gate); any other bound
  ``b`` is exact with ``S = 2**100`` when ``2**-75 <= |b| < 2**27`` (``|x - b| >= |b| * 2**-25``); a bound outside
  that range keeps the comparisons. ``S * x`` may overflow to ``±inf``: the clamp still gives 1 or 0.

Eager torch (the reference, and ``InputGradient`` outside export) computes the same mask with comparisons. The
inclusive masks of ``clamp`` (``low <= x <= high``) keep the comparisons: an inclusive bound has no exact
``HardSigmoid`` form, and no classifier or ComModel here clamps on its gradient path at a size where it matters.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

GATE_OP = "comcloak::gradient_gate"
ZERO_BOUND_SLOPE = 2.0**126
BOUND_SLOPE = 2.0**100
EXACT_BOUNDS = (2.0**-75, 2.0**27)  # the |bound| range where BOUND_SLOPE is exact (module docstring)


def exact_bound(bound: float | None) -> bool:
    """Whether a HardSigmoid gate on ``bound`` equals the comparison for every normal float (None: no bound)."""
    return bound is None or bound == 0.0 or EXACT_BOUNDS[0] <= abs(bound) < EXACT_BOUNDS[1]


def interval_mask(x: torch.Tensor, low: float | None, high: float | None,
                  inclusive: bool = False) -> torch.Tensor:
    """Where ``low < x < high`` (``low <= x <= high`` when ``inclusive``; a None bound is open), as a bool tensor
    shaped as ``x``: the comparisons every clamp-like VJP masks with."""
    inside = torch.ones_like(x, dtype=torch.bool)
    if low is not None:
        inside = inside & ((x >= low) if inclusive else (x > low))
    if high is not None:
        inside = inside & ((x <= high) if inclusive else (x < high))
    return inside


def comparison_gate(x: torch.Tensor, low: float | None, high: float | None) -> torch.Tensor:
    """``1.0`` where ``low < x < high`` (a None bound is open), else ``0.0``, in ``x``'s dtype. Same shape as ``x``."""
    return interval_mask(x, low, high).to(x.dtype)


@torch.library.custom_op(GATE_OP, mutates_args=())
def _gradient_gate(x: torch.Tensor, low: float | None, high: float | None) -> torch.Tensor:
    return comparison_gate(x, low, high)


@_gradient_gate.register_fake
def _gradient_gate_shape(x: torch.Tensor, low: float | None, high: float | None) -> torch.Tensor:
    return torch.empty_like(x)


def gradient_gate(x: torch.Tensor, low: float | None, high: float | None) -> torch.Tensor:
    """The gate of a gradient through an activation whose output ``x`` passes it strictly inside ``(low, high)``.

    Args:
        x: the activation's output, any shape, floating point.
        low, high: the open interval's bounds; None leaves that side open.

    Returns:
        ``1.0`` inside, ``0.0`` outside, shaped and typed as ``x``; exported to ONNX as ``HardSigmoid`` nodes when both
        bounds are :func:`exact_bound`, as comparisons otherwise.

    Example:
        >>> gradient_gate(torch.tensor([-1.0, 0.0, 3.0, 6.0]), 0.0, 6.0)
        tensor([0., 0., 1., 0.])
    """
    if low is None and high is None:
        return torch.ones_like(x)
    if exact_bound(low) and exact_bound(high):
        return _gradient_gate(x, low, high)
    return comparison_gate(x, low, high)


def _slope(bound: float) -> float:
    return ZERO_BOUND_SLOPE if bound == 0.0 else BOUND_SLOPE


def onnx_translations(opset: int) -> dict[Any, Callable[..., Any]]:
    """``torch.onnx.export(..., custom_translation_table=...)`` entries for the gate (imports onnxscript)."""
    import onnxscript

    op = onnxscript.values.Opset("", opset)

    def gate_as_hardsigmoid(x: Any, low: float | None, high: float | None) -> Any:
        sides = []
        if low is not None:
            sides.append(op.HardSigmoid(x, alpha=_slope(low), beta=-_slope(low) * low))
        if high is not None:
            sides.append(op.HardSigmoid(x, alpha=-_slope(high), beta=_slope(high) * high))
        return sides[0] if len(sides) == 1 else op.Mul(sides[0], sides[1])

    return {torch.ops.comcloak.gradient_gate.default: gate_as_hardsigmoid}
